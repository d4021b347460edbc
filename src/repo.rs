//! Git sync of the environment repository: clone or fetch it, move its work tree to the branch
//! head and report the commit. Knows nothing of compose files, stacks or deployments.
//!
//! Everything here blocks; async callers run [`sync`] in `spawn_blocking`.

pub mod tree;

use std::cell::RefCell;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Once;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use git2::build::CheckoutBuilder;
use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, Direction, FetchOptions,
    FetchPrune, Oid, RemoteCallbacks, Repository, StatusOptions,
};
use serde::{Deserialize, Serialize};

use crate::config::Secret;

/// Where the environment repository comes from and how to authenticate.
#[derive(Debug, Clone)]
pub struct Source {
    /// `https://`, `ssh://`, scp-like `git@host:path`, `file://`, or a local path.
    pub url: String,
    /// `None`: the remote's default branch (its `HEAD`).
    pub branch: Option<String>,
    /// HTTPS: sent as the password, with the URL's user name or else `x-access-token`.
    pub token: Option<Secret>,
    /// Private key file for SSH.
    pub ssh_key: Option<PathBuf>,
    /// `None`: `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    pub check_host_keys: bool,
}

/// A full commit hash: 40 lowercase hexadecimal characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct CommitId(String);

/// The result of a sync: the work tree in `dir` holds exactly `commit`'s files (plus any files
/// that were never tracked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub commit: CommitId,
    pub branch: String,
    pub dir: PathBuf,
    /// The commit's subject line.
    pub summary: String,
    /// The commit checked out before, if there was a checkout.
    pub previous: Option<CommitId>,
}

impl Source {
    /// A source with no branch (the remote's default), no credentials and host key checks on.
    pub fn new(url: impl Into<String>) -> Self {
        Source {
            url: url.into(),
            branch: None,
            token: None,
            ssh_key: None,
            known_hosts: None,
            check_host_keys: true,
        }
    }
}

impl CommitId {
    pub fn parse(s: &str) -> anyhow::Result<CommitId> {
        if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(CommitId(s.to_ascii_lowercase()))
        } else {
            bail!("invalid commit id {s:?}: expected 40 hexadecimal characters")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 characters, for logs and the status page.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }

    fn from_oid(oid: Oid) -> CommitId {
        CommitId(oid.to_string())
    }
}

impl FromStr for CommitId {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<CommitId> {
        CommitId::parse(s)
    }
}

impl TryFrom<String> for CommitId {
    type Error = anyhow::Error;

