//! Settings: a TOML file and `STACKHOOK_*` environment variables, validated into one `Config`.
//!
//! The only module that reads environment variables. Everything downstream takes typed values
//! (`Secret`, `Duration`, `PathBuf`) and never re-checks them.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::slot::Slot;
use crate::stack::sops::Keys;

/// A value that must never reach logs, the status page or the API. `Debug` and `Display` print
/// `[redacted]`; the value itself is reached only through `expose`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Everything stackhook needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The environment repository: a URL or a local path.
    pub repo: String,
    /// `None`: the remote's default branch.
    pub branch: Option<String>,
    /// The directory in the repository that holds one directory per stack.
    pub services_dir: PathBuf,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub webhook_secret: Option<Secret>,
    /// The secret token GitLab sends in `X-Gitlab-Token` (`STACKHOOK_GITLAB_TOKEN`), else the
    /// webhook secret.
    pub gitlab_token: Option<Secret>,
    /// The HMAC key of Gitea's and Forgejo's signatures (`STACKHOOK_GITEA_SECRET`), else the
    /// webhook secret.
    pub gitea_secret: Option<Secret>,
    /// The HMAC key of Bitbucket's signatures (`STACKHOOK_BITBUCKET_SECRET`), else the webhook
    /// secret.
    pub bitbucket_secret: Option<Secret>,
    pub api_token: Option<Secret>,
    pub poll_interval: Option<Duration>,
    pub prune: Prune,
    /// Engine sockets to try, in order.
    pub engine_hosts: Vec<String>,
    pub git_token: Option<Secret>,
    pub git_ssh_key: Option<PathBuf>,
    pub git_known_hosts: Option<PathBuf>,
    pub git_check_host_keys: bool,
    /// How long connecting to the git remote, and each read from it, may take.
    pub git_timeout: Duration,
    /// The slot this instance runs in when stackhook updates itself A/B (`STACKHOOK_SLOT`).
    pub slot: Option<Slot>,
    /// The stack that runs stackhook itself.
    pub self_stack: String,
    /// The other slot's address, to hand on requests that reach this one while it stands by.
    pub peer: Option<String>,
    /// How long a slot that handed over goes on answering `/health` with 200, handing every
    /// request on to the new active slot, so that the proxy has seen the new slot healthy before
    /// the old one answers 503 (a proxy retries a 503 only on a server it holds healthy).
    pub handover: Duration,
    /// How long a slot that handed over then keeps serving (answering 503 on `/health`) so that the
    /// proxy sees the change before it stops.
    pub drain: Duration,
    /// How long a client may take to send a request's headers, on a new connection or between
    /// requests on a kept-alive one; then the connection is closed (slowloris, issue 9).
    pub header_read_timeout: Duration,
    /// How long a client may take to send a deploy request's body, counted from its arrival.
    /// Waiting for a `?wait=true` deploy is not counted.
    pub request_timeout: Duration,
    /// How many connections are served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// How many deployments the history keeps, with their logs (`STACKHOOK_HISTORY`).
    pub history: usize,
    /// Whether the status page and the read API answer without the API token
    /// (`STACKHOOK_PUBLIC_STATUS`).
    pub public_status: bool,
    /// Whether a stack whose deployment fails goes back to its last good commit
    /// (`STACKHOOK_AUTO_ROLLBACK`).
    pub auto_rollback: bool,
    /// Whether a stack that drifted from what was deployed is put back (`STACKHOOK_HEAL`).
    pub heal: bool,
    /// Containers, or Swarm services (`STACKHOOK_ENGINE_MODE`).
    pub engine_mode: EngineMode,
    /// How long a Swarm service may take to converge on its new spec
    /// (`STACKHOOK_SWARM_TIMEOUT`).
    pub swarm_timeout: Duration,
    /// The host this instance deploys for (`STACKHOOK_HOST`): it takes the stacks of
    /// `hosts/<name>/` and those whose `x-stackhook.hosts` names it.
    pub host: Option<String>,
    /// Whether a stack that names no host is left out (`STACKHOOK_HOST_STRICT`).
    pub host_strict: bool,
    /// How often the registry is asked whether the tags that deployed services run name newer
    /// images (`STACKHOOK_IMAGE_CHECK`); `None`: never (issue 10).
    pub image_check: Option<Duration>,
    /// What an available image update leads to (`STACKHOOK_IMAGE_UPDATE`).
    pub image_update: ImageUpdate,
    /// The process environment that compose files are interpolated with, without stackhook's own
    /// `STACKHOOK_*` settings and SOPS's `SOPS_AGE_*` keys (which hold secrets).
    pub environment: BTreeMap<String, String>,
    /// The age keys that open SOPS-encrypted files (`STACKHOOK_AGE_KEY_FILE`,
    /// `SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY`; all of them are tried). Empty: none configured.
    pub age_keys: Keys,
    /// Where `<stack>.env` files with host-local values live, read after each stack's `.env`
    /// (`STACKHOOK_LOCAL_ENV_DIR`).
    pub local_env_dir: Option<PathBuf>,
    /// Where a message goes when a deployment ends, and for which deployments (issue 8).
    pub notify: Notify,
}

/// Whether stacks removed from the repository are taken down (`STACKHOOK_PRUNE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune {
    Off,
    /// Take down removed stacks, but refuse when the services directory is missing from the
    /// commit or every stack would go: more likely a mistake than a wish (issue 9).
    On,
    /// Take down removed stacks even then.
    Force,
}

/// What the image check does with an update it finds (`STACKHOOK_IMAGE_UPDATE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImageUpdate {
    /// Report it in the status, the API and the metrics; deploy nothing.
    #[default]
    Report,
    /// Also redeploy the services it concerns, pulling their images (`pull=always`).
    Pull,
}

