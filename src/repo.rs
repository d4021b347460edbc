//! Git sync of the environment repository.

pub mod tree;

use std::path::{Path, PathBuf};

use crate::config::Secret;

pub struct Source {
    pub url: String,
    pub branch: Option<String>,
    pub token: Option<Secret>,
    pub ssh_key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub check_host_keys: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommitId(String);

impl std::fmt::Display for CommitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Checkout {
    pub commit: CommitId,
    pub branch: String,
    pub dir: PathBuf,
    pub summary: String,
}

pub fn sync(_source: &Source, _dir: &Path) -> anyhow::Result<Checkout> {
    unimplemented!()
}