    fn try_from(s: String) -> anyhow::Result<CommitId> {
        CommitId::parse(&s)
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Sets how long libgit2 may take to connect to a remote and to read from it, so that a remote
/// that accepts a connection and then never answers fails the pass instead of holding the deploy
/// lock forever (issue 9, "Timeouts everywhere"). libgit2 keeps these in process-wide globals:
/// the first call sets them, later calls change nothing.
pub fn set_timeout(timeout: Duration) {
    static SET: Once = Once::new();
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    SET.call_once(|| {
        // SAFETY: libgit2 reads these globals when it opens a connection, unsynchronised. The
        // `Once` writes them exactly once, and every caller (the CLI, before it starts anything
        // that syncs, and tests, before their first sync) calls this before any git operation
        // runs, so no read can race the write.
        #[allow(unsafe_code)]
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(millis);
            let _ = git2::opts::set_server_timeout_in_milliseconds(millis);
        }
    });
}

/// Brings `dir` to the head of the source's branch: clones into it if it is not a repository yet,
/// otherwise fetches, then checks out the branch head's tree. Cheap when nothing changed.
pub fn sync(source: &Source, dir: &Path) -> anyhow::Result<Checkout> {
    let redactor = Redactor::new(source);
    // libgit2 replaces a rejected host key's message with its own generic one, so the
    // certificate check leaves the real reason here.
    let rejection = RefCell::new(None);
    let url = redactor.url.as_str();
    let repo = open_or_init(source, dir, url)?;
    let previous = repo
        .head()
        .ok()
        .and_then(|head| head.target())
        .map(CommitId::from_oid);
    let mut remote = repo
        .find_remote("origin")
        .with_context(|| format!("opening the origin remote in {}", dir.display()))?;

    // One connection serves both the HEAD advertisement and the fetch: libgit2 fetches over a
    // connected remote instead of dialing again.
    let branch;
    {
        let mut connection = remote
            .connect_auth(Direction::Fetch, Some(callbacks(source, &rejection)), None)
            .map_err(|e| redactor.error(&e, rejection.take()))
            .with_context(|| format!("connecting to {url}"))?;
        branch = match &source.branch {
            Some(branch) => branch.clone(),
            None => default_branch(&connection.default_branch().ok(), connection.list().ok())
                .with_context(|| format!("finding the default branch of {url}"))?,
        };
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(callbacks(source, &rejection))
            .prune(FetchPrune::On)
            .download_tags(AutotagOption::None);
        connection
            .remote()
            .fetch(&[FETCH_REFSPEC], Some(&mut options), None)
            .map_err(|e| redactor.error(&e, rejection.take()))
            .with_context(|| format!("fetching {url} (branch {branch})"))?;
    }

    let tracking = format!("refs/remotes/origin/{branch}");
    let Ok(reference) = repo.find_reference(&tracking) else {
        bail!("branch {branch:?} not found in {url}");
    };
    let commit = reference
        .peel_to_commit()
        .with_context(|| format!("reading the head of branch {branch} of {url}"))?;
    let checkout = Checkout {
        commit: CommitId::from_oid(commit.id()),
        branch,
        dir: dir.to_path_buf(),
        summary: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned(),
        previous,
    };
    if !is_checked_out(&repo, commit.id())? {
        move_work_tree(&repo, &commit).with_context(|| {
            format!(
                "checking out {} (branch {}) in {}",
                checkout.commit.short(),
                checkout.branch,
                dir.display()
            )
        })?;
    }
    Ok(checkout)
}

const FETCH_REFSPEC: &str = "+refs/heads/*:refs/remotes/origin/*";

/// Opens the repository in `dir`, or creates an empty one; keeps its `origin` remote's URL in
/// step with the source. `shown_url` is the URL as errors may show it.
/// The commit that `revision` (a commit id, a prefix of one, a tag or `HEAD~2`) names in the
/// checkout's repository.
pub fn resolve(checkout: &Path, revision: &str) -> anyhow::Result<CommitId> {
    let repo = Repository::open(checkout)
        .with_context(|| format!("opening the checkout {}", checkout.display()))?;
    let object = repo
        .revparse_single(revision)
        .with_context(|| format!("no commit {revision:?} in the repository"))?;
    let commit = object
        .peel_to_commit()
        .with_context(|| format!("{revision:?} names no commit"))?;
    Ok(CommitId::from_oid(commit.id()))
}

const EXPORTED: &str = ".stackhook-exported";

/// Whether `export` wrote a complete copy into `dir`.
pub fn exported(dir: &Path) -> bool {
    dir.join(EXPORTED).exists()
}

/// Writes the files of `commit` into `dir` (a directory of its own, not a checkout: no `.git`),
/// unless a complete copy is already there. For stacks pinned to an older commit.
pub fn export(checkout: &Path, commit: &CommitId, dir: &Path) -> anyhow::Result<()> {
    if exported(dir) {
        return Ok(());
    }
    let done = dir.join(EXPORTED);
    let repo = Repository::open(checkout)
        .with_context(|| format!("opening the checkout {}", checkout.display()))?;
    let oid = Oid::from_str(commit.as_str())?;
    let object = repo
        .find_commit(oid)
        .with_context(|| format!("commit {} is not in the repository", commit.short()))?
        .into_object();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut options = CheckoutBuilder::new();
    options.force().target_dir(dir).recreate_missing(true);
    repo.checkout_tree(&object, Some(&mut options))
        .with_context(|| format!("writing commit {} to {}", commit.short(), dir.display()))?;
    std::fs::write(&done, commit.as_str()).with_context(|| format!("writing {}", done.display()))
}

/// The commit checked out at `checkout` and its subject line; `None` before the first sync.
pub fn head(checkout: &Path) -> anyhow::Result<Option<(CommitId, String)>> {
    let repo = match Repository::open(checkout) {
        Ok(repo) => repo,
        Err(error) if error.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(error) => {
            return Err(error).with_context(|| format!("opening {}", checkout.display()));
        }
    };
    let Some(commit) = repo.head().ok().and_then(|head| head.peel_to_commit().ok()) else {
        return Ok(None);
    };
    let summary = String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned();
    Ok(Some((CommitId::from_oid(commit.id()), summary)))
}

/// The subject line of `commit` in the checkout at `checkout`; `None` if the commit is not there
/// (after a force push and a garbage collection, say).
pub fn subject(checkout: &Path, commit: &CommitId) -> anyhow::Result<Option<String>> {
    let repo = Repository::open(checkout)
        .with_context(|| format!("opening the checkout {}", checkout.display()))?;
    let Ok(commit) = repo.find_commit(Oid::from_str(commit.as_str())?) else {
        return Ok(None);
    };
    let summary = commit.summary_bytes().unwrap_or_default();
    Ok(Some(String::from_utf8_lossy(summary).into_owned()))
}

/// The files under `dir_in_repo` that differ between commits `from` and `to` of the checkout
/// at `checkout`, relative to `dir_in_repo`, at most `limit` of them, sorted. Fails if either
/// commit is not in the repository (after a force push, say).
pub fn changed_files(
    checkout: &Path,
    from: &CommitId,
    to: &CommitId,
    dir_in_repo: &Path,
    limit: usize,
) -> anyhow::Result<Vec<String>> {
    let repo = Repository::open(checkout)
        .with_context(|| format!("opening the checkout {}", checkout.display()))?;
    let tree = |commit: &CommitId| -> anyhow::Result<git2::Tree<'_>> {
        let oid = Oid::from_str(commit.as_str())?;
        Ok(repo
            .find_commit(oid)
            .with_context(|| format!("commit {} is not in the repository", commit.short()))?
            .tree()?)
    };
    let (old, new) = (tree(from)?, tree(to)?);
    let mut options = git2::DiffOptions::new();
    options.pathspec(dir_in_repo);
    let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), Some(&mut options))?;
    let mut files: Vec<String> = diff
        .deltas()
        .filter_map(|delta| delta.new_file().path().or_else(|| delta.old_file().path()))
        .filter_map(|path| path.strip_prefix(dir_in_repo).ok())
        .map(|path| path.to_string_lossy().into_owned())
        .take(limit)
        .collect();
    files.sort();
    Ok(files)
}