/// The notification targets, and which deployments they hear of (`STACKHOOK_NOTIFY_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notify {
    /// None: no notification is sent.
    pub targets: Vec<NotifyTarget>,
    pub on: NotifyOn,
}

/// One place a notification goes. Its URL is a `Secret`: a Discord or Slack webhook URL carries
/// the webhook's token, an ntfy topic is its own password, and a JSON webhook's URL may carry a
/// token too. Only `host` may be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    pub kind: NotifyKind,
    /// An `http` or `https` URL, checked at start-up.
    pub url: Secret,
    pub host: String,
}

/// The service a notification target is, which decides the shape of what it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyKind {
    /// The report as JSON (`STACKHOOK_NOTIFY_URL`).
    Webhook,
    Discord,
    Slack,
    /// A topic URL; the access token, if any, goes in `Authorization: Bearer`.
    Ntfy {
        token: Option<Secret>,
    },
}

/// Which finished deployments are notified (`STACKHOOK_NOTIFY_ON`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NotifyOn {
    /// Every deployment that did something or failed.
    #[default]
    All,
    /// Only failed ones.
    Failures,
}

/// What a stack becomes on the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EngineMode {
    /// Containers, as `docker compose up` makes them.
    #[default]
    Standalone,
    /// Swarm services, as `docker stack deploy` makes them.
    Swarm,
    /// Swarm when the engine is a Swarm manager, else containers.
    Auto,
}

impl std::str::FromStr for EngineMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "standalone" => Ok(EngineMode::Standalone),
            "swarm" => Ok(EngineMode::Swarm),
            "auto" => Ok(EngineMode::Auto),
            other => Err(format!("{other:?} is none of standalone, swarm, auto")),
        }
    }
}

/// The config file's keys: the environment variables' names without `STACKHOOK_`, lowercase.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    repo: Option<String>,
    branch: Option<String>,
    services_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    listen: Option<String>,
    webhook_secret: Option<String>,
    webhook_secret_file: Option<PathBuf>,
    gitlab_token: Option<String>,
    gitlab_token_file: Option<PathBuf>,
    gitea_secret: Option<String>,
    gitea_secret_file: Option<PathBuf>,
    bitbucket_secret: Option<String>,
    bitbucket_secret_file: Option<PathBuf>,
    api_token: Option<String>,
    api_token_file: Option<PathBuf>,
    poll_interval: Option<String>,
    prune: Option<TomlPrune>,
    git_token: Option<String>,
    git_token_file: Option<PathBuf>,
    git_ssh_key_file: Option<PathBuf>,
    git_known_hosts_file: Option<PathBuf>,
    git_check_host_keys: Option<bool>,
    git_timeout: Option<String>,
    slot: Option<String>,
    self_stack: Option<String>,
    peer_url: Option<String>,
    handover: Option<String>,
    drain: Option<String>,
    header_read_timeout: Option<String>,
    request_timeout: Option<String>,
    max_connections: Option<usize>,
    history: Option<usize>,
    public_status: Option<bool>,
    auto_rollback: Option<bool>,
    heal: Option<bool>,
    engine_mode: Option<String>,
    swarm_timeout: Option<String>,
    host: Option<String>,
    host_strict: Option<bool>,
    image_check: Option<String>,
    image_update: Option<String>,
    notify_url: Option<String>,
    notify_url_file: Option<PathBuf>,
    notify_discord_url: Option<String>,
    notify_discord_url_file: Option<PathBuf>,
    notify_slack_url: Option<String>,
    notify_slack_url_file: Option<PathBuf>,
    notify_ntfy_url: Option<String>,
    notify_ntfy_url_file: Option<PathBuf>,
    notify_ntfy_token: Option<String>,
    notify_ntfy_token_file: Option<PathBuf>,
    notify_on: Option<String>,
    age_key_file: Option<PathBuf>,
    local_env_dir: Option<PathBuf>,
}

/// `prune = true`, or `prune = "force"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TomlPrune {
    Bool(bool),
    Text(String),
}

pub const DEFAULT_LISTEN: &str = "0.0.0.0:1337";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/stackhook";
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
pub const DEFAULT_ENGINE_HOSTS: [&str; 2] = [
    "unix:///var/run/docker.sock",
    "unix:///run/podman/podman.sock",
];

