//! What was deployed, persisted in the state directory, and the lock that lets one process deploy.
//!
//! State is one JSON file, written to a temporary file, synced and renamed into place, so that a
//! crash leaves either the old or the new state, never half of one. It never lives in the git
//! checkout. The lock is an OS file lock (released by the kernel if the holder dies) whose file
//! also says who holds it, so that a waiting process can tell its user.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::repo::CommitId;
use crate::slot::Slot;
use crate::stack::{ConfigHash, Fingerprint};

/// Everything stackhook remembers between deployments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Stacks by name, as last deployed successfully.
    #[serde(default)]
    pub stacks: BTreeMap<String, StackRecord>,
    /// Stacks held at a commit by a rollback: pushes do not move them until they are unpinned.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pins: BTreeMap<String, Pin>,
    /// Stacks by name: what the last image check found of their services' images
    /// (`STACKHOOK_IMAGE_CHECK`), so that `stackhook status` and a restarted server know it too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub image_checks: BTreeMap<String, ImageCheck>,
}

/// What an image check found of one stack's services: for each service whose image a tag names
/// in a registry, whether the tag still names the image its containers run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageCheck {
    /// RFC 3339.
    pub checked_at: String,
    pub services: BTreeMap<String, ServiceImage>,
}

impl ImageCheck {
    /// The services whose tag names another image than the one they run.
    pub fn updates(&self) -> impl Iterator<Item = (&String, &ServiceImage)> {
        self.services
            .iter()
            .filter(|(_, image)| matches!(image.finding, Finding::UpdateAvailable { .. }))
    }

    /// Forgets the services that run another image than the one checked, now that a deployment
    /// recorded `images` (service → image id): what was found of them is out of date.
    pub fn forget_replaced(&mut self, images: &BTreeMap<String, String>) {
        let bare = |id: &str| id.strip_prefix("sha256:").unwrap_or(id).to_owned();
        self.services.retain(|service, checked| {
            images
                .get(service)
                .is_some_and(|id| bare(id) == bare(&checked.image_id))
        });
    }
}

/// One service's image, as the check found it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceImage {
    /// The reference its compose file names, a tag.
    pub image: String,
    /// The id of the image its containers run (an outdated one, where they differ).
    pub image_id: String,
    #[serde(flatten)]
    pub finding: Finding,
}

/// Whether a tag still names the image a service runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Finding {
    /// The registry's digest of the tag is the one the running image was pulled as.
    UpToDate { digest: String },
    /// The tag names another image now: `available`. `running` is the registry digest of the
    /// image the service runs, where it has one for that repository.
    UpdateAvailable {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        running: Option<String>,
        available: String,
    },
    /// The check could not tell: the registry did not answer, or the running image came from
    /// no registry.
    Unknown { reason: String },
}

/// A stack held at an older commit (`stackhook rollback`), with the images it ran then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    pub commit: CommitId,
    /// Service → the image id it ran at that commit, where a deployment recorded it; used while
    /// the engine still has the image.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// The deployment rolled back to, when the rollback named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// RFC 3339.
    pub since: String,
}

/// One stack as it was last deployed successfully.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackRecord {
    pub commit: CommitId,
    pub fingerprint: Fingerprint,
    /// The compose project name, so that a stack removed from the repo can still be found.
    pub project: String,
    /// RFC 3339.
    pub deployed_at: String,
    /// Service name → config hash.
    #[serde(default)]
    pub services: BTreeMap<String, ConfigHash>,
    /// Service → the id of the image its containers run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// Variable name → a keyed digest of its value (`variable_digests`), so that a later
    /// deployment can say which variables changed without anything keeping their values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
}

const DIGEST_KEY_FILE: &str = "digest.key";

