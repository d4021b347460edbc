//! SOPS files encrypted to age keys, opened in memory: a `.env`, an `env_file`, or the file of a
//! secret or config, in SOPS's dotenv, INI, JSON, YAML or binary form.
//!
//! Pure: it is given a file's text and the age keys, and gives back the file as `sops decrypt`
//! prints it, or says why it cannot. It never writes a decrypted value anywhere, and its errors
//! name paths and recipients, never values. It follows SOPS 3's Go source (getsops/sops:
//! `sops.go`'s tree walk and MAC, `aes/cipher.go`, `stores/*`); only age keys are supported, not
//! PGP, the cloud KMSs or Shamir key groups, and not the `*_comment_regex` settings.

use std::fmt;
use std::io::Read;
use std::sync::Arc;

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine as _;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The age identities stackhook may open SOPS files with. `Debug` prints `[redacted]`.
#[derive(Clone, Default)]
pub struct Keys(Arc<Vec<age::x25519::Identity>>);

impl Keys {
    /// Parses an age key file: one `AGE-SECRET-KEY-1…` a line, `#` comments and blank lines
    /// skipped, as `age-keygen` writes it and SOPS reads `SOPS_AGE_KEY`. The error names the
    /// line, never its text.
    pub fn parse(text: &str) -> Result<Keys, String> {
        let mut identities = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let identity = line.parse::<age::x25519::Identity>().map_err(|_| {
                format!(
                    "line {}: not an age secret key (AGE-SECRET-KEY-1…); plugin and SSH keys are not supported",
                    number + 1
                )
            })?;
            identities.push(identity);
        }
        if identities.is_empty() {
            return Err("holds no age secret key".to_owned());
        }
        Ok(Keys(Arc::new(identities)))
    }

    /// These keys and `other`'s, each tried in turn.
    pub fn join(&self, other: &Keys) -> Keys {
        let mut identities = (*self.0).clone();
        identities.extend(other.0.iter().cloned());
        Keys(Arc::new(identities))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl PartialEq for Keys {
    /// Keys are compared by their public halves.
    fn eq(&self, other: &Keys) -> bool {
        let public = |keys: &Keys| -> Vec<String> {
            keys.0
                .iter()
                .map(|key| key.to_public().to_string())
                .collect()
        };
        public(self) == public(other)
    }
}

/// A decrypted file's bytes, wiped from memory when dropped. `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Plaintext(Zeroizing<Vec<u8>>);

impl Plaintext {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a SOPS file could not be opened. No variant carries a value of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "it is encrypted with SOPS, and no age key is configured: set STACKHOOK_AGE_KEY_FILE, SOPS_AGE_KEY_FILE or SOPS_AGE_KEY"
    )]
    NoKey,
    #[error("no configured age key opens it (it is encrypted to {recipients})")]
    NoMatchingKey { recipients: String },
    #[error("its SOPS MAC does not verify: the file was changed after SOPS encrypted it")]
    Mac,
    #[error(
        "its SOPS MAC does not verify: the value of {path} was changed after SOPS encrypted it"
    )]
    Value { path: String },
    #[error("SOPS file not supported: {0}")]
    Unsupported(String),
    #[error("malformed SOPS file: {0}")]
    Malformed(String),
}