impl Config {
    /// Reads the optional config file and the process environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let environment: BTreeMap<String, String> = std::env::vars().collect();
        Config::from_sources(file, &environment)
    }

    /// Builds a config from a file and an explicit environment; the environment wins.
    pub fn from_sources(
        file: Option<&Path>,
        environment: &BTreeMap<String, String>,
    ) -> anyhow::Result<Config> {
        let file = match file {
            Some(path) => {
                let text = fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<File>(&text)
                    .with_context(|| format!("config file {}", path.display()))?
            }
            None => File::default(),
        };
        let env = |name: &str| {
            environment
                .get(&format!("STACKHOOK_{name}"))
                .filter(|value| !value.is_empty())
                .cloned()
        };
        let setting = |name: &str, from_file: Option<String>| env(name).or(from_file);
        let path_setting =
            |name: &str, from_file: Option<PathBuf>| env(name).map(PathBuf::from).or(from_file);
        // A secret set to nothing is a mistake to refuse, not a secret to leave unset: an empty
        // HMAC key or token would be guessable (issue 9). So its variable is read unfiltered.
        let secret = |name: &str, value: Option<String>, path: Option<PathBuf>| {
            let file_name = format!("{name}_FILE");
            let value = environment
                .get(&format!("STACKHOOK_{name}"))
                .cloned()
                .or(value);
            read_secret(name, value, path_setting(&file_name, path))
        };

        let repo = setting("REPO", file.repo).ok_or_else(|| {
            anyhow::anyhow!(
                "STACKHOOK_REPO is not set: name the environment repository (a URL or a path)"
            )
        })?;
        let listen = setting("LISTEN", file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen.parse().map_err(|_| {
            anyhow::anyhow!("STACKHOOK_LISTEN: {listen:?} is not an address like 0.0.0.0:1337")
        })?;
        let poll_interval = match setting("POLL_INTERVAL", file.poll_interval) {
            None => None,
            Some(text) if text == "off" || text == "0" => None,
            Some(text) => Some(humantime::parse_duration(&text).map_err(|error| {
                anyhow::anyhow!(
                    "STACKHOOK_POLL_INTERVAL: {text:?} is not a duration like 30s: {error}"
                )
            })?),
        };
        let prune = match (env("PRUNE"), file.prune) {
            (Some(text), _) | (None, Some(TomlPrune::Text(text))) => parse_prune(&text)?,
            (None, Some(TomlPrune::Bool(on))) => {
                if on {
                    Prune::On
                } else {
                    Prune::Off
                }
            }
            (None, None) => Prune::On,
        };
        let git_check_host_keys = bool_setting(
            "GIT_SSH_CHECK_HOST_KEYS",
            env("GIT_SSH_CHECK_HOST_KEYS"),
            file.git_check_host_keys,
            true,
        )?;
        let engine_hosts = ["DOCKER_HOST", "CONTAINER_HOST"]
            .iter()
            .find_map(|name| environment.get(*name).filter(|v| !v.is_empty()))
            .map(|host| vec![host.clone()])
            .unwrap_or_else(|| DEFAULT_ENGINE_HOSTS.map(String::from).to_vec());
        let slot = match setting("SLOT", file.slot) {
            None => None,
            Some(text) => Some(
                text.parse::<Slot>()
                    .map_err(|error| anyhow::anyhow!("STACKHOOK_SLOT: {error}"))?,
            ),
        };
        let self_stack =
            setting("SELF_STACK", file.self_stack).unwrap_or_else(|| "stackhook".into());
        let handover = match setting("HANDOVER", file.handover) {
            None => Duration::from_secs(2),
            Some(text) => humantime::parse_duration(&text).map_err(|error| {
                anyhow::anyhow!("STACKHOOK_HANDOVER: {text:?} is not a duration like 2s: {error}")
            })?,
        };
        let git_timeout = match setting("GIT_TIMEOUT", file.git_timeout) {
            None => Duration::from_secs(60),
            Some(text) => humantime::parse_duration(&text)
                .ok()
                .filter(|timeout| {
                    timeout.as_millis() > 0 && timeout.as_millis() <= i32::MAX as u128
                })
                .ok_or_else(|| {
                    anyhow::anyhow!("STACKHOOK_GIT_TIMEOUT: {text:?} is not a duration like 60s")
                })?,
        };
        let drain = match setting("DRAIN", file.drain) {
            None => Duration::from_secs(5),
            Some(text) => humantime::parse_duration(&text).map_err(|error| {
                anyhow::anyhow!("STACKHOOK_DRAIN: {text:?} is not a duration like 5s: {error}")
            })?,
        };
        let duration = |name: &str, from_file: Option<String>, default: Duration| match setting(
            name, from_file,
        ) {
            None => Ok(default),
            Some(text) => humantime::parse_duration(&text).map_err(|error| {
                anyhow::anyhow!("STACKHOOK_{name}: {text:?} is not a duration like 10s: {error}")
            }),
        };
        let header_read_timeout = duration(
            "HEADER_READ_TIMEOUT",
            file.header_read_timeout,
            DEFAULT_HEADER_READ_TIMEOUT,
        )?;
        let request_timeout = duration(
            "REQUEST_TIMEOUT",
            file.request_timeout,
            DEFAULT_REQUEST_TIMEOUT,
        )?;
        if header_read_timeout.is_zero() || request_timeout.is_zero() {
            anyhow::bail!(
                "STACKHOOK_HEADER_READ_TIMEOUT and STACKHOOK_REQUEST_TIMEOUT must be longer than 0"
            );
        }
        let max_connections = match env("MAX_CONNECTIONS") {
            None => file.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            Some(text) => text.parse().map_err(|_| {
                anyhow::anyhow!("STACKHOOK_MAX_CONNECTIONS: {text:?} is not a whole number")
            })?,
        };
        if max_connections == 0 {
            anyhow::bail!("STACKHOOK_MAX_CONNECTIONS must be at least 1");
        }
        let history = match env("HISTORY") {
            None => file.history.unwrap_or(crate::history::DEFAULT_KEEP),
            Some(text) => text.parse().map_err(|_| {
                anyhow::anyhow!("STACKHOOK_HISTORY: {text:?} is not a whole number")
            })?,
        };
        if history == 0 {
            anyhow::bail!("STACKHOOK_HISTORY must be at least 1");
        }
        let public_status = bool_setting(
            "PUBLIC_STATUS",
            env("PUBLIC_STATUS"),
            file.public_status,
            false,
        )?;
        let auto_rollback = bool_setting(
            "AUTO_ROLLBACK",
            env("AUTO_ROLLBACK"),
            file.auto_rollback,
            false,
        )?;
        let heal = bool_setting("HEAL", env("HEAL"), file.heal, false)?;
        let engine_mode = match setting("ENGINE_MODE", file.engine_mode) {
            None => EngineMode::default(),
            Some(text) => text
                .parse()
                .map_err(|error| anyhow::anyhow!("STACKHOOK_ENGINE_MODE: {error}"))?,
        };
        let swarm_timeout = duration(
            "SWARM_TIMEOUT",
            file.swarm_timeout,
            Duration::from_secs(300),
        )?;
        let host = setting("HOST", file.host);
        if let Some(host) = &host
            && (host.is_empty() || host.contains('/') || host.starts_with('.'))
        {
            anyhow::bail!("STACKHOOK_HOST: {host:?} is not a host name");
        }
        let host_strict = bool_setting("HOST_STRICT", env("HOST_STRICT"), file.host_strict, false)?;
        let image_check = match setting("IMAGE_CHECK", file.image_check) {
            None => None,
            Some(text) if text == "off" || text == "0" => None,
            Some(text) => Some(
                humantime::parse_duration(&text)
                    .ok()
                    .filter(|every| !every.is_zero())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "STACKHOOK_IMAGE_CHECK: {text:?} is not a duration like 6h, nor off"
                        )
                    })?,
            ),
        };
        let image_update = match setting("IMAGE_UPDATE", file.image_update) {
            None => ImageUpdate::default(),
            Some(text) => parse_image_update(&text)?,
        };
        if image_update == ImageUpdate::Pull && image_check.is_none() {
            anyhow::bail!(
                "STACKHOOK_IMAGE_UPDATE=pull needs STACKHOOK_IMAGE_CHECK: say how often to check, like 6h"
            );
        }
        // `./services` and `services/` name the same directory as `services`: compared
        // component by component with the commit's paths, they must be spelled alike, or no
        // stack would be found and every deployed one pruned.
        let services_dir: PathBuf = path_setting("SERVICES_DIR", file.services_dir)
            .unwrap_or_else(|| PathBuf::from("services"))
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        if services_dir.is_absolute()
            || services_dir
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            anyhow::bail!(
                "STACKHOOK_SERVICES_DIR: {} must be a path inside the repository",
                services_dir.display()
            );
        }

        let target = |name: &str, kind: NotifyKind, value, path| {
            secret(name, value, path)?
                .map(|url| notify_target(name, kind, url))
                .transpose()
        };
        let ntfy_token = secret(
            "NOTIFY_NTFY_TOKEN",
            file.notify_ntfy_token,
            file.notify_ntfy_token_file,
        )?;
        let ntfy_url = secret(
            "NOTIFY_NTFY_URL",
            file.notify_ntfy_url,
            file.notify_ntfy_url_file,
        )?;
        if ntfy_token.is_some() && ntfy_url.is_none() {
            anyhow::bail!(
                "STACKHOOK_NOTIFY_NTFY_TOKEN is set but STACKHOOK_NOTIFY_NTFY_URL is not: name the topic"
            );
        }
        let targets = [
            target(
                "NOTIFY_URL",
                NotifyKind::Webhook,
                file.notify_url,
                file.notify_url_file,
            )?,
            target(
                "NOTIFY_DISCORD_URL",
                NotifyKind::Discord,
                file.notify_discord_url,
                file.notify_discord_url_file,
            )?,
            target(
                "NOTIFY_SLACK_URL",
                NotifyKind::Slack,
                file.notify_slack_url,
                file.notify_slack_url_file,
            )?,
            ntfy_url
                .map(|url| {
                    notify_target(
                        "NOTIFY_NTFY_URL",
                        NotifyKind::Ntfy { token: ntfy_token },
                        url,
                    )
                })
                .transpose()?,
        ];
        let notify = Notify {
            targets: targets.into_iter().flatten().collect(),
            on: match setting("NOTIFY_ON", file.notify_on) {
                None => NotifyOn::default(),
                Some(text) => parse_notify_on(&text)?,
            },
        };
        let webhook_secret = secret(
            "WEBHOOK_SECRET",
            file.webhook_secret,
            file.webhook_secret_file,
        )?;
        // Every forge takes the webhook secret unless its own setting overrides it (issue 10).
        let forge_secret = |name: &str, value: Option<String>, path: Option<PathBuf>| {
            secret(name, value, path).map(|own| own.or_else(|| webhook_secret.clone()))
        };
        let gitlab_token = forge_secret("GITLAB_TOKEN", file.gitlab_token, file.gitlab_token_file)?;
        let gitea_secret = forge_secret("GITEA_SECRET", file.gitea_secret, file.gitea_secret_file)?;
        let bitbucket_secret = forge_secret(
            "BITBUCKET_SECRET",
            file.bitbucket_secret,
            file.bitbucket_secret_file,
        )?;
        let age_keys = age_keys(path_setting("AGE_KEY_FILE", file.age_key_file), environment)?;
        let local_env_dir = path_setting("LOCAL_ENV_DIR", file.local_env_dir);
        if let Some(dir) = &local_env_dir
            && !dir.is_dir()
        {
            anyhow::bail!(
                "STACKHOOK_LOCAL_ENV_DIR: {} is not a directory",
                dir.display()
            );
        }

        Ok(Config {
            repo,
            branch: setting("BRANCH", file.branch),
            services_dir,
            state_dir: path_setting("STATE_DIR", file.state_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            listen,
            webhook_secret,
            gitlab_token,
            gitea_secret,
            bitbucket_secret,
            api_token: secret("API_TOKEN", file.api_token, file.api_token_file)?,
            poll_interval,
            prune,
            engine_hosts,
            git_token: secret("GIT_TOKEN", file.git_token, file.git_token_file)?,
            git_ssh_key: path_setting("GIT_SSH_KEY_FILE", file.git_ssh_key_file),
            git_known_hosts: path_setting("GIT_KNOWN_HOSTS_FILE", file.git_known_hosts_file)
                .or_else(|| {
                    let home = environment.get("HOME").filter(|home| !home.is_empty())?;
                    Some(Path::new(home).join(".ssh/known_hosts"))
                }),
            git_check_host_keys,
            git_timeout,
            slot,
            self_stack,
            peer: setting("PEER_URL", file.peer_url),
            handover,
            drain,
            header_read_timeout,
            request_timeout,
            max_connections,
            history,
            public_status,
            auto_rollback,
            heal,
            engine_mode,
            swarm_timeout,
            host,
            host_strict,
            image_check,
            image_update,
            environment: environment
                .iter()
                .filter(|(name, _)| {
                    !name.starts_with("STACKHOOK_") && !name.starts_with("SOPS_AGE_")
                })
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            notify,
            age_keys,
            local_env_dir,
        })
    }
}

