//! What a commit holds: the stack directories under the services directory and the content ids
//! of its paths, read from git's object database rather than the work tree.
//!
//! Content ids are git's own hashes, free to read: a stack directory's tree id changes exactly
//! when a committed file in it changes, whatever the container wrote into the work tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The paths of one commit and their object ids (blobs and trees alike).
#[derive(Debug, Clone, Default)]
pub struct Tree {
    entries: BTreeMap<PathBuf, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    id: String,
    is_tree: bool,
}

/// Reads the whole tree of `commit` in the repository at `dir`.
pub fn read(dir: &Path, commit: &str) -> anyhow::Result<Tree> {
    let repository =
        git2::Repository::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    let oid = git2::Oid::from_str(commit).with_context(|| format!("commit id {commit}"))?;
    let tree = repository
        .find_commit(oid)
        .and_then(|commit| commit.tree())
        .with_context(|| format!("reading the tree of commit {commit}"))?;
    let mut entries = BTreeMap::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
        if let Ok(name) = entry.name() {
            let value = Entry {
                id: entry.id().to_string(),
                is_tree: entry.kind() == Some(git2::ObjectType::Tree),
            };
            entries.insert(Path::new(parent).join(name), value);
        }
        git2::TreeWalkResult::Ok
    })
    .with_context(|| format!("walking the tree of commit {commit}"))?;
    Ok(Tree { entries })
}

impl Tree {
    /// The directories directly under `services_dir`, by name, with their tree ids. Files there,
    /// such as a README, are not stacks.
    pub fn stacks(&self, services_dir: &Path) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .filter(|(path, entry)| entry.is_tree && path.parent() == Some(services_dir))
            .filter_map(|(path, entry)| {
                let name = path.file_name()?.to_str()?;
                Some((name.to_owned(), entry.id.clone()))
            })
            .collect()
    }

    /// Whether the commit has a directory at `path`, relative to the repository root.
    pub fn has_dir(&self, path: &Path) -> bool {
        path.as_os_str().is_empty() || self.entries.get(path).is_some_and(|entry| entry.is_tree)
    }

    /// The files (not directories) under `dir`, relative to the repository root, with their
    /// content ids, in path order.
    pub fn files_under<'a>(&'a self, dir: &'a Path) -> impl Iterator<Item = (&'a Path, &'a str)> {
        self.entries
            .iter()
            .filter(move |(path, entry)| !entry.is_tree && path.starts_with(dir))
            .map(|(path, entry)| (path.as_path(), entry.id.as_str()))
    }

    /// The object id at a path relative to the repository root, if the commit has it.
    pub fn content_id(&self, relative: &Path) -> Option<&str> {
        self.entries.get(relative).map(|entry| entry.id.as_str())
    }
}
