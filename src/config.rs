//! Settings: a TOML file and `STACKHOOK_*` environment variables, validated into one `Config`.
//!
//! The only module that reads environment variables. Everything downstream takes typed values
//! (`Secret`, `Duration`, `PathBuf`) and never re-checks them.

use std::fmt;

/// A value that must never reach logs, the status page or the API. `Debug` and `Display` print
/// `[redacted]`; the value itself is reached only through `expose`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