impl Config {
    /// Where stack `name` may live in the repository, relative to its root, the first found
    /// winning: `hosts/<host>/<name>` for this instance's host, then `<services_dir>/<name>`.
    pub fn stack_paths(&self, name: &str) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        if let Some(host) = &self.host {
            paths.push(Path::new(HOSTS_DIR).join(host).join(name));
        }
        paths.push(self.services_dir.join(name));
        paths
    }
}

/// The directory whose `<host>/` directories hold the stacks of one host each.
pub const HOSTS_DIR: &str = "hosts";

/// The age keys of `STACKHOOK_AGE_KEY_FILE` (or the file's `age_key_file`), SOPS's own
/// `SOPS_AGE_KEY_FILE` and `SOPS_AGE_KEY`, together, as SOPS tries every key it is given. A key
/// file that cannot be read or holds no key stops start-up; the message never shows a key.
fn age_keys(
    own_file: Option<PathBuf>,
    environment: &BTreeMap<String, String>,
) -> anyhow::Result<Keys> {
    let sops_file = environment
        .get("SOPS_AGE_KEY_FILE")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from);
    let mut keys = Keys::default();
    for (name, path) in [
        ("STACKHOOK_AGE_KEY_FILE", own_file),
        ("SOPS_AGE_KEY_FILE", sops_file),
    ] {
        let Some(path) = path else { continue };
        let text = fs::read_to_string(&path)
            .with_context(|| format!("{name}: reading {}", path.display()))?;
        let found = Keys::parse(&text)
            .map_err(|error| anyhow::anyhow!("{name}: {}: {error}", path.display()))?;
        keys = keys.join(&found);
    }
    if let Some(text) = environment
        .get("SOPS_AGE_KEY")
        .filter(|text| !text.trim().is_empty())
    {
        let found = Keys::parse(text).map_err(|error| anyhow::anyhow!("SOPS_AGE_KEY: {error}"))?;
        keys = keys.join(&found);
    }
    Ok(keys)
}