/// Opens the SOPS file `text`, named `name` (its extension decides, as for `sops decrypt`,
/// whether a JSON envelope holds a binary file): `None` if it is no SOPS file at all, else the
/// file as `sops decrypt` prints it, in the same form.
pub fn open(name: &str, text: &str, keys: &Keys) -> Result<Option<Plaintext>, Error> {
    // Every SOPS file holds its encrypted MAC; a file without one is read as it is.
    if !text.contains("ENC[AES256_GCM,") || !text.contains("sops") {
        return Ok(None);
    }
    let Some((form, mut tree, metadata)) = load(name, text) else {
        return Ok(None);
    };
    if keys.is_empty() {
        return Err(Error::NoKey);
    }
    let data_key = data_key(&metadata, keys)?;
    let rules = Rules::new(&metadata)?;
    let mut mac = Sha512::new();
    if metadata.mac_only_encrypted {
        // sops.go's MACOnlyEncryptedInitialization.
        mac.update(MAC_ONLY_ENCRYPTED_INITIALIZATION);
    }
    let mut path = Vec::new();
    for branch in &mut tree {
        decrypt_node(branch, &mut path, &rules, &data_key, &mut mac)?;
    }
    let computed = hex::encode_upper(mac.finalize());
    let stored =
        decrypt_value(&metadata.mac, &data_key, &metadata.lastmodified).map_err(|_| Error::Mac)?;
    if !bool::from(stored.bytes.as_slice().ct_eq(computed.as_bytes())) {
        return Err(Error::Mac);
    }
    emit(form, &tree).map(|bytes| Some(Plaintext(Zeroizing::new(bytes))))
}

/// The forms SOPS stores files in (`stores/*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Dotenv,
    Ini,
    Json,
    Yaml,
    /// Any other file: a JSON envelope whose `data` holds the file.
    Binary,
}

/// One value of a SOPS tree, in file order.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

/// What the `sops` section says, as far as opening the file needs it.
#[derive(Debug, Default)]
struct Metadata {
    /// `(recipient, enc)`: the data key encrypted to each recipient, as an armored age file.
    age: Vec<(String, String)>,
    lastmodified: String,
    mac: String,
    unencrypted_suffix: Option<String>,
    encrypted_suffix: Option<String>,
    unencrypted_regex: Option<String>,
    encrypted_regex: Option<String>,
    comment_regex: bool,
    mac_only_encrypted: bool,
    key_groups: bool,
}

const MAC_ONLY_ENCRYPTED_INITIALIZATION: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// Parses `text` in the form its content shows, and takes its SOPS metadata out; `None` when it
/// has none. The branches are the file's documents (several only in YAML).
fn load(name: &str, text: &str) -> Option<(Form, Vec<Node>, Metadata)> {
    let trimmed = text.trim_start();
    let lines = || text.lines().map(str::trim);
    if trimmed.starts_with('{') {
        let mut root: Node = serde_json::from_str(text).ok()?;
        let metadata = take_metadata(&mut root)?;
        let binary = !name.ends_with(".json")
            && matches!(&root, Node::Map(entries) if entries.len() == 1 && entries[0].0 == "data");
        let form = if binary { Form::Binary } else { Form::Json };
        Some((form, vec![root], metadata))
    } else if lines().any(|line| line == "[sops]") {
        let mut root = parse_ini(text)?;
        let Node::Map(sections) = &mut root else {
            return None;
        };
        let at = sections.iter().position(|(name, _)| name == "sops")?;
        let (_, Node::Map(flat)) = sections.remove(at) else {
            return None;
        };
        // The INI store escapes newlines in metadata (`MetadataOpts.EscapeNewlines`).
        let flat = flat
            .into_iter()
            .map(|(key, value)| match value {
                Node::Str(text) => (key, Node::Str(text.replace("\\n", "\n"))),
                other => (key, other),
            })
            .collect();
        let metadata = metadata(&unflatten(flat)?)?;
        Some((Form::Ini, vec![root], metadata))
    } else if lines().any(|line| line.starts_with("sops_mac=")) {
        let mut entries = Vec::new();
        let mut flat = Vec::new();
        // `stores/dotenv`: every non-empty line but a `#` comment is KEY=VALUE, `\n` escaped.
        for line in text.split('\n') {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once('=')?;
            let value = Node::Str(value.replace("\\n", "\n"));
            match key.strip_prefix("sops_") {
                Some(key) => flat.push((key.to_owned(), value)),
                None => entries.push((key.to_owned(), value)),
            }
        }
        let metadata = metadata(&unflatten(flat)?)?;
        Some((Form::Dotenv, vec![Node::Map(entries)], metadata))
    } else {
        let mut documents = Vec::new();
        for document in yaml_serde::Deserializer::from_str(text) {
            documents.push(Node::deserialize(document).ok()?);
        }
        // The metadata is the first document's; SOPS drops the key from the others.
        let metadata = take_metadata(documents.first_mut()?)?;
        for document in documents.iter_mut().skip(1) {
            take_metadata(document);
        }
        Some((Form::Yaml, documents, metadata))
    }
}

