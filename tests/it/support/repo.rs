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
        index.update_all(["*"], None).unwrap();
        index.write().unwrap();
        let tree = self
            .repository
            .find_tree(index.write_tree().unwrap())
            .unwrap();
        let signature = Signature::now("test", "test@example.com").unwrap();
        let parent = self
            .repository
            .head()
            .ok()
            .and_then(|head| head.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        self.repository
            .commit(
                Some("HEAD"),
                &signature,
                &signature,
                message,
                &tree,
                &parents,
            )
            .unwrap()
            .to_string()
    }
}