fn read_secret(
    name: &str,
    value: Option<String>,
    path: Option<PathBuf>,
) -> anyhow::Result<Option<Secret>> {
    match (value, path) {
        (Some(_), Some(_)) => {
            anyhow::bail!("STACKHOOK_{name} and STACKHOOK_{name}_FILE are both set: use one")
        }
        (Some(value), None) => {
            if value.trim().is_empty() {
                anyhow::bail!(
                    "STACKHOOK_{name} is empty or only whitespace: set a value or unset it"
                );
            }
            Ok(Some(Secret::new(value)))
        }
        (None, Some(path)) => {
            let value = fs::read_to_string(&path)
                .with_context(|| format!("STACKHOOK_{name}_FILE: reading {}", path.display()))?;
            let value = value.trim_end_matches(['\r', '\n']);
            if value.trim().is_empty() {
                anyhow::bail!(
                    "STACKHOOK_{name}_FILE: {} is empty or only whitespace",
                    path.display()
                );
            }
            Ok(Some(Secret::new(value)))
        }
        (None, None) => Ok(None),
    }
}

/// Checks a notification target's URL. Errors name the setting but never show the URL, which is a
/// secret.
fn notify_target(name: &str, kind: NotifyKind, url: Secret) -> anyhow::Result<NotifyTarget> {
    let parsed = reqwest::Url::parse(url.expose().trim())
        .map_err(|error| anyhow::anyhow!("STACKHOOK_{name} is not a URL: {error}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!(
            "STACKHOOK_{name} must be an http:// or https:// URL, not {}:",
            parsed.scheme()
        );
    }
    let host = match parsed.host_str() {
        Some(host) if !host.is_empty() => host.to_owned(),
        _ => anyhow::bail!("STACKHOOK_{name} must be an http:// or https:// URL with a host"),
    };
    if matches!(kind, NotifyKind::Ntfy { .. }) && parsed.path().trim_matches('/').is_empty() {
        anyhow::bail!("STACKHOOK_{name} must name a topic, like https://ntfy.sh/mytopic");
    }
    Ok(NotifyTarget {
        kind,
        url: Secret::new(parsed.as_str()),
        host,
    })
}

fn parse_notify_on(text: &str) -> anyhow::Result<NotifyOn> {
    match text.to_ascii_lowercase().as_str() {
        "all" => Ok(NotifyOn::All),
        "failures" => Ok(NotifyOn::Failures),
        _ => anyhow::bail!("STACKHOOK_NOTIFY_ON: {text:?} is not all or failures"),
    }
}

fn parse_image_update(text: &str) -> anyhow::Result<ImageUpdate> {
    match text.to_ascii_lowercase().as_str() {
        "report" => Ok(ImageUpdate::Report),
        "pull" => Ok(ImageUpdate::Pull),
        _ => anyhow::bail!("STACKHOOK_IMAGE_UPDATE: {text:?} is not report or pull"),
    }
}

fn parse_prune(text: &str) -> anyhow::Result<Prune> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(Prune::On),
        "false" | "0" | "no" | "off" => Ok(Prune::Off),
        "force" => Ok(Prune::Force),
        _ => anyhow::bail!("STACKHOOK_PRUNE: {text:?} is not true, false or force"),
    }
}

