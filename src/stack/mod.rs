//! What should run: stack names, the compose model, and the fingerprints that say what changed.
//!
//! A *stack* is one directory under the services directory; its compose file is a *project*.
//! This module reads compose files and nothing else: it knows neither git nor the engine. The
//! caller hands in what git knows (a directory's tree id, a path's content id).

pub mod compose;
pub mod sops;
mod interpolate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A stack's name: a plain directory name, safe to join onto a path and to use in a URL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct StackName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a stack name: use letters, digits, '-', '_' and '.', not starting with '.'")]
pub struct NameError(String);

impl StackName {
    pub fn parse(name: &str) -> Result<StackName, NameError> {
        let plain = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if plain {
            Ok(StackName(name.to_owned()))
        } else {
            Err(NameError(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One service's config hash: what `com.docker.compose.config-hash` holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConfigHash(String);

/// A whole stack's fingerprint: equal fingerprints mean nothing about the stack changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl ConfigHash {
    /// Wraps a hash read back from a container's label or from state.
    pub fn new(hash: impl Into<String>) -> ConfigHash {
        ConfigHash(hash.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Fingerprint {
    /// Wraps a fingerprint read back from state.
    pub fn new(fingerprint: impl Into<String>) -> Fingerprint {
        Fingerprint(fingerprint.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 characters, for people.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

/// The hosts a stack's compose file names in `x-stackhook: {hosts: [...]}`; `None` when it
/// names none (or `dir` has no readable compose file: loading it says why).
pub fn hosts(dir: &Path) -> Option<Vec<String>> {
    let file = compose::FILE_NAMES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())?;
    let text = std::fs::read_to_string(file).ok()?;
    let document: yaml_serde::Value = yaml_serde::from_str(&text).ok()?;
    let hosts = document.get("x-stackhook")?.get("hosts")?;
    match hosts {
        yaml_serde::Value::String(host) => Some(vec![host.clone()]),
        yaml_serde::Value::Sequence(items) => Some(
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

/// The hash stored in `com.docker.compose.config-hash`: everything that shapes one service's
/// container. Two services with equal hashes need no recreate.
///
/// Bind-mounted files that git tracks count by their content id (`content_id`), so that editing a
/// mounted config file in the repository recreates the service that reads it; paths outside the
/// repository (data directories) count by path only, never by content. A SOPS-encrypted file
/// counts by what it holds (`content_id` gives its keyed digest), not by its ciphertext, which
/// changes whenever SOPS encrypts it again.
///
/// With `key` (the state directory's digest key, given for a project that holds SOPS-decrypted
/// values) the hash is an HMAC: what the decrypted values put into the model can then not be
/// tested against guesses by whoever sees the hash.
pub fn config_hash(
    project: &compose::Project,
    service_name: &str,
    content_id: &dyn Fn(&Path) -> Option<String>,
    key: Option<&[u8]>,
) -> ConfigHash {
    let Some(service) = project.services.get(service_name) else {
        return ConfigHash(String::new());
    };
    let mut hasher = Hasher::new(key);
    hash_json(&mut hasher, service);
    for network in service.networks.keys() {
        hash_json(&mut hasher, &project.networks.get(network));
    }
    for mount in &service.volumes {
        match (mount.kind, &mount.source) {
            (compose::MountKind::Volume, Some(key)) => {
                hash_json(&mut hasher, &project.volumes.get(key));
            }
            (compose::MountKind::Bind, Some(source)) => {
                hash_json(&mut hasher, &content_id(Path::new(source)));
            }
            _ => {}
        }
    }
    // A secret or config from a file is mounted like a bind mount; its content counts alike.
    for file in &service.files {
        if let compose::FileSource::File(path) = &file.source {
            hash_json(&mut hasher, &content_id(path));
        }
    }
    ConfigHash(hasher.finish())
}

/// The fingerprint of a whole stack: its committed files (the git tree id of its directory, or
/// `sealed_tree_id` for a stack with SOPS files), the variables its compose file read (which may
/// come from an untracked `.env`, the host's local env file or the process environment) and its
/// services' config hashes (which cover files it mounts from elsewhere in the repository). Equal
/// fingerprints mean nothing about the stack changed. `key` as for `config_hash`.
pub fn fingerprint(
    tree_id: &str,
    project: &compose::Project,
    config_hashes: &BTreeMap<String, ConfigHash>,
    key: Option<&[u8]>,
) -> Fingerprint {
    let mut hasher = Hasher::new(key);
    hash_json(
        &mut hasher,
        &(tree_id, &project.name, &project.variables, config_hashes),
    );
    Fingerprint(hasher.finish())
}

/// What stands for a stack directory's git tree id when SOPS files are in it: its files by path
/// and content id, each SOPS file by the keyed digest of what it holds (`sealed_digest`), so that
/// encrypting the same values again (new IVs, a new `lastmodified`) changes nothing.
pub fn sealed_tree_id<'a>(files: impl Iterator<Item = (&'a Path, String)>) -> String {
    let mut hasher = Sha256::new();
    for (path, id) in files {
        let entry = serde_json::to_vec(&(path, id)).expect("paths serialise");
        hasher.update((entry.len() as u64).to_le_bytes());
        hasher.update(entry);
    }
    hex::encode(hasher.finalize())
}

/// The keyed digest of a SOPS file's plaintext: HMAC-SHA256 under the state directory's digest
/// key, so that it changes with the content and reveals nothing of it.
pub fn sealed_digest(key: &[u8], plain: &sops::Plaintext) -> String {
    let mut hasher = Hasher::new(Some(key));
    hasher.update(plain.as_bytes());
    format!("sealed:{}", hasher.finish())
}

/// SHA-256, or HMAC-SHA256 under a key.
enum Hasher {
    Plain(Sha256),
    Keyed(hmac::Hmac<Sha256>),
}

impl Hasher {
    fn new(key: Option<&[u8]>) -> Hasher {
        use hmac::KeyInit;
        match key {
            None => Hasher::Plain(Sha256::new()),
            Some(key) => Hasher::Keyed(
                hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length"),
            ),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        use hmac::Mac;
        match self {
            Hasher::Plain(hasher) => Digest::update(hasher, bytes),
            Hasher::Keyed(mac) => mac.update(bytes),
        }
    }

    fn finish(self) -> String {
        use hmac::Mac;
        match self {
            Hasher::Plain(hasher) => hex::encode(hasher.finalize()),
            Hasher::Keyed(mac) => hex::encode(mac.finalize().into_bytes()),
        }
    }
}

fn hash_json(hasher: &mut Hasher, value: &impl Serialize) {
    // The model's maps are BTreeMaps, so its JSON is canonical.
    let json = serde_json::to_vec(value).expect("the compose model serialises");
    hasher.update(&(json.len() as u64).to_le_bytes());
    hasher.update(&json);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_names() {
        for good in ["web", "paperless-ngx", "db_1", "a.b"] {
            assert!(StackName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "../etc", "a b", "x%2F"] {
            assert!(StackName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            StackName::parse("../etc").unwrap_err().to_string(),
            r#""../etc" is not a stack name: use letters, digits, '-', '_' and '.', not starting with '.'"#
        );
    }
}