fn open_or_init(source: &Source, dir: &Path, shown_url: &str) -> anyhow::Result<Repository> {
    let repo = if dir.join(".git").exists() {
        Repository::open(dir).with_context(|| format!("opening {}", dir.display()))?
    } else {
        // Refuse to take over a directory that holds something else: the forced checkout would
        // overwrite its files.
        if fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
            bail!(
                "{} is not empty and not a git repository; empty it or choose another directory",
                dir.display()
            );
        }
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Repository::init(dir)
            .with_context(|| format!("creating a repository in {}", dir.display()))?
    };
    let configured = repo
        .find_remote("origin")
        .ok()
        .and_then(|r| r.url().ok().map(String::from));
    match configured {
        Some(configured) if configured == source.url => {}
        Some(_) => repo
            .remote_set_url("origin", &source.url)
            .with_context(|| format!("setting the origin of {} to {shown_url}", dir.display()))?,
        None => {
            repo.remote("origin", &source.url)
                .with_context(|| format!("adding origin {shown_url} to {}", dir.display()))?;
        }
    }
    Ok(repo)
}

/// The branch the remote's `HEAD` points at. Uses the symbolic-ref advertisement and, where a
/// transport does not send one, the one branch whose commit equals `HEAD`'s.
fn default_branch(
    advertised: &Option<git2::Buf>,
    heads: Option<&[git2::RemoteHead<'_>]>,
) -> anyhow::Result<String> {
    if let Some(name) = advertised.as_ref().and_then(|buf| buf.as_str().ok())
        && let Some(branch) = name.strip_prefix("refs/heads/")
    {
        return Ok(branch.to_string());
    }
    let heads = heads.unwrap_or_default();
    let Some(head) = heads.iter().find(|h| h.name() == "HEAD") else {
        bail!("the remote has no HEAD (is it empty?); configure the branch explicitly");
    };
    let candidates: Vec<&str> = heads
        .iter()
        .filter(|h| h.oid() == head.oid())
        .filter_map(|h| h.name().strip_prefix("refs/heads/"))
        .collect();
    match candidates.as_slice() {
        [branch] => Ok(branch.to_string()),
        _ => bail!(
            "the remote does not say which branch its HEAD is; configure the branch explicitly"
        ),
    }
}

/// Whether HEAD is detached at `target` and no tracked file differs from it. Untracked files
/// do not count: they survive a checkout anyway.
fn is_checked_out(repo: &Repository, target: Oid) -> anyhow::Result<bool> {
    if !repo.head_detached().unwrap_or(false)
        || repo.head().ok().and_then(|head| head.target()) != Some(target)
    {
        return Ok(false);
    }
    let mut options = StatusOptions::new();
    options
        .include_untracked(false)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = repo
        .statuses(Some(&mut options))
        .context("reading the work tree status")?;
    Ok(statuses.is_empty())
}

/// Forces the work tree and index to `commit` and detaches HEAD there.
///
/// A detached HEAD rather than a local branch reset hard: the remote-tracking ref is the only
/// truth, there is no local branch that could diverge or need bookkeeping when the configured
/// branch changes, and `git status` in the directory shows plainly which commit is deployed.
fn move_work_tree(repo: &Repository, commit: &git2::Commit<'_>) -> anyhow::Result<()> {
    // HEAD still names the old commit here, so the checkout's baseline is the old tree and files
    // deleted upstream are removed. Files that were never tracked are left alone (no
    // `remove_untracked`).
    let mut checkout = CheckoutBuilder::new();
    checkout.force();
    repo.checkout_tree(commit.as_object(), Some(&mut checkout))?;
    repo.set_head_detached(commit.id())?;
    Ok(())
}

/// Authentication and host key checks for one connection.
fn callbacks<'a>(
    source: &'a Source,
    rejection: &'a RefCell<Option<String>>,
) -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    // libgit2 calls this again each time the server refuses what it returned (libgit2/git2go#250),
    // so each kind of credential is offered once and the next request for it is an error.
    let mut tried = CredentialType::empty();
    callbacks.credentials(move |_url, username_from_url, allowed| {
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            let Some(token) = &source.token else {
                return Err(git2::Error::from_str("the server asks for credentials and no token is configured"));
            };
            if tried.contains(CredentialType::USER_PASS_PLAINTEXT) {
                return Err(git2::Error::from_str("the server refused the token; check that it is valid and can read the repository"));
            }
            tried |= CredentialType::USER_PASS_PLAINTEXT;
            return Cred::userpass_plaintext(
                username_from_url.unwrap_or("x-access-token"),
                token.expose(),
            );
        }
        if allowed.contains(CredentialType::USERNAME) && !tried.contains(CredentialType::USERNAME)
        {
            // SSH without a user in the URL: the hosting services all use `git`.
            tried |= CredentialType::USERNAME;
            return Cred::username("git");
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            let user = username_from_url.unwrap_or("git");
            let Some(key) = &source.ssh_key else {
                return Err(git2::Error::from_str("the server asks for an ssh key and none is configured"));
            };
            if tried.contains(CredentialType::SSH_KEY) {
                return Err(git2::Error::from_str(&format!(
                    "the server refused the ssh key {} for user {user}; check the user and that the key's public half is a deploy key of the repository",
                    key.display()
                )));
            }
            tried |= CredentialType::SSH_KEY;
            return Cred::ssh_key(user, None, key, None);
        }
        Err(git2::Error::from_str(&format!(
            "the server asks for a kind of authentication stackhook does not support ({allowed:?})"
        )))
    });
    callbacks.certificate_check(move |cert, hostname| {
        // HTTPS certificates: libgit2's own validation against the system's trust store.
        let Some(hostkey) = cert.as_hostkey() else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        if !source.check_host_keys {
            return Ok(CertificateCheckStatus::CertificateOk);
        }
        let checked = match (hostkey.hostkey_type(), hostkey.hostkey()) {
            (Some(key_type), Some(key)) => check_host_key(source, hostname, key_type.name(), key),
            _ => Err(format!(
                "the ssh server {hostname} sent a host key stackhook cannot read"
            )),
        };
        checked
            .map(|()| CertificateCheckStatus::CertificateOk)
            .map_err(|message| {
                let error = git2::Error::from_str(&message);
                *rejection.borrow_mut() = Some(message);
                error
            })
    });
    callbacks
}