/// Removes the top-level `sops` mapping of a JSON or YAML document and reads it.
fn take_metadata(root: &mut Node) -> Option<Metadata> {
    let Node::Map(entries) = root else {
        return None;
    };
    let at = entries.iter().position(|(key, _)| key == "sops")?;
    let (_, sops) = entries.remove(at);
    metadata(&sops)
}

/// Reads the metadata a SOPS file needs to be opened; `None` unless it has a MAC, a
/// `lastmodified` and a version, as every file SOPS writes has.
fn metadata(sops: &Node) -> Option<Metadata> {
    let Node::Map(entries) = sops else {
        return None;
    };
    let get = |key: &str| entries.iter().find(|(name, _)| name == key).map(|(_, v)| v);
    let text = |key: &str| match get(key) {
        Some(Node::Str(text)) if !text.is_empty() => Some(text.clone()),
        _ => None,
    };
    get("version")?;
    let mut metadata = Metadata {
        lastmodified: text("lastmodified")?,
        mac: text("mac")?,
        unencrypted_suffix: text("unencrypted_suffix"),
        encrypted_suffix: text("encrypted_suffix"),
        unencrypted_regex: text("unencrypted_regex"),
        encrypted_regex: text("encrypted_regex"),
        comment_regex: text("unencrypted_comment_regex").is_some()
            || text("encrypted_comment_regex").is_some(),
        mac_only_encrypted: matches!(get("mac_only_encrypted"), Some(Node::Bool(true)))
            || matches!(get("mac_only_encrypted"), Some(Node::Str(text)) if text == "true"),
        key_groups: get("key_groups").is_some(),
        ..Metadata::default()
    };
    if let Some(Node::Seq(keys)) = get("age") {
        for key in keys {
            let Node::Map(fields) = key else { continue };
            let field = |name: &str| {
                fields.iter().find_map(|(key, value)| match value {
                    Node::Str(text) if key == name => Some(text.clone()),
                    _ => None,
                })
            };
            if let Some(enc) = field("enc") {
                metadata
                    .age
                    .push((field("recipient").unwrap_or_default(), enc));
            }
        }
    }
    Some(metadata)
}

/// Turns the flattened metadata of the dotenv and INI stores back into a tree
/// (`stores/flatten.go`): `age__list_0__map_enc` is `age[0].enc`.
fn unflatten(flat: Vec<(String, Node)>) -> Option<Node> {
    let mut root = Node::Map(Vec::new());
    for (key, value) in flat {
        let mut node = &mut root;
        for token in tokens(&key) {
            node = match token {
                Token::Key(name) => {
                    if !matches!(node, Node::Map(_)) {
                        *node = Node::Map(Vec::new());
                    }
                    let Node::Map(entries) = node else {
                        return None;
                    };
                    let at = match entries.iter().position(|(key, _)| *key == name) {
                        Some(at) => at,
                        None => {
                            entries.push((name, Node::Null));
                            entries.len() - 1
                        }
                    };
                    &mut entries[at].1
                }
                Token::Index(index) => {
                    if !matches!(node, Node::Seq(_)) {
                        *node = Node::Seq(Vec::new());
                    }
                    let Node::Seq(items) = node else {
                        return None;
                    };
                    if items.len() <= index {
                        items.resize(index + 1, Node::Null);
                    }
                    &mut items[index]
                }
            };
        }
        *node = value;
    }
    Some(root)
}