/// Keyed digests of `variables`' values, one per name: HMAC-SHA256 under a random key made once
/// per state directory, so that a digest of a short secret cannot be reversed by trying values.
pub fn variable_digests(
    state_dir: &Path,
    variables: &BTreeMap<String, Option<String>>,
) -> anyhow::Result<BTreeMap<String, String>> {
    use hmac::{Hmac, KeyInit, Mac};
    if variables.is_empty() {
        return Ok(BTreeMap::new());
    }
    let key = digest_key(state_dir)?;
    Ok(variables
        .iter()
        .map(|(name, value)| {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
            match value {
                Some(value) => {
                    mac.update(b"=");
                    mac.update(value.as_bytes());
                }
                None => mac.update(b"unset"),
            }
            let digest = hex::encode(mac.finalize().into_bytes());
            (name.clone(), digest[..16].to_owned())
        })
        .collect())
}

/// The state directory's random key for keyed digests, made on first use.
pub fn digest_key(state_dir: &Path) -> anyhow::Result<Vec<u8>> {
    // Lanes ask at once; two making the key would share a temporary file name.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _making = MAKING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = state_dir.join(DIGEST_KEY_FILE);
    match fs::read(&path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    }
    let mut key = vec![0; 32];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut key))
        .context("reading /dev/urandom")?;
    write_atomically(&path, &key).with_context(|| format!("writing {}", path.display()))?;
    // Two processes may race to make the key: the one on disk wins.
    fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "deploy.lock";
const ACTIVE_FILE: &str = "active-slot";
const INBOX_FILE: &str = "inbox.json";

/// What a slot that has handed over was still asked to deploy, left for the active slot (issue 9:
/// a push queued on a slot that just handed over is never dropped). Read and written only under
/// the deploy lock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inbox {
    /// A pass over every changed stack was asked for.
    #[serde(default)]
    pub all_changed: bool,
    /// Stacks named, each with the pull policy asked for.
    #[serde(default)]
    pub stacks: BTreeMap<String, Option<crate::stack::compose::PullPolicy>>,
}

impl Inbox {
    pub fn is_empty(&self) -> bool {
        !self.all_changed && self.stacks.is_empty()
    }
}

/// Adds `more` to the inbox.
pub fn post_to_inbox(state_dir: &Path, more: Inbox) -> anyhow::Result<()> {
    let mut inbox = read_inbox(state_dir)?;
    inbox.all_changed |= more.all_changed;
    for (stack, pull) in more.stacks {
        let entry = inbox.stacks.entry(stack).or_default();
        *entry = pull.or(*entry);
    }
    let path = state_dir.join(INBOX_FILE);
    let json = serde_json::to_vec(&inbox).context("serialising the inbox")?;
    write_atomically(&path, &json).with_context(|| format!("writing {}", path.display()))
}

/// When the inbox was last written, if anything waits in it.
pub fn inbox_written(state_dir: &Path) -> Option<std::time::SystemTime> {
    fs::metadata(state_dir.join(INBOX_FILE))
        .and_then(|metadata| metadata.modified())
        .ok()
}

/// Empties the inbox and returns what it held.
pub fn take_inbox(state_dir: &Path) -> anyhow::Result<Inbox> {
    let inbox = read_inbox(state_dir)?;
    let path = state_dir.join(INBOX_FILE);
    match fs::remove_file(&path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(inbox),
    }
}