/// Looks the SSH server's key up in the known_hosts file; the error says how to fix it.
fn check_host_key(source: &Source, host: &str, key_type: &str, key: &[u8]) -> Result<(), String> {
    // `config` fills in `~/.ssh/known_hosts` when nothing else is set.
    let path = source
        .known_hosts
        .clone()
        .unwrap_or_else(|| PathBuf::from("~/.ssh/known_hosts"));
    // A missing file is the same as a file without the host: the message says how to add it.
    let text = fs::read_to_string(&path).unwrap_or_default();
    let port = ssh_port(&source.url);
    let name = known_hosts_name(host, port);
    let keyscan = match port {
        22 => format!("ssh-keyscan {host} >> {}", path.display()),
        _ => format!("ssh-keyscan -p {port} {host} >> {}", path.display()),
    };
    let turn_off = "or set STACKHOOK_GIT_SSH_CHECK_HOST_KEYS=false to skip the check";
    match check_known_hosts(&text, host, port, key_type, key) {
        HostKeyStatus::Known => Ok(()),
        HostKeyStatus::Unknown => Err(format!(
            "host {name} ({key_type}) is not in {}; add it with `{keyscan}` after verifying the key, {turn_off} (hashed |1| entries are not read)",
            path.display()
        )),
        HostKeyStatus::Mismatch => Err(format!(
            "host key of {name} ({key_type}) does not match {}: the key changed or someone intercepts the connection; if the change is expected, remove the old entry and add the new one with `{keyscan}`, {turn_off}",
            path.display()
        )),
        HostKeyStatus::Revoked => Err(format!(
            "host key of {name} ({key_type}) is marked @revoked in {}",
            path.display()
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostKeyStatus {
    Known,
    /// The host is listed with a different key of the same type.
    Mismatch,
    Unknown,
    Revoked,
}

/// Checks a host key against the text of a known_hosts file (sshd(8), "SSH_KNOWN_HOSTS FILE
/// FORMAT"): comma-separated host patterns with `*`, `?` and `!`, `[host]:port` for ports other
/// than 22, `@revoked` lines. `@cert-authority` lines are ignored (libssh2 has no certificates).
///
/// Hashed host names (`|1|salt|hash`) need HMAC-SHA1 and the crate has no SHA-1 implementation,
/// so those lines never match; the error message for an unknown host says so.
fn check_known_hosts(
    known_hosts: &str,
    host: &str,
    port: u16,
    key_type: &str,
    key: &[u8],
) -> HostKeyStatus {
    let name = known_hosts_name(host, port).to_ascii_lowercase();
    let (mut known, mut mismatch) = (false, false);
    for line in known_hosts.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let marker = first.strip_prefix('@');
        if marker.is_some() {
            first = fields.next().unwrap_or_default();
        }
        let (Some(line_type), Some(line_key)) = (fields.next(), fields.next()) else {
            continue;
        };
        if marker == Some("cert-authority") || line_type != key_type || !hosts_match(first, &name) {
            continue;
        }
        let same = decode_base64(line_key).is_some_and(|bytes| bytes == key);
        match marker {
            Some("revoked") if same => return HostKeyStatus::Revoked,
            Some(_) => {}
            None if same => known = true,
            None => mismatch = true,
        }
    }
    match (known, mismatch) {
        (true, _) => HostKeyStatus::Known,
        (false, true) => HostKeyStatus::Mismatch,
        (false, false) => HostKeyStatus::Unknown,
    }
}

/// How known_hosts names a host: bare on port 22, `[host]:port` otherwise.
fn known_hosts_name(host: &str, port: u16) -> String {
    match port {
        22 => host.to_string(),
        _ => format!("[{host}]:{port}"),
    }
}

/// Whether a comma-separated pattern list matches `name`; a matching negated pattern wins.
fn hosts_match(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split(',') {
        let pattern = pattern.to_ascii_lowercase();
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob_match(negated.as_bytes(), name.as_bytes()) {
                return false;
            }
        } else if glob_match(pattern.as_bytes(), name.as_bytes()) {
            matched = true;
        }
    }
    matched
}

fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.split_first(), name.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            glob_match(rest, name) || (!name.is_empty() && glob_match(pattern, &name[1..]))
        }
        (Some((b'?', rest)), Some((_, name_rest))) => glob_match(rest, name_rest),
        (Some((p, rest)), Some((n, name_rest))) if p == n => glob_match(rest, name_rest),
        _ => false,
    }
}