enum Token {
    Key(String),
    Index(usize),
}

/// Splits a flattened key at `__map_` and `__list_` (`flatten.go`'s `tokenize`).
fn tokens(path: &str) -> Vec<Token> {
    const MAP: &str = "__map_";
    const LIST: &str = "__list_";
    let mut tokens = Vec::new();
    let mut rest = path;
    let mut kind_is_list = false;
    loop {
        let next = [rest.find(MAP), rest.find(LIST)]
            .into_iter()
            .flatten()
            .min();
        let (part, after) = match next {
            Some(at) => (&rest[..at], Some(&rest[at..])),
            None => (rest, None),
        };
        tokens.push(if kind_is_list {
            Token::Index(part.parse().unwrap_or(0))
        } else {
            Token::Key(part.to_owned())
        });
        let Some(after) = after else { break };
        if let Some(stripped) = after.strip_prefix(MAP) {
            kind_is_list = false;
            rest = stripped;
        } else if let Some(stripped) = after.strip_prefix(LIST) {
            kind_is_list = true;
            rest = stripped;
        }
    }
    tokens
}

/// Parses INI as the go-ini package SOPS uses reads it, far enough for the files SOPS writes:
/// sections of `key = value` lines (or `key: value`), `;` and `#` comments, quoted values. Keys
/// before the first section belong to `DEFAULT`.
fn parse_ini(text: &str) -> Option<Node> {
    let mut sections: Vec<(String, Node)> = Vec::new();
    let mut current = "DEFAULT".to_owned();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            current = name.strip_suffix(']')?.trim().to_owned();
            if !sections.iter().any(|(name, _)| *name == current) {
                sections.push((current.clone(), Node::Map(Vec::new())));
            }
            continue;
        }
        let at = line.find(['=', ':'])?;
        let key = line[..at].trim().to_owned();
        let mut value = line[at + 1..].trim();
        let quoted = ['"', '`']
            .into_iter()
            .find(|quote| value.len() >= 2 && value.starts_with(*quote) && value.ends_with(*quote));
        let value = match quoted {
            Some(_) => value[1..value.len() - 1].to_owned(),
            None => {
                // An inline comment starts at ` ;` or ` #`.
                if let Some(at) = value.find(" ;").into_iter().chain(value.find(" #")).min() {
                    value = value[..at].trim_end();
                }
                value.to_owned()
            }
        };
        if !sections.iter().any(|(name, _)| *name == current) {
            sections.push((current.clone(), Node::Map(Vec::new())));
        }
        let section = sections.iter_mut().find(|(name, _)| *name == current)?;
        let Node::Map(entries) = &mut section.1 else {
            return None;
        };
        entries.push((key, Node::Str(value)));
    }
    Some(Node::Map(sections))
}

/// Decrypts the data key with the first recipient entry that one of `keys` opens.
fn data_key(metadata: &Metadata, keys: &Keys) -> Result<Zeroizing<Vec<u8>>, Error> {
    if metadata.key_groups {
        return Err(Error::Unsupported(
            "key groups (Shamir secret sharing) are not supported".to_owned(),
        ));
    }
    if metadata.age.is_empty() {
        return Err(Error::Unsupported(
            "it has no age recipient (only age keys are supported, not PGP or a KMS)".to_owned(),
        ));
    }
    for (_, enc) in &metadata.age {
        let reader = age::armor::ArmoredReader::new(enc.as_bytes());
        let decryptor = age::Decryptor::new(reader)
            .map_err(|error| Error::Malformed(format!("its age data key: {error}")))?;
        let identities = keys.0.iter().map(|key| key as &dyn age::Identity);
        match decryptor.decrypt(identities) {
            Ok(mut reader) => {
                let mut key = Zeroizing::new(Vec::new());
                reader
                    .read_to_end(&mut key)
                    .map_err(|error| Error::Malformed(format!("its age data key: {error}")))?;
                if key.len() != 32 {
                    return Err(Error::Malformed("its data key is not 32 bytes".to_owned()));
                }
                return Ok(key);
            }
            Err(age::DecryptError::NoMatchingKeys) => {}
            Err(error) => {
                return Err(Error::Malformed(format!("its age data key: {error}")));
            }
        }
    }
    let recipients: Vec<&str> = metadata.age.iter().map(|(r, _)| r.as_str()).collect();
    Err(Error::NoMatchingKey {
        recipients: recipients.join(", "),
    })
}

