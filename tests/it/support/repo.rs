//! A throwaway environment repository: write files, commit, and let stackhook clone it by path.

use std::path::{Path, PathBuf};

use git2::{Repository, Signature};

pub struct EnvRepo {
    dir: tempfile::TempDir,
    repository: Repository,
}

impl EnvRepo {
    /// An empty repository whose branch is `main`.
    pub fn new() -> EnvRepo {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut options = git2::RepositoryInitOptions::new();
        options.initial_head("main");
        let repository = Repository::init_opts(dir.path(), &options).expect("git init");
        EnvRepo { dir, repository }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Writes a file, creating its directories.
    pub fn write(&self, relative: &str, contents: &str) -> &Self {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
        self
    }

    pub fn remove(&self, relative: &str) -> &Self {
        let path: PathBuf = self.dir.path().join(relative);
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
        self
    }

    /// Commits everything in the work tree on the current branch; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        let mut index = self.repository.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index
            .update_all(["*"], None)
            .unwrap();
        index.write().unwrap();
        let tree = self.repository.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = Signature::now("test", "test@example.com").unwrap();
        let parent = self
            .repository
            .head()
            .ok()
            .and_then(|head| head.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        self.repository
            .commit(Some("HEAD"), &signature, &signature, message, &tree, &parents)
            .unwrap()
            .to_string()
    }

    /// Commits on another branch, leaving `main` where it is.
    pub fn commit_on_branch(&self, branch: &str, relative: &str, contents: &str) -> String {
        let head = self.repository.head().unwrap().peel_to_commit().unwrap();
        let mut index = git2::Index::new().unwrap();
        let head_tree = head.tree().unwrap();
        index.read_tree(&head_tree).unwrap();
        let blob = self.repository.blob(contents.as_bytes()).unwrap();
        let entry = git2::IndexEntry {
            ctime: git2::IndexTime::new(0, 0),
            mtime: git2::IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            file_size: contents.len() as u32,
            id: blob,
            flags: relative.len() as u16,
            flags_extended: 0,
            path: relative.as_bytes().to_vec(),
        };
        index.add(&entry).unwrap();
        let tree_id = index.write_tree_to(&self.repository).unwrap();
        let tree = self.repository.find_tree(tree_id).unwrap();
        let signature = Signature::now("test", "test@example.com").unwrap();
        let reference = format!("refs/heads/{branch}");
        self.repository
            .commit(Some(&reference), &signature, &signature, "other branch", &tree, &[&head])
            .unwrap()
            .to_string()
    }
}