/// The SSH port of a URL: the explicit one in `ssh://host:port/..`, else 22 (the scp-like form
/// `git@host:path` cannot name a port).
fn ssh_port(url: &str) -> u16 {
    let Some((_, rest)) = url.split_once("://") else {
        return 22;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = match host_port.rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':'),
        None => host_port.rsplit_once(':').map(|(_, port)| port),
    };
    port.and_then(|port| port.parse().ok()).unwrap_or(22)
}

/// Standard base64 (RFC 4648 section 4), as in known_hosts key fields.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(bytes)
}

/// Keeps credentials out of error messages: the URL as shown to people, and the strings that
/// must never appear (the token, the URL's user information).
struct Redactor {
    url: String,
    secrets: Vec<String>,
}

impl Redactor {
    fn new(source: &Source) -> Redactor {
        let (url, userinfo) = redact_url(&source.url);
        let mut secrets = Vec::new();
        if let Some(userinfo) = userinfo {
            // The whole first, then the password alone.
            let password = userinfo.split_once(':').map(|(_, p)| p.to_string());
            secrets.push(userinfo);
            secrets.extend(password);
        }
        secrets.extend(source.token.as_ref().map(|t| t.expose().to_string()));
        secrets.retain(|s| !s.is_empty());
        Redactor { url, secrets }
    }

    /// A libgit2 error, or the reason a callback recorded for it, as an `anyhow` error whose
    /// message holds no secret: libgit2 may echo the URL it was given.
    fn error(&self, error: &git2::Error, rejection: Option<String>) -> anyhow::Error {
        let mut message = rejection.unwrap_or_else(|| error.message().to_string());
        for secret in &self.secrets {
            message = message.replace(secret.as_str(), "[redacted]");
        }
        anyhow!(message)
    }
}