/// Which values SOPS encrypted: `Tree.shouldBeEncrypted`, without the comment rules.
struct Rules {
    unencrypted_suffix: Option<String>,
    encrypted_suffix: Option<String>,
    unencrypted_regex: Option<regex::Regex>,
    encrypted_regex: Option<regex::Regex>,
    mac_only_encrypted: bool,
}

impl Rules {
    fn new(metadata: &Metadata) -> Result<Rules, Error> {
        if metadata.comment_regex {
            return Err(Error::Unsupported(
                "unencrypted_comment_regex and encrypted_comment_regex are not supported"
                    .to_owned(),
            ));
        }
        let regex = |pattern: &Option<String>| {
            pattern
                .as_deref()
                .map(regex::Regex::new)
                .transpose()
                .map_err(|error| Error::Malformed(format!("its regular expression: {error}")))
        };
        Ok(Rules {
            unencrypted_suffix: metadata.unencrypted_suffix.clone(),
            encrypted_suffix: metadata.encrypted_suffix.clone(),
            unencrypted_regex: regex(&metadata.unencrypted_regex)?,
            encrypted_regex: regex(&metadata.encrypted_regex)?,
            mac_only_encrypted: metadata.mac_only_encrypted,
        })
    }

    /// Each rule, in SOPS's order, overrides the ones before it.
    fn encrypted(&self, path: &[String]) -> bool {
        let mut encrypted = true;
        if let Some(suffix) = &self.unencrypted_suffix
            && path.iter().any(|key| key.ends_with(suffix.as_str()))
        {
            encrypted = false;
        }
        if let Some(suffix) = &self.encrypted_suffix {
            encrypted = path.iter().any(|key| key.ends_with(suffix.as_str()));
        }
        if let Some(regex) = &self.unencrypted_regex
            && path.iter().any(|key| regex.is_match(key))
        {
            encrypted = false;
        }
        if let Some(regex) = &self.encrypted_regex {
            encrypted = path.iter().any(|key| regex.is_match(key));
        }
        encrypted
    }
}

/// Decrypts a tree in place, feeding the MAC as `Tree.Decrypt` does: each leaf's plaintext in
/// file order (only the encrypted ones with `mac_only_encrypted`); nulls are skipped. A list
/// adds nothing to the path, so its items share their key's additional data.
fn decrypt_node(
    node: &mut Node,
    path: &mut Vec<String>,
    rules: &Rules,
    key: &[u8],
    mac: &mut Sha512,
) -> Result<(), Error> {
    match node {
        Node::Null => Ok(()),
        Node::Map(entries) => {
            for (name, child) in entries {
                path.push(name.clone());
                let result = decrypt_node(child, path, rules, key, mac);
                path.pop();
                result?;
            }
            Ok(())
        }
        Node::Seq(items) => items
            .iter_mut()
            .try_for_each(|item| decrypt_node(item, path, rules, key, mac)),
        leaf => {
            let encrypted = rules.encrypted(path);
            if encrypted {
                let Node::Str(text) = leaf else {
                    return Err(Error::Malformed(format!(
                        "the value of {} should be encrypted but is not a string",
                        path.join(":")
                    )));
                };
                let additional = format!("{}:", path.join(":"));
                let value = decrypt_value(text, key, &additional).map_err(|error| match error {
                    ValueError::Format => Error::Malformed(format!(
                        "the value of {} is not in SOPS's ENC[AES256_GCM,…] form",
                        path.join(":")
                    )),
                    ValueError::Open => Error::Value {
                        path: path.join(":"),
                    },
                })?;
                *leaf = value.node(path)?;
            }
            if !rules.mac_only_encrypted || encrypted {
                mac.update(leaf_bytes(leaf).as_bytes());
            }
            Ok(())
        }
    }
}