fn bool_setting(
    name: &str,
    from_env: Option<String>,
    from_file: Option<bool>,
    default: bool,
) -> anyhow::Result<bool> {
    match from_env {
        None => Ok(from_file.unwrap_or(default)),
        Some(text) => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => anyhow::bail!("STACKHOOK_{name}: {text:?} is not true or false"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn load(pairs: &[(&str, &str)], file: Option<&str>) -> anyhow::Result<Config> {
        let environment = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stackhook.toml");
        if let Some(text) = file {
            fs::write(&path, text).unwrap();
        }
        Config::from_sources(file.map(|_| path.as_path()), &environment)
    }

    fn check_error(pairs: &[(&str, &str)], file: Option<&str>, expected: expect_test::Expect) {
        let error = load(pairs, file).unwrap_err();
        expected.assert_eq(&format!("{error:#}"));
    }

    #[test]
    fn prune_force_and_services_dir_spellings() {
        for (pairs, file) in [
            (&[("STACKHOOK_PRUNE", "force")][..], None),
            (&[][..], Some("prune = \"force\"\n")),
        ] {
            let mut pairs = pairs.to_vec();
            pairs.push(("STACKHOOK_REPO", "r"));
            assert_eq!(load(&pairs, file).unwrap().prune, Prune::Force);
        }
        for spelling in ["./services", "services/", "./services/"] {
            let pairs = [
                ("STACKHOOK_REPO", "r"),
                ("STACKHOOK_SERVICES_DIR", spelling),
            ];
            let config = load(&pairs, None).unwrap();
            assert_eq!(config.services_dir, Path::new("services"), "{spelling}");
        }
    }

    #[test]
    fn empty_secrets_are_refused_from_every_source() {
        let blank = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(blank.path(), " \n").unwrap();
        let blank = blank.path().to_str().unwrap().to_owned();
        check_error(
            &[("STACKHOOK_REPO", "r"), ("STACKHOOK_WEBHOOK_SECRET", "")],
            None,
            expect![[
                r#"STACKHOOK_WEBHOOK_SECRET is empty or only whitespace: set a value or unset it"#
            ]],
        );
        check_error(
            &[("STACKHOOK_REPO", "r"), ("STACKHOOK_API_TOKEN", "  ")],
            None,
            expect![[
                r#"STACKHOOK_API_TOKEN is empty or only whitespace: set a value or unset it"#
            ]],
        );
        check_error(
            &[("STACKHOOK_REPO", "r")],
            Some("api_token = \"\"\n"),
            expect![[
                r#"STACKHOOK_API_TOKEN is empty or only whitespace: set a value or unset it"#
            ]],
        );
        let error = load(
            &[
                ("STACKHOOK_REPO", "r"),
                ("STACKHOOK_WEBHOOK_SECRET_FILE", &blank),
            ],
            None,
        )
        .unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            format!("STACKHOOK_WEBHOOK_SECRET_FILE: {blank} is empty or only whitespace")
        );
    }

    #[test]
    fn each_forge_takes_the_webhook_secret_unless_its_own_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gitea");
        fs::write(&path, "gitea secret\n").unwrap();
        let config = load(
            &[
                ("STACKHOOK_REPO", "r"),
                ("STACKHOOK_WEBHOOK_SECRET", "shared"),
                ("STACKHOOK_GITLAB_TOKEN", "gitlab token"),
                ("STACKHOOK_GITEA_SECRET_FILE", path.to_str().unwrap()),
            ],
            None,
        )
        .unwrap();
        let exposed = |secret: &Option<Secret>| secret.as_ref().map(|s| s.expose().to_owned());
        assert_eq!(
            exposed(&config.gitlab_token).as_deref(),
            Some("gitlab token")
        );
        assert_eq!(
            exposed(&config.gitea_secret).as_deref(),
            Some("gitea secret")
        );
        assert_eq!(exposed(&config.bitbucket_secret).as_deref(), Some("shared"));
        let config = load(
            &[("STACKHOOK_REPO", "r")],
            Some("bitbucket_secret = \"from the file\"\n"),
        )
        .unwrap();
        assert_eq!(
            exposed(&config.bitbucket_secret).as_deref(),
            Some("from the file")
        );
        assert_eq!(config.gitlab_token, None);
        assert_eq!(config.webhook_secret, None);
        check_error(
            &[
                ("STACKHOOK_REPO", "r"),
                ("STACKHOOK_WEBHOOK_SECRET", "shared"),
                ("STACKHOOK_GITLAB_TOKEN", ""),
            ],
            None,
            expect![[
                r#"STACKHOOK_GITLAB_TOKEN is empty or only whitespace: set a value or unset it"#
            ]],
        );
        check_error(
            &[
                ("STACKHOOK_REPO", "r"),
                ("STACKHOOK_BITBUCKET_SECRET", "x"),
                ("STACKHOOK_BITBUCKET_SECRET_FILE", "/x"),
            ],
            None,
            expect![[
                r#"STACKHOOK_BITBUCKET_SECRET and STACKHOOK_BITBUCKET_SECRET_FILE are both set: use one"#
            ]],
        );
    }

    #[test]
    fn defaults() {
        let config = load(&[("STACKHOOK_REPO", "/srv/env"), ("HOME", "/root")], None).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.services_dir, PathBuf::from("services"));
        assert_eq!(config.poll_interval, None);
        assert_eq!(config.image_check, None, "the image check is opt-in");
        assert_eq!(config.image_update, ImageUpdate::Report);
        assert_eq!(config.prune, Prune::On);
        assert_eq!(config.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(config.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(config.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert!(config.git_check_host_keys);
        assert_eq!(config.engine_hosts, DEFAULT_ENGINE_HOSTS.map(String::from));
        assert_eq!(config.environment.keys().collect::<Vec<_>>(), ["HOME"]);
        assert_eq!(
            config.git_known_hosts,
            Some(PathBuf::from("/root/.ssh/known_hosts"))
        );
    }

    #[test]
    fn age_keys_from_every_source_together_and_never_in_compose_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = |n: u8| {
            use age::secrecy::ExposeSecret;
            let identity = age::x25519::Identity::generate();
            let path = dir.path().join(format!("key{n}.txt"));
            let text = format!(
                "# created by a test\n{}\n",
                identity.to_string().expose_secret()
            );
            fs::write(&path, &text).unwrap();
            (path.display().to_string(), text)
        };
        let ((own, own_text), (sops_file, sops_text), (_, sops_key)) = (key(1), key(2), key(3));
        let config = load(
            &[
                ("STACKHOOK_REPO", "r"),
                ("STACKHOOK_LOCAL_ENV_DIR", dir.path().to_str().unwrap()),
                ("SOPS_AGE_KEY_FILE", &sops_file),
                ("SOPS_AGE_KEY", &sops_key),
            ],
            Some(&format!("age_key_file = \"{own}\"\n")),
        )
        .unwrap();
        let all = [own_text, sops_text, sops_key].concat();
        assert_eq!(config.age_keys, Keys::parse(&all).unwrap());
        assert_eq!(config.local_env_dir.as_deref(), Some(dir.path()));
        assert!(config.environment.is_empty(), "{:?}", config.environment);
        assert!(!format!("{config:?}").contains("AGE-SECRET-KEY"));
        assert!(
            load(&[("STACKHOOK_REPO", "r")], None)
                .unwrap()
                .age_keys
                .is_empty()
        );
    }

    #[test]
    fn bad_age_keys_and_local_env_dirs_stop_start_up() {
        check_error(
            &[
                ("STACKHOOK_REPO", "r"),
                ("STACKHOOK_AGE_KEY_FILE", "/nonexistent/keys.txt"),
            ],
            None,
            expect![[
                r#"STACKHOOK_AGE_KEY_FILE: reading /nonexistent/keys.txt: No such file or directory (os error 2)"#
            ]],
        );
        check_error(
            &[
                ("STACKHOOK_REPO", "r"),
                ("SOPS_AGE_KEY", "AGE-SECRET-KEY-1SECRETBUTWRONG"),
            ],
            None,
            expect![[
                r#"SOPS_AGE_KEY: line 1: not an age secret key (AGE-SECRET-KEY-1…); plugin and SSH keys are not supported"#
            ]],
        );
        check_error(
            &[
                ("STACKHOOK_REPO", "r"),
                ("STACKHOOK_LOCAL_ENV_DIR", "/nonexistent"),
            ],
            None,
            expect![[r#"STACKHOOK_LOCAL_ENV_DIR: /nonexistent is not a directory"#]],
        );
    }

    #[test]
    fn environment_wins_over_file() {
        let config = load(
            &[
                ("STACKHOOK_BRANCH", "prod"),
                ("STACKHOOK_POLL_INTERVAL", "1m"),
            ],
            Some(
                "repo = \"/srv/env\"\nbranch = \"main\"\npoll_interval = \"30s\"\nprune = false\n",
            ),
        )
        .unwrap();
        assert_eq!(config.repo, "/srv/env");
        assert_eq!(config.branch.as_deref(), Some("prod"));
        assert_eq!(config.poll_interval, Some(Duration::from_secs(60)));
        assert_eq!(config.prune, Prune::Off);
    }

    #[test]
    fn the_image_check_from_the_file_and_the_environment() {
        let file = "repo = \"r\"\nimage_check = \"6h\"\nimage_update = \"pull\"\n";
        let config = load(&[], Some(file)).unwrap();
        assert_eq!(config.image_check, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(config.image_update, ImageUpdate::Pull);
        let config = load(
            &[
                ("STACKHOOK_IMAGE_CHECK", "1s"),
                ("STACKHOOK_IMAGE_UPDATE", "report"),
            ],
            Some(file),
        )
        .unwrap();
        assert_eq!(config.image_check, Some(Duration::from_secs(1)));
        assert_eq!(config.image_update, ImageUpdate::Report);
        let config = load(&[("STACKHOOK_IMAGE_CHECK", "off")], Some(file));
        assert!(config.is_err(), "pull without a check is refused");
    }

    #[test]
    fn secrets_from_files_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        fs::write(&path, "s3cret\n").unwrap();
        let config = load(
            &[
                ("STACKHOOK_REPO", "/srv/env"),
                ("STACKHOOK_WEBHOOK_SECRET_FILE", path.to_str().unwrap()),
                ("STACKHOOK_API_TOKEN", "token"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(config.webhook_secret.as_ref().unwrap().expose(), "s3cret");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("token\""),
            "{debug}"
        );
    }

    #[test]
    fn notification_targets_hold_their_urls_as_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("discord");
        fs::write(&path, "https://discord.com/api/webhooks/1/discord-token\n").unwrap();
        let config = load(
            &[
                ("STACKHOOK_REPO", "r"),
                ("STACKHOOK_NOTIFY_URL", "http://hooks.internal:8080/deploys"),
                ("STACKHOOK_NOTIFY_DISCORD_URL_FILE", path.to_str().unwrap()),
                ("STACKHOOK_NOTIFY_NTFY_URL", "https://ntfy.sh/topic-token"),
                ("STACKHOOK_NOTIFY_NTFY_TOKEN", "tk_token"),
                ("STACKHOOK_NOTIFY_ON", "Failures"),
            ],
            Some("notify_slack_url = \"https://hooks.slack.com/services/T/B/slack-token\"\n"),
        )
        .unwrap();
        let targets: Vec<_> = config
            .notify
            .targets
            .iter()
            .map(|target| (target.host.as_str(), target.url.expose()))
            .collect();
        assert_eq!(
            targets,
            [
                ("hooks.internal", "http://hooks.internal:8080/deploys"),
                (
                    "discord.com",
                    "https://discord.com/api/webhooks/1/discord-token"
                ),
                (
                    "hooks.slack.com",
                    "https://hooks.slack.com/services/T/B/slack-token"
                ),
                ("ntfy.sh", "https://ntfy.sh/topic-token"),
            ]
        );
        assert_eq!(
            config.notify.targets[3].kind,
            NotifyKind::Ntfy {
                token: Some(Secret::new("tk_token"))
            }
        );
        assert_eq!(config.notify.on, NotifyOn::Failures);
        let debug = format!("{config:?}");
        for secret in [
            "discord-token",
            "slack-token",
            "topic-token",
            "tk_token",
            "/deploys",
        ] {
            assert!(!debug.contains(secret), "{debug}");
        }
        let nothing = load(&[("STACKHOOK_REPO", "r")], None).unwrap();
        assert_eq!(nothing.notify, Notify::default());
        assert_eq!(nothing.notify.on, NotifyOn::All);
    }

    #[test]
    fn bad_notification_settings_name_themselves_but_not_the_url() {
        check_error(
            &[
                ("STACKHOOK_REPO", "r"),
                (
                    "STACKHOOK_NOTIFY_DISCORD_URL",
                    "discord.com/api/webhooks/1/token",
                ),
            ],
            None,
            expect!["STACKHOOK_NOTIFY_DISCORD_URL is not a URL: relative URL without a base"],
        );
        check_error(
            &[
                ("STACKHOOK_REPO", "r"),
                ("STACKHOOK_NOTIFY_SLACK_URL", "ftp://hooks.slack.com/token"),
            ],
            None,
            expect!["STACKHOOK_NOTIFY_SLACK_URL must be an http:// or https:// URL, not ftp:"],
        );
        check_error(
            &[
                ("STACKHOOK_REPO", "r"),
                ("STACKHOOK_NOTIFY_NTFY_URL", "https://ntfy.sh/"),
            ],
            None,
            expect!["STACKHOOK_NOTIFY_NTFY_URL must name a topic, like https://ntfy.sh/mytopic"],
        );
        check_error(
            &[
                ("STACKHOOK_REPO", "r"),
                ("STACKHOOK_NOTIFY_NTFY_TOKEN", "tk_x"),
            ],
            None,
            expect![
                "STACKHOOK_NOTIFY_NTFY_TOKEN is set but STACKHOOK_NOTIFY_NTFY_URL is not: name the topic"
            ],
        );
        check_error(
            &[
                ("STACKHOOK_REPO", "r"),
                ("STACKHOOK_NOTIFY_ON", "sometimes"),
            ],
            None,
            expect![[r#"STACKHOOK_NOTIFY_ON: "sometimes" is not all or failures"#]],
        );
        check_error(
            &[("STACKHOOK_REPO", "r"), ("STACKHOOK_NOTIFY_URL", "")],
            None,
            expect!["STACKHOOK_NOTIFY_URL is empty or only whitespace: set a value or unset it"],
        );
    }

    #[test]
    fn bad_settings_name_themselves() {
        check_error(
            &[],
            None,
            expect![[
                r#"STACKHOOK_REPO is not set: name the environment repository (a URL or a path)"#
            ]],
        );
        check_error(
            &[("STACKHOOK_REPO", "r"), ("STACKHOOK_LISTEN", "nowhere")],
            None,
            expect![[r#"STACKHOOK_LISTEN: "nowhere" is not an address like 0.0.0.0:1337"#]],
        );
        check_error(
            &[("STACKHOOK_REPO", "r"), ("STACKHOOK_POLL_INTERVAL", "soon")],
            None,
            expect![[
                r#"STACKHOOK_POLL_INTERVAL: "soon" is not a duration like 30s: expected number at 0"#
            ]],
        );
        check_error(
            &[("STACKHOOK_REPO", "r"), ("STACKHOOK_REQUEST_TIMEOUT", "0s")],
            None,
            expect![[
                r#"STACKHOOK_HEADER_READ_TIMEOUT and STACKHOOK_REQUEST_TIMEOUT must be longer than 0"#
            ]],
        );
        check_error(
            &[
                ("STACKHOOK_REPO", "r"),
                ("STACKHOOK_MAX_CONNECTIONS", "many"),
            ],
            None,
            expect![[r#"STACKHOOK_MAX_CONNECTIONS: "many" is not a whole number"#]],
        );
        check_error(
            &[("STACKHOOK_REPO", "r"), ("STACKHOOK_PRUNE", "maybe")],
            None,
            expect![[r#"STACKHOOK_PRUNE: "maybe" is not true, false or force"#]],
        );
        check_error(
            &[
                ("STACKHOOK_REPO", "r"),
                ("STACKHOOK_API_TOKEN_FILE", "/nonexistent/token"),
            ],
            None,
            expect![[
                r#"STACKHOOK_API_TOKEN_FILE: reading /nonexistent/token: No such file or directory (os error 2)"#
            ]],
        );
        check_error(
            &[("STACKHOOK_REPO", "r"), ("STACKHOOK_IMAGE_CHECK", "daily")],
            None,
            expect![[r#"STACKHOOK_IMAGE_CHECK: "daily" is not a duration like 6h, nor off"#]],
        );
        check_error(
            &[("STACKHOOK_REPO", "r"), ("STACKHOOK_IMAGE_UPDATE", "pull")],
            None,
            expect![[
                r#"STACKHOOK_IMAGE_UPDATE=pull needs STACKHOOK_IMAGE_CHECK: say how often to check, like 6h"#
            ]],
        );
        check_error(
            &[
                ("STACKHOOK_REPO", "r"),
                ("STACKHOOK_IMAGE_CHECK", "6h"),
                ("STACKHOOK_IMAGE_UPDATE", "always"),
            ],
            None,
            expect![[r#"STACKHOOK_IMAGE_UPDATE: "always" is not report or pull"#]],
        );
        check_error(
            &[("STACKHOOK_REPO", "r"), ("STACKHOOK_SERVICES_DIR", "../x")],
            None,
            expect![[r#"STACKHOOK_SERVICES_DIR: ../x must be a path inside the repository"#]],
        );
    }
}