/// The URL with its user information replaced by `[redacted]`, and that user information. An
/// HTTP(S) user name alone may be a token (`https://TOKEN@github.com/..`); for other schemes only
/// a password makes it secret, so `ssh://git@host/..` stays as it is.
fn redact_url(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return (url.to_string(), None);
    };
    let http = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    if !http && !userinfo.contains(':') {
        return (url.to_string(), None);
    }
    let after = &rest[userinfo.len() + 1..];
    (
        format!("{scheme}://[redacted]@{after}"),
        Some(userinfo.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use expect_test::expect;
    use git2::build::TreeUpdateBuilder;
    use git2::{FileMode, Signature};
    use tempfile::TempDir;

    use super::*;

    /// A bare repository standing in for the remote, with HEAD on `head`.
    struct Origin {
        dir: TempDir,
        repo: Repository,
    }

    impl Origin {
        fn new(head: &str) -> Origin {
            let dir = tempfile::tempdir().unwrap();
            let repo = Repository::init_bare(dir.path()).unwrap();
            repo.set_head(&format!("refs/heads/{head}")).unwrap();
            Origin { dir, repo }
        }

        fn path(&self) -> String {
            self.dir.path().display().to_string()
        }

        /// Commits exactly `files` (path → contents) as the new state of `branch`.
        fn commit(&self, branch: &str, message: &str, files: &[(&str, &str)]) -> CommitId {
            let repo = &self.repo;
            let empty = repo.treebuilder(None).unwrap().write().unwrap();
            let mut update = TreeUpdateBuilder::new();
            for (path, contents) in files {
                let blob = repo.blob(contents.as_bytes()).unwrap();
                update.upsert(*path, blob, FileMode::Blob);
            }
            let empty = repo.find_tree(empty).unwrap();
            let tree = update.create_updated(repo, &empty).unwrap();
            let tree = repo.find_tree(tree).unwrap();
            let refname = format!("refs/heads/{branch}");
            let parent = repo
                .find_reference(&refname)
                .and_then(|r| r.peel_to_commit());
            let parents: Vec<_> = parent.iter().collect();
            let signature = Signature::now("fixture", "fixture@example.com").unwrap();
            let oid = repo
                .commit(
                    Some(&refname),
                    &signature,
                    &signature,
                    message,
                    &tree,
                    &parents,
                )
                .unwrap();
            CommitId::from_oid(oid)
        }
    }

    /// The work tree's files, without `.git`.
    fn files(dir: &Path) -> BTreeMap<String, String> {
        let mut files = BTreeMap::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(current) = pending.pop() {
            for entry in fs::read_dir(&current).unwrap() {
                let path = entry.unwrap().path();
                if path.file_name().unwrap() == ".git" {
                    continue;
                }
                if path.is_dir() {
                    pending.push(path);
                } else {
                    let relative = path.strip_prefix(dir).unwrap().display().to_string();
                    files.insert(relative, fs::read_to_string(&path).unwrap());
                }
            }
        }
        files
    }

    fn expected(files: &[(&str, &str)]) -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(path, contents)| (path.to_string(), contents.to_string()))
            .collect()
    }

    const WEB: (&str, &str) = ("services/web/compose.yaml", "services: {web: {}}\n");
    const DB: (&str, &str) = ("services/db/compose.yaml", "services: {db: {}}\n");

    #[test]
    fn clones_from_a_local_path_into_a_new_directory() {
        let origin = Origin::new("main");
        let commit = origin.commit("main", "add web\n\nbody", &[WEB, DB]);
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("nested/env");

        let checkout = sync(&Source::new(origin.path()), &dir).unwrap();

        assert_eq!(
            checkout,
            Checkout {
                commit,
                branch: "main".to_string(),
                dir: dir.clone(),
                summary: "add web".to_string(),
                previous: None,
            }
        );
        assert_eq!(files(&dir), expected(&[WEB, DB]));
    }

    #[test]
    fn clones_from_a_file_url() {
        let origin = Origin::new("main");
        let commit = origin.commit("main", "add web", &[WEB]);
        let work = tempfile::tempdir().unwrap();

        let source = Source::new(format!("file://{}", origin.path()));
        let checkout = sync(&source, work.path()).unwrap();

        assert_eq!(checkout.commit, commit);
        assert_eq!(files(work.path()), expected(&[WEB]));
    }

    #[test]
    fn follows_the_remote_default_branch_when_it_is_not_master() {
        let origin = Origin::new("trunk");
        // Same commit on both: the branch must come from HEAD's advertisement, not a guess by
        // commit id.
        origin.commit("master", "current", &[WEB]);
        let commit = origin.commit("trunk", "current", &[WEB]);
        let work = tempfile::tempdir().unwrap();

        for url in [origin.path(), format!("file://{}", origin.path())] {
            let dir = work.path().join(url.replace('/', "_"));
            let checkout = sync(&Source::new(url), &dir).unwrap();
            assert_eq!(
                (checkout.branch.as_str(), &checkout.commit),
                ("trunk", &commit)
            );
            assert_eq!(files(&dir), expected(&[WEB]));
        }
    }

    #[test]
    fn uses_the_configured_branch() {
        let origin = Origin::new("main");
        origin.commit("main", "main", &[WEB]);
        let commit = origin.commit("production", "production", &[DB]);
        let work = tempfile::tempdir().unwrap();

        let source = Source {
            branch: Some("production".to_string()),
            ..Source::new(origin.path())
        };
        let checkout = sync(&source, work.path()).unwrap();

        assert_eq!(
            (checkout.branch.as_str(), &checkout.commit),
            ("production", &commit)
        );
        assert_eq!(files(work.path()), expected(&[DB]));
    }

    #[test]
    fn second_sync_moves_to_the_new_commit_and_removes_deleted_files() {
        let origin = Origin::new("main");
        origin.commit("main", "first", &[WEB, DB]);
        let work = tempfile::tempdir().unwrap();
        let source = Source::new(origin.path());
        sync(&source, work.path()).unwrap();
        fs::write(work.path().join("services/web/.env"), "LOCAL=1\n").unwrap();

        let edited = ("services/web/compose.yaml", "services: {web: {image: b}}\n");
        let second = origin.commit("main", "drop db", &[edited]);
        let checkout = sync(&source, work.path()).unwrap();

        assert_eq!(
            (checkout.commit, checkout.summary.as_str()),
            (second, "drop db")
        );
        assert!(
            !work.path().join("services/db").exists(),
            "emptied directory stays"
        );
        // The untracked `.env` was never in the repository and stays.
        assert_eq!(
            files(work.path()),
            expected(&[edited, ("services/web/.env", "LOCAL=1\n")])
        );
    }

    #[test]
    fn sync_without_changes_returns_the_same_commit_and_leaves_the_tree_alone() {
        let origin = Origin::new("main");
        origin.commit("main", "first", &[WEB]);
        let work = tempfile::tempdir().unwrap();
        let source = Source::new(origin.path());

        let first = sync(&source, work.path()).unwrap();
        let repo = Repository::open(work.path()).unwrap();
        let target = Oid::from_str(first.commit.as_str()).unwrap();
        assert!(is_checked_out(&repo, target).unwrap());
        let second = sync(&source, work.path()).unwrap();

        assert_eq!(first.previous, None);
        assert_eq!(second.previous.as_ref(), Some(&first.commit));
        assert_eq!(
            Checkout {
                previous: None,
                ..second
            },
            first
        );
        assert_eq!(files(work.path()), expected(&[WEB]));
    }

    #[test]
    fn dirty_work_tree_is_reset_to_the_commit() {
        let origin = Origin::new("main");
        let commit = origin.commit("main", "first", &[WEB, DB]);
        let work = tempfile::tempdir().unwrap();
        let source = Source::new(origin.path());
        sync(&source, work.path()).unwrap();
        fs::write(work.path().join(WEB.0), "edited by hand\n").unwrap();
        fs::remove_file(work.path().join(DB.0)).unwrap();

        let checkout = sync(&source, work.path()).unwrap();

        assert_eq!(checkout.commit, commit);
        assert_eq!(files(work.path()), expected(&[WEB, DB]));
    }

    #[test]
    fn follows_a_changed_url() {
        let old = Origin::new("main");
        old.commit("main", "old", &[DB]);
        let new = Origin::new("main");
        let commit = new.commit("main", "new", &[WEB]);
        let work = tempfile::tempdir().unwrap();
        sync(&Source::new(old.path()), work.path()).unwrap();

        let checkout = sync(&Source::new(new.path()), work.path()).unwrap();

        assert_eq!(checkout.commit, commit);
        assert_eq!(files(work.path()), expected(&[WEB]));
        let repo = Repository::open(work.path()).unwrap();
        let origin_url = repo
            .find_remote("origin")
            .unwrap()
            .url()
            .unwrap()
            .to_string();
        assert_eq!(origin_url, new.path());
    }

    #[test]
    fn refuses_a_directory_that_holds_other_files() {
        let origin = Origin::new("main");
        origin.commit("main", "first", &[WEB]);
        let work = tempfile::tempdir().unwrap();
        fs::write(work.path().join("notes.txt"), "mine\n").unwrap();

        let error = sync(&Source::new(origin.path()), work.path()).unwrap_err();

        let message = format!("{error:#}").replace(&work.path().display().to_string(), "DIR");
        expect!["DIR is not empty and not a git repository; empty it or choose another directory"]
            .assert_eq(&message);
        assert_eq!(files(work.path()), expected(&[("notes.txt", "mine\n")]));
    }

    #[test]
    fn missing_branch_names_the_branch_and_the_url() {
        let origin = Origin::new("main");
        origin.commit("main", "first", &[WEB]);
        let work = tempfile::tempdir().unwrap();
        let source = Source {
            branch: Some("prod".to_string()),
            ..Source::new(origin.path())
        };

        let error = sync(&source, work.path()).unwrap_err();

        let message = format!("{error:#}").replace(&origin.path(), "ORIGIN");
        expect![[r#"branch "prod" not found in ORIGIN"#]].assert_eq(&message);
    }

    #[test]
    fn credentials_in_the_url_are_redacted_from_errors() {
        let work = tempfile::tempdir().unwrap();
        let source = Source {
            token: Some(Secret::new("sekrit-token")),
            ..Source::new("https://user:tok@127.0.0.1:1/x")
        };

        let error = sync(&source, work.path()).unwrap_err();

        let message = format!("{error:#}");
        expect!["connecting to https://[redacted]@127.0.0.1:1/x: failed to connect to 127.0.0.1: Connection refused"]
            .assert_eq(&message);
        assert!(!format!("{error:?}").contains("tok@"));
    }

    /// An HTTP server on loopback that refuses every request with 401; returns its port and a
    /// counter of the requests it answered.
    fn refusing_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::{AtomicUsize, Ordering};

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                      Content-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        (port, requests)
    }

    #[test]
    fn refused_token_fails_after_one_attempt() {
        let (port, requests) = refusing_server();
        let work = tempfile::tempdir().unwrap();
        let source = Source {
            token: Some(Secret::new("sekrit-token")),
            ..Source::new(format!("http://127.0.0.1:{port}/acme/env"))
        };

        let error = sync(&source, work.path()).unwrap_err();

        let message = format!("{error:#}").replace(&port.to_string(), "PORT");
        expect!["connecting to http://127.0.0.1:PORT/acme/env: the server refused the token; check that it is valid and can read the repository"].assert_eq(&message);
        // One request without credentials, one with the token, then no more.
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn missing_token_is_named_when_the_server_asks_for_one() {
        let (port, _) = refusing_server();
        let work = tempfile::tempdir().unwrap();
        let source = Source::new(format!("http://127.0.0.1:{port}/acme/env"));

        let error = sync(&source, work.path()).unwrap_err();

        let message = format!("{error:#}").replace(&port.to_string(), "PORT");
        expect!["connecting to http://127.0.0.1:PORT/acme/env: the server asks for credentials and no token is configured"].assert_eq(&message);
    }

    #[test]
    fn redact_url_hides_user_information() {
        let check = |url: &str, expected: &str| assert_eq!(redact_url(url).0, expected);
        check("https://user:tok@h/x", "https://[redacted]@h/x");
        check(
            "https://TOKEN@github.com/a/b",
            "https://[redacted]@github.com/a/b",
        );
        check("https://github.com/a/b", "https://github.com/a/b");
        check("ssh://git@h:2222/x", "ssh://git@h:2222/x");
        check("ssh://git:pw@h/x", "ssh://[redacted]@h/x");
        check("git@github.com:a/b", "git@github.com:a/b");
        check("/srv/env", "/srv/env");
    }

    #[test]
    fn libgit2_messages_lose_their_secrets() {
        let source = Source {
            token: Some(Secret::new("sekrit")),
            ..Source::new("https://user:pass@h/x")
        };
        let error = git2::Error::from_str("https://user:pass@h/x said no to pass and sekrit");
        expect!["https://[redacted]@h/x said no to [redacted] and [redacted]"]
            .assert_eq(&Redactor::new(&source).error(&error, None).to_string());
    }

    #[test]
    fn ssh_port_comes_from_the_url() {
        let check = |url: &str, port: u16| assert_eq!(ssh_port(url), port, "{url}");
        check("git@github.com:a/b", 22);
        check("ssh://git@h/x", 22);
        check("ssh://git@h:2222/x", 2222);
        check("ssh://[::1]:2200/x", 2200);
        check("ssh://[::1]/x", 22);
    }

    #[test]
    fn commit_id_parses_full_hex_hashes_only() {
        let hash = "0123456789ABCDEF0123456789abcdef01234567";
        let id: CommitId = hash.parse().unwrap();
        assert_eq!(id.as_str(), hash.to_ascii_lowercase());
        assert_eq!(id.short(), "0123456789ab");
        assert_eq!(id.to_string(), id.as_str());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<CommitId>(&json).unwrap(), id);
        for bad in ["", "0123", &format!("{hash}0"), &hash.replace('0', "g")] {
            assert!(CommitId::parse(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<CommitId>("\"main\"").is_err());
    }

    // GitHub's published ed25519 host key, and a made-up key of the same shape.
    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIHRhaXMgaXMgbm90IGEgcmVhbCBrZXkgYXQgYWxsLg";

    fn check(known_hosts: &str, host: &str, port: u16, key: &str, expected: HostKeyStatus) {
        let key = decode_base64(key).unwrap();
        let status = check_known_hosts(known_hosts, host, port, "ssh-ed25519", &key);
        assert_eq!(status, expected, "{host}:{port} in\n{known_hosts}");
    }

    #[test]
    fn known_hosts_matches_plain_entries() {
        let file = format!(
            "# comment\n\ngithub.com ssh-ed25519 {KEY_A}\nother.example,Git.Example ssh-ed25519 {KEY_B} comment\n"
        );
        check(&file, "github.com", 22, KEY_A, HostKeyStatus::Known);
        check(&file, "git.example", 22, KEY_B, HostKeyStatus::Known);
        check(&file, "GitHub.com", 22, KEY_A, HostKeyStatus::Known);
    }

    #[test]
    fn known_hosts_reports_a_changed_key() {
        let file = format!("github.com ssh-ed25519 {KEY_A}\n");
        check(&file, "github.com", 22, KEY_B, HostKeyStatus::Mismatch);
    }

    #[test]
    fn known_hosts_reports_unknown_hosts() {
        let file = format!(
            "github.com ssh-ed25519 {KEY_A}\n|1|c2FsdA==|aGFzaA== ssh-ed25519 {KEY_A}\ngitlab.com ssh-rsa {KEY_A}\n"
        );
        check(&file, "gitlab.com", 22, KEY_A, HostKeyStatus::Unknown);
        check(&file, "github.com", 2222, KEY_A, HostKeyStatus::Unknown);
        check("", "github.com", 22, KEY_A, HostKeyStatus::Unknown);
    }

    #[test]
    fn known_hosts_matches_bracketed_ports() {
        let file = format!("[git.example]:2222 ssh-ed25519 {KEY_A}\n");
        check(&file, "git.example", 2222, KEY_A, HostKeyStatus::Known);
        check(&file, "git.example", 2222, KEY_B, HostKeyStatus::Mismatch);
        check(&file, "git.example", 22, KEY_A, HostKeyStatus::Unknown);
    }

    #[test]
    fn known_hosts_patterns_and_markers() {
        let file = format!(
            "*.example,!bad.example ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_B}\n@cert-authority * ssh-ed25519 {KEY_A}\n"
        );
        check(&file, "git.example", 22, KEY_A, HostKeyStatus::Known);
        check(&file, "bad.example", 22, KEY_A, HostKeyStatus::Unknown);
        check(&file, "git.example", 22, KEY_B, HostKeyStatus::Revoked);
    }

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("a*b").is_none());
    }
}
