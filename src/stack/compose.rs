//! The compose model: a compose file parsed, interpolated and normalised into one `Project`.
//!
//! Owns the Compose Specification rules that `docker compose up -d` applies before it talks to the
//! engine: file discovery, YAML anchors and `<<` merges, `x-` extensions, `.env` interpolation,
//! `env_file`, short and long syntaxes, relative paths. It does no engine IO and knows nothing of
//! git or of what is deployed. It reads only the files a stack names.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// Compose file names, in the order Docker Compose looks for them.
pub const FILE_NAMES: [&str; 6] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
    "podman-compose.yaml",
    "podman-compose.yml",
];

/// One stack's compose file, fully resolved: what the engine is asked to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Project {
    /// `name:` from the file, else the directory name, normalised as Compose does.
    pub name: String,
    /// The stack directory, absolute.
    pub working_dir: PathBuf,
    /// The compose file(s) read, absolute.
    pub config_files: Vec<PathBuf>,
    /// Services that `up -d` starts: profiles not enabled are already left out.
    pub services: BTreeMap<String, Service>,
    /// Networks by their key in the file; `default` is present whenever a service uses it.
    pub networks: BTreeMap<String, Network>,
    /// Named volumes by their key in the file.
    pub volumes: BTreeMap<String, Volume>,
    /// Every file outside the compose file that shaped this project (env files, `.env`),
    /// absolute; fingerprints hash them.
    pub files_read: Vec<PathBuf>,
    /// Every variable interpolation looked up, with the value it found (None when unset).
    /// Fingerprints hash these so that a change of the environment is a change of the stack.
    pub variables: BTreeMap<String, Option<String>>,
}

/// One service, normalised: every short syntax expanded, every path absolute.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Service {
    pub image: Option<String>,
    pub build: Option<Build>,
    pub pull_policy: Option<PullPolicy>,
    /// `None` keeps the image's own; `Some(vec![])` clears it, as `command: []` does.
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// Variables after `env_file` and `environment` are merged; a variable listed without a value
    /// and absent from the environment is left out, as Compose does.
    pub environment: BTreeMap<String, String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<Port>,
    /// Container ports exposed without publishing, as `"80"` or `"53/udp"`.
    pub expose: Vec<String>,
    pub volumes: Vec<Mount>,
    pub tmpfs: Vec<String>,
    /// Networks by their key in the project's `networks`, in the file's order of keys.
    pub networks: BTreeMap<String, ServiceNetwork>,
    pub network_mode: Option<String>,
    pub restart: Option<String>,
    pub healthcheck: Option<Healthcheck>,
    pub depends_on: BTreeMap<String, Dependency>,
    pub extra_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub devices: Vec<String>,
    pub init: Option<bool>,
    pub read_only: bool,
    pub security_opt: Vec<String>,
    pub sysctls: BTreeMap<String, String>,
    pub ulimits: BTreeMap<String, Ulimit>,
    pub logging: Option<Logging>,
    pub stop_signal: Option<String>,
    pub stop_grace_period: Option<Duration>,
    pub tty: bool,
    pub stdin_open: bool,
    /// Bytes.
    pub mem_limit: Option<i64>,
    pub mem_reservation: Option<i64>,
    /// CPUs as a fraction (`cpus: 0.5` or `deploy.resources.limits.cpus`).
    pub cpus: Option<f64>,
    /// Bytes.
    pub shm_size: Option<i64>,
    pub pids_limit: Option<i64>,
    pub container_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Build {
    /// Absolute path of the build context.
    pub context: PathBuf,
    /// Dockerfile path relative to the context.
    pub dockerfile: String,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    Always,
    Missing,
    Never,
    Build,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    pub target: u16,
    /// Host port or range (`"8080"`, `"8000-8010"`); `None` lets the engine choose.
    pub published: Option<String>,
    pub host_ip: Option<String>,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub kind: MountKind,
    /// Bind: absolute host path. Volume: the key in the project's `volumes` (or `None` for an
    /// anonymous volume). Tmpfs: `None`.
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    /// Bind propagation, SELinux relabel (`z`/`Z`) and other short-syntax options, verbatim.
    pub options: Vec<String>,
    /// Volume long syntax `volume.nocopy`.
    pub nocopy: bool,
    /// Tmpfs long syntax `tmpfs.size`, bytes.
    pub tmpfs_size: Option<i64>,
    /// Bind long syntax `bind.create_host_path` (the short syntax implies true).
    pub create_host_path: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceNetwork {
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Healthcheck {
    /// The test as the engine takes it: `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
}

impl Healthcheck {
    /// `disable: true` and `test: ["NONE"]` both turn off the image's own healthcheck.
    pub fn is_disabled(&self) -> bool {
        self.test.first().is_some_and(|t| t == "NONE")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependency {
    pub condition: Condition,
    /// `required: false` lets the dependent start when the dependency is missing or fails.
    pub required: bool,
    pub restart: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Logging {
    pub driver: Option<String>,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Network {
    /// The engine's name: `name:` if set, else `<project>_<key>`.
    pub name: String,
    pub external: bool,
    pub internal: bool,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub attachable: bool,
    pub enable_ipv6: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// The engine's name: `name:` if set, else `<project>_<key>`.
    pub name: String,
    pub external: bool,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// Why a compose file could not be turned into a `Project`. Each message names the file, and the
/// service and key where there is one, so that a user can fix the repository without guessing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no compose file in {dir} (looked for {names})", names = FILE_NAMES.join(", "))]
    NoComposeFile { dir: PathBuf },
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax; `message` carries the line and column where the parser knows them.
    #[error("{file}: invalid YAML: {message}")]
    Yaml { file: PathBuf, message: String },
    #[error("{file}: required variable {name} is missing a value: {message}")]
    MissingVariable {
        file: PathBuf,
        name: String,
        message: String,
    },
    #[error("{file}: invalid interpolation format for {key}: {value:?}")]
    Interpolation {
        file: PathBuf,
        key: String,
        value: String,
    },
    #[error("{file}: (root) additional property {key} is not allowed")]
    UnknownTopLevelKey { file: PathBuf, key: String },
    #[error("{file}: service {service}: key {key} is not supported by stackhook")]
    UnsupportedKey {
        file: PathBuf,
        service: String,
        key: String,
    },
    #[error("{file}: service {service} has neither an image nor a build context specified")]
    NoImage { file: PathBuf, service: String },
    /// Any other invalid value; `at` is a path such as `services.web.ports[0]`.
    #[error("{file}: {at}: {message}")]
    Invalid {
        file: PathBuf,
        at: String,
        message: String,
    },
}

pub fn load(
    _dir: &std::path::Path,
    _environment: &BTreeMap<String, String>,
) -> Result<Project, Error> {
    unimplemented!()
}