/// A leaf as `sops.ToBytes` writes it for the MAC.
fn leaf_bytes(leaf: &Node) -> Zeroizing<String> {
    Zeroizing::new(match leaf {
        Node::Str(text) => text.clone(),
        Node::Int(number) => number.to_string(),
        // Go's FormatFloat(f, 'f', -1, 64): the shortest exact decimal, never an exponent, as
        // Rust's Display writes it.
        Node::Float(number) => number.to_string(),
        Node::Bool(true) => "True".to_owned(),
        Node::Bool(false) => "False".to_owned(),
        Node::Null | Node::Seq(_) | Node::Map(_) => String::new(),
    })
}

enum ValueError {
    Format,
    Open,
}

/// A decrypted value with the type SOPS recorded.
struct Decrypted {
    bytes: Zeroizing<Vec<u8>>,
    kind: String,
}

impl Decrypted {
    /// The value as its type (`aes/cipher.go`'s `Decrypt`).
    fn node(self, path: &[String]) -> Result<Node, Error> {
        let bad = || {
            Error::Malformed(format!(
                "the value of {} is not a {}",
                path.join(":"),
                self.kind
            ))
        };
        let text = std::str::from_utf8(&self.bytes).map_err(|_| bad())?;
        Ok(match self.kind.as_str() {
            "str" | "bytes" | "time" | "comment" => Node::Str(text.to_owned()),
            "int" => Node::Int(text.parse().map_err(|_| bad())?),
            "float" => Node::Float(text.parse().map_err(|_| bad())?),
            "bool" => Node::Bool(match text {
                "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
                "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
                _ => return Err(bad()),
            }),
            other => return Err(Error::Unsupported(format!("value type {other:?}"))),
        })
    }
}

/// Opens one `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]` value: AES-256-GCM with SOPS's 32-byte
/// IVs, the additional data authenticating where the value sits. An empty string is SOPS's
/// empty value, never encrypted.
fn decrypt_value(value: &str, key: &[u8], additional: &str) -> Result<Decrypted, ValueError> {
    if value.is_empty() {
        return Ok(Decrypted {
            bytes: Zeroizing::new(Vec::new()),
            kind: "str".to_owned(),
        });
    }
    let inner = value
        .strip_prefix("ENC[AES256_GCM,data:")
        .and_then(|rest| rest.strip_suffix(']'))
        .ok_or(ValueError::Format)?;
    let (data, rest) = inner.split_once(",iv:").ok_or(ValueError::Format)?;
    let (iv, rest) = rest.split_once(",tag:").ok_or(ValueError::Format)?;
    let (tag, kind) = rest.split_once(",type:").ok_or(ValueError::Format)?;
    let decode = |text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| ValueError::Format)
    };
    let mut sealed = decode(data)?;
    sealed.extend(decode(tag)?);
    let iv = decode(iv)?;
    if iv.len() != 32 {
        return Err(ValueError::Format);
    }
    let cipher = AesGcm::<Aes256, U32>::new_from_slice(key).map_err(|_| ValueError::Open)?;
    let payload = Payload {
        msg: &sealed,
        aad: additional.as_bytes(),
    };
    let bytes = cipher
        .decrypt(Nonce::<U32>::from_slice(&iv), payload)
        .map_err(|_| ValueError::Open)?;
    Ok(Decrypted {
        bytes: Zeroizing::new(bytes),
        kind: kind.to_owned(),
    })
}

