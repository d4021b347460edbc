//! What the integration tests share: images, repositories, a running server.

pub mod image;
pub mod registry;
pub mod repo;
pub mod server;
pub mod sops;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The checkout, for the files the tests use from it (`deploy/`, `compose/`).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A tool by name, also looked up in the sbin directories that a non-root PATH often lacks.
pub fn tool(name: &str) -> Command {
    let sbin = ["/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file());
    Command::new(sbin.unwrap_or_else(|| PathBuf::from(name)))
}