fn read_inbox(state_dir: &Path) -> anyhow::Result<Inbox> {
    let path = state_dir.join(INBOX_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {}: not a stackhook inbox", path.display())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Inbox::default()),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Serialises read-modify-write cycles of the state within this process: stacks finish deploying
/// in lanes of their own, each recording itself. Across processes the deploy lock does it.
static STATE_WRITE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Reads the state, lets `change` edit it, and writes it back atomically.
pub fn update(state_dir: &Path, change: impl FnOnce(&mut State)) -> anyhow::Result<()> {
    let _guard = STATE_WRITE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut state = load(state_dir)?;
    change(&mut state);
    save(state_dir, &state)
}

/// Reads the state; a state directory without a state file is an empty state.
pub fn load(state_dir: &Path) -> anyhow::Result<State> {
    let path = state_dir.join(STATE_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {}: not valid stackhook state", path.display())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(State::default()),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the state atomically: temporary file, fsync, rename, fsync of the directory.
pub fn save(state_dir: &Path, state: &State) -> anyhow::Result<()> {
    let path = state_dir.join(STATE_FILE);
    let json = serde_json::to_vec_pretty(state).context("serialising state")?;
    write_atomically(&path, &json).with_context(|| format!("writing {}", path.display()))
}

/// The slot the active marker names, if one was written and is readable.
pub fn active_slot(state_dir: &Path) -> Option<Slot> {
    fs::read_to_string(state_dir.join(ACTIVE_FILE))
        .ok()?
        .parse()
        .ok()
}

/// Writes the active marker atomically.
pub fn set_active_slot(state_dir: &Path, slot: Slot) -> anyhow::Result<()> {
    let path = state_dir.join(ACTIVE_FILE);
    write_atomically(&path, format!("{slot}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_file(path, bytes, File::options().write(true).create_new(true))
}

/// Writes a file only its owner may read (0600 from the moment it exists), atomically, in a
/// directory only its owner may enter.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    write_file(
        path,
        bytes,
        File::options().write(true).create_new(true).mode(0o600),
    )
}

fn write_file(path: &Path, bytes: &[u8], options: &fs::OpenOptions) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    // A name of its own for each write: two writers of one file at once (lanes) must not share
    // a temporary file, or one renames the other's away.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let temporary = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut file = options.open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)?;
    File::open(dir)?.sync_all()
}

/// The deploy lock, held for the length of one deployment. Dropping it releases it.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock, waiting up to `patience` for another process to release it. `holder`
    /// describes this process (`stackhook serve, pid 42`); a waiting process is told it.
    /// `on_wait` is called once, with the current holder, if the lock is taken.
    pub fn acquire(
        state_dir: &Path,
        holder: &str,
        patience: Duration,
        on_wait: impl FnOnce(&str),
    ) -> anyhow::Result<Lock> {
        fs::create_dir_all(state_dir)
            .with_context(|| format!("creating state directory {}", state_dir.display()))?;
        let path = state_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let deadline = Instant::now() + patience;
        let mut on_wait = Some(on_wait);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let current = read_holder(&mut file);
                    if Instant::now() >= deadline {
                        anyhow::bail!(
                            "another stackhook is deploying from {} ({current}); gave up after {}",
                            state_dir.display(),
                            humantime::format_duration(patience)
                        );
                    }
                    if let Some(on_wait) = on_wait.take() {
                        on_wait(&current);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(TryLockError::Error(error)) => {
                    return Err(error).with_context(|| format!("locking {}", path.display()));
                }
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(holder.as_bytes())?;
        file.sync_data()?;
        Ok(Lock { _file: file })
    }
}

fn read_holder(file: &mut File) -> String {
    let mut holder = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut holder));
    if holder.trim().is_empty() {
        "holder unknown".to_owned()
    } else {
        holder.trim().to_owned()
    }
}

/// Where the decrypted files of a stack's SOPS-encrypted secrets and configs are written out for
/// its containers to mount: `secrets/<stack>/`, which only stackhook's user may enter.
pub fn sealed_dir(state_dir: &Path, stack: &str) -> PathBuf {
    state_dir.join("secrets").join(stack)
}

/// The file of one secret or config (`kind` is `secret` or `config`) in `sealed_dir`. A name that
/// is not a plain file name is replaced by its hash.
pub fn sealed_file(state_dir: &Path, stack: &str, kind: &str, name: &str) -> PathBuf {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let name = match plain {
        true => name.to_owned(),
        false => {
            use sha2::Digest;
            hex::encode(&sha2::Sha256::digest(name.as_bytes())[..8])
        }
    };
    sealed_dir(state_dir, stack).join(format!("{kind}-{name}"))
}

/// Removes the files in the stack's `sealed_dir` other than `keep`, and the directory itself
/// when nothing is kept.
pub fn remove_sealed(state_dir: &Path, stack: &str, keep: &[PathBuf]) -> anyhow::Result<()> {
    let dir = sealed_dir(state_dir, stack);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if !keep.contains(&path) {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    if keep.is_empty() {
        fs::remove_dir(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// Where commits that stacks are pinned to are written out, one directory a commit.
pub fn pinned_dir(state_dir: &Path, commit: &CommitId) -> PathBuf {
    state_dir.join("pinned").join(commit.as_str())
}

/// The path of the git checkout inside the state directory.
pub fn checkout_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("repo")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), State::default());
        let mut state = State::default();
        state.stacks.insert(
            "web".into(),
            StackRecord {
                commit: CommitId::parse(&"c".repeat(40)).unwrap(),
                fingerprint: Fingerprint::new("f"),
                project: "web".into(),
                deployed_at: "2026-11-22T00:00:00Z".into(),
                services: BTreeMap::from([("app".into(), ConfigHash::new("h"))]),
                variables: BTreeMap::new(),
                images: BTreeMap::new(),
            },
        );
        save(dir.path(), &state).unwrap();
        assert_eq!(load(dir.path()).unwrap(), state);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(STATE_FILE)]);
    }

    #[test]
    fn variable_digests_change_with_the_value_and_hide_it() {
        let dir = tempfile::tempdir().unwrap();
        let variables = |value: &str| {
            BTreeMap::from([
                ("TAG".to_owned(), Some(value.to_owned())),
                ("UNSET".to_owned(), None),
            ])
        };
        let first = variable_digests(dir.path(), &variables("1.0")).unwrap();
        let again = variable_digests(dir.path(), &variables("1.0")).unwrap();
        let second = variable_digests(dir.path(), &variables("1.1")).unwrap();
        assert_eq!(first, again);
        assert_ne!(first["TAG"], second["TAG"]);
        assert_eq!(first["UNSET"], second["UNSET"]);
        assert!(!first["TAG"].contains("1.0"));
        let other = tempfile::tempdir().unwrap();
        let elsewhere = variable_digests(other.path(), &variables("1.0")).unwrap();
        assert_ne!(first["TAG"], elsewhere["TAG"], "keyed per state directory");
    }

    #[test]
    fn the_digest_key_is_made_once_when_many_ask_at_once() {
        let variables = BTreeMap::from([("TAG".to_owned(), Some("1".to_owned()))]);
        let dir = tempfile::tempdir().unwrap();
        let start = std::sync::Barrier::new(8);
        let digests: Vec<_> = std::thread::scope(|scope| {
            let askers: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        variable_digests(dir.path(), &variables).unwrap()
                    })
                })
                .collect();
            askers.into_iter().map(|a| a.join().unwrap()).collect()
        });
        assert!(
            digests.windows(2).all(|pair| pair[0] == pair[1]),
            "{digests:?}"
        );
    }

    #[test]
    fn writers_of_one_file_at_once_never_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        std::thread::scope(|scope| {
            for writer in 0..4u8 {
                let path = &path;
                scope.spawn(move || {
                    for _ in 0..200 {
                        write_atomically(path, &[writer; 64]).unwrap();
                    }
                });
            }
        });
        let last = fs::read(&path).unwrap();
        assert!(
            last.len() == 64 && last.iter().all(|b| *b == last[0]),
            "{last:?}"
        );
    }

    #[test]
    fn corrupt_state_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), "{").unwrap();
        let error = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(
            error.contains("state.json: not valid stackhook state"),
            "{error}"
        );
    }

    #[test]
    fn second_holder_is_told_who_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first =
            Lock::acquire(dir.path(), "stackhook serve, pid 1", Duration::ZERO, |_| {}).unwrap();
        let mut seen = String::new();
        let error = Lock::acquire(dir.path(), "second", Duration::from_millis(250), |holder| {
            seen = holder.to_owned()
        })
        .unwrap_err();
        assert_eq!(seen, "stackhook serve, pid 1");
        assert!(
            error.to_string().contains("another stackhook is deploying"),
            "{error}"
        );
        drop(first);
        Lock::acquire(dir.path(), "second", Duration::ZERO, |_| {}).unwrap();
    }
}