/// The decrypted tree as `sops decrypt` prints it in `form`.
fn emit(form: Form, tree: &[Node]) -> Result<Vec<u8>, Error> {
    let scalar = |node: &Node| -> Result<String, Error> {
        match node {
            Node::Str(text) => Ok(text.clone()),
            Node::Int(number) => Ok(number.to_string()),
            Node::Float(number) => Ok(number.to_string()),
            Node::Bool(value) => Ok(value.to_string()),
            Node::Null => Ok(String::new()),
            Node::Seq(_) | Node::Map(_) => Err(Error::Malformed("a nested value".to_owned())),
        }
    };
    let root = tree.first().unwrap_or(&Node::Null);
    let entries = |node: &Node| match node {
        Node::Map(entries) => entries.clone(),
        _ => Vec::new(),
    };
    match form {
        Form::Dotenv => {
            let mut out = String::new();
            for (key, value) in entries(root) {
                out.push_str(&format!("{key}={}\n", scalar(&value)?.replace('\n', "\\n")));
            }
            Ok(out.into_bytes())
        }
        Form::Ini => {
            let mut out = String::new();
            for (section, values) in entries(root) {
                let values = entries(&values);
                if section == "DEFAULT" && values.is_empty() {
                    continue;
                }
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&format!("[{section}]\n"));
                for (key, value) in values {
                    out.push_str(&format!("{key} = {}\n", scalar(&value)?));
                }
            }
            Ok(out.into_bytes())
        }
        Form::Json => serde_json::to_vec_pretty(root)
            .map_err(|error| Error::Malformed(format!("writing JSON: {error}"))),
        Form::Yaml => {
            let mut out = String::new();
            for (index, document) in tree.iter().enumerate() {
                if index > 0 {
                    out.push_str("---\n");
                }
                out.push_str(
                    &yaml_serde::to_string(document)
                        .map_err(|error| Error::Malformed(format!("writing YAML: {error}")))?,
                );
            }
            Ok(out.into_bytes())
        }
        Form::Binary => Ok(scalar(&entries(root)[0].1)?.into_bytes()),
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(value) => serializer.serialize_bool(*value),
            Node::Int(value) => serializer.serialize_i64(*value),
            // Go writes a whole float64 without a fraction (`3`, not `3.0`), in JSON and YAML.
            Node::Float(value) if value.fract() == 0.0 && value.abs() < 9.0e15 => {
                serializer.serialize_i64(*value as i64)
            }
            Node::Float(value) => serializer.serialize_f64(*value),
            Node::Str(value) => serializer.serialize_str(value),
            Node::Seq(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    /// Keeps mappings in file order, which the MAC depends on, whatever the JSON or YAML
    /// library does with its own maps.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON or YAML value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<Node, D::Error> {
                Node::deserialize(inner)
            }
            fn visit_bool<E>(self, value: bool) -> Result<Node, E> {
                Ok(Node::Bool(value))
            }
            fn visit_i64<E>(self, value: i64) -> Result<Node, E> {
                Ok(Node::Int(value))
            }
            fn visit_u64<E>(self, value: u64) -> Result<Node, E> {
                Ok(i64::try_from(value).map_or(Node::Float(value as f64), Node::Int))
            }
            fn visit_f64<E>(self, value: f64) -> Result<Node, E> {
                Ok(Node::Float(value))
            }
            fn visit_str<E>(self, value: &str) -> Result<Node, E> {
                Ok(Node::Str(value.to_owned()))
            }
            fn visit_string<E>(self, value: String) -> Result<Node, E> {
                Ok(Node::Str(value))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<Node, Node>()? {
                    let Node::Str(key) = key else {
                        return Err(de::Error::custom("SOPS supports only string keys"));
                    };
                    entries.push((key, value));
                }
                Ok(Node::Map(entries))
            }
        }
        deserializer.deserialize_any(NodeVisitor)
    }
}

#[cfg(test)]
pub(crate) mod tests;
