//! The compose model: a compose file parsed, interpolated and normalised into one `Project`.
//!
//! Owns the Compose Specification rules that `docker compose up -d` applies before it talks to the
//! engine: file discovery, YAML anchors and `<<` merges, `x-` extensions, `.env` interpolation,
//! `env_file`, short and long syntaxes, relative paths. It does no engine IO and knows nothing of
//! git or of what is deployed. It reads only the files a stack names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use yaml_serde::Value;

use self::node::Node;
use super::interpolate;
use super::sops;

mod dotenv;
mod extends;
mod include;
mod merge;
mod node;
mod project;
mod service;
#[cfg(test)]
mod tests;

pub use self::service::{SERVICE_KEYS, Support};

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
    /// Every file outside the compose file that shaped this project (`.env`, env and label
    /// files, extended and included compose files), absolute. Fingerprints do not hash them:
    /// what they changed shows in the services' config hashes and in `variables`.
    pub files_read: Vec<PathBuf>,
    /// Every variable interpolation looked up, with the value it found (None when unset).
    /// Fingerprints hash these so that a change of the environment is a change of the stack.
    pub variables: BTreeMap<String, Option<String>>,
    /// The SOPS-encrypted files read (`.env`, env files, the files of secrets and configs),
    /// absolute, with what they hold once opened. Never serialised: fingerprints take keyed
    /// digests of it, and a secret's or config's file is written out only for its container.
    #[serde(skip)]
    pub sealed: BTreeMap<PathBuf, sops::Plaintext>,
    /// What the file asks for that `up -d` ignores without Swarm, as Compose ignores it, each
    /// naming the service and the key: shown with the stack's plan.
    pub notes: Vec<String>,
}

impl Project {
    /// What containers cannot do that Swarm services can: a start-first update runs the old and
    /// the new container side by side, which a fixed container name or a published host port
    /// forbids (Swarm's routing mesh shares a published port between tasks).
    pub fn check_standalone(&self) -> Result<(), Error> {
        for (name, service) in &self.services {
            if service.update_order != Some(UpdateOrder::StartFirst) {
                continue;
            }
            let fixed = match (
                &service.container_name,
                service.ports.iter().find_map(|p| p.published.as_ref()),
            ) {
                (Some(container_name), _) => format!("its fixed container_name {container_name}"),
                (None, Some(port)) => format!("its published host port {port}"),
                (None, None) => continue,
            };
            return Err(Error::Invalid {
                file: self.config_files[0].clone(),
                at: format!("services.{name}"),
                message: format!(
                    "deploy.update_config.order: start-first runs the old and the new container at once, which {fixed} does not allow; use stop-first"
                ),
            });
        }
        Ok(())
    }
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
    /// Variables after `env_file` and `environment` are merged. A variable listed in
    /// `environment` without a value and absent from the environment is `None`: Docker Compose
    /// v2.40 sends such a name bare (`"WEBSOCKET_ENABLED"`, no `=`), and the engine keeps it so.
    pub environment: BTreeMap<String, Option<String>>,
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
    /// How many containers run the service (`scale`, `deploy.replicas`); `None` is one. Left
    /// out of the config hash, as Compose leaves it out: scaling adds or removes containers and
    /// recreates none.
    #[serde(skip)]
    pub scale: Option<u32>,
    // The keys below came after services were first deployed: left out of the model's JSON
    // while unset, so that the config hashes of services that do not use them stay as they were
    // and an upgrade of stackhook recreates nothing.
    /// `os/arch[/variant]`: the create request's `platform`, and the build's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Namespace modes as the engine takes them (`host`, `private`, `container:<name>`); a
    /// `service:<name>` is resolved to that service's container when it is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uts: Option<String>,
    /// `cgroup:` (`host` or `private`), the cgroup namespace mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userns_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// `isolation:`, sent to the engine as Compose sends it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// `service[:alias]` entries; the container is linked on each network it joins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// `container[:alias]` entries, for containers outside the project.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external_links: Vec<String>,
    /// `service[:mode]` or `container:name[:mode]`, as written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes_from: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_opt: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_period: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_rt_runtime: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_rt_period: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_count: Option<i64>,
    /// Percent, as written (`cpu_percent: 50`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    /// Bytes; `-1` is unlimited swap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memswap_limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_swappiness: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub oom_kill_disable: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_cgroup_rules: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_opt: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `gpus:` and `deploy.resources.reservations.devices`, in that order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_requests: Vec<DeviceRequest>,
    /// `secrets:` then `configs:`, each resolved to what the container gets at its path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ServiceFile>,
    /// `deploy.update_config.order`: how a changed service is replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_order: Option<UpdateOrder>,
    /// `deploy.update_config.monitor`: how long a new container must keep running before its
    /// update counts as done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_monitor: Option<Duration>,
    /// `blkio_config`: block IO weights and limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blkio: Option<Blkio>,
    /// Commands run in each container after it starts, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub post_start: Vec<Hook>,
    /// Commands run in a container before it is stopped for good (scaled down), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pre_stop: Vec<Hook>,
    /// `deploy:` as Swarm reads it (issue 12). Left out of the config hash: without Swarm these
    /// keys change nothing that runs.
    #[serde(skip)]
    pub swarm: SwarmDeploy,
}

/// Everything of `deploy:` that `docker stack deploy` applies, as written. Replicas are the
/// service's `scale`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SwarmDeploy {
    /// `replicated` (the default), `global`, `replicated-job` or `global-job`.
    pub mode: Option<String>,
    /// `vip` or `dnsrr`.
    pub endpoint_mode: Option<String>,
    /// The service's labels (the containers' are the service's `labels:`).
    pub labels: BTreeMap<String, String>,
    pub placement: Placement,
    /// `resources.limits`, when the file has that section.
    pub limits: Option<SwarmResources>,
    /// `resources.reservations`, when the file has that section.
    pub reservations: Option<SwarmResources>,
    pub restart_policy: Option<RestartPolicy>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub constraints: Vec<String>,
    /// The `spread` descriptors of `preferences`, in order.
    pub preferences: Vec<String>,
    pub max_replicas_per_node: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SwarmResources {
    pub cpus: Option<f64>,
    /// Bytes.
    pub memory: Option<i64>,
    pub pids: Option<i64>,
    /// `generic_resources` as `(kind, value)` of their `discrete_resource_spec`.
    pub generic: Vec<(String, i64)>,
}

/// `deploy.restart_policy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestartPolicy {
    /// `none`, `on-failure` or `any`.
    pub condition: Option<String>,
    pub delay: Option<Duration>,
    pub max_attempts: Option<u64>,
    pub window: Option<Duration>,
}

/// `deploy.update_config` or `deploy.rollback_config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpdateConfig {
    pub parallelism: Option<u64>,
    pub delay: Option<Duration>,
    /// `continue`, `rollback` or `pause`.
    pub failure_action: Option<String>,
    pub monitor: Option<Duration>,
    pub max_failure_ratio: Option<f64>,
    pub order: Option<UpdateOrder>,
}

/// A lifecycle hook (`post_start`, `pre_stop`): a command the engine runs in the service's
/// container through its exec API, as Docker Compose 2.30 and later run it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Hook {
    pub command: Vec<String>,
    pub user: Option<String>,
    pub privileged: bool,
    pub working_dir: Option<String>,
    /// A name without a value is sent bare, as for the service's environment.
    pub environment: BTreeMap<String, Option<String>>,
}

/// `blkio_config`, as the engine's `HostConfig.Blkio*` fields take it (docker/compose
/// `setBlkio`). Rates are per second: bytes for the `_bps` lists, operations for the `_iops`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Blkio {
    /// A relative weight, 10 to 1000; `None` (or 0) leaves the engine's default.
    pub weight: Option<u16>,
    pub weight_device: Vec<DeviceWeight>,
    pub device_read_bps: Vec<DeviceRate>,
    pub device_read_iops: Vec<DeviceRate>,
    pub device_write_bps: Vec<DeviceRate>,
    pub device_write_iops: Vec<DeviceRate>,
}

/// A block device's relative weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceWeight {
    pub path: String,
    pub weight: u16,
}

/// A block device's rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRate {
    pub path: String,
    pub rate: i64,
}

/// A secret or config as one service uses it. Without Swarm, Compose bind-mounts a `file:`
/// read-only and writes `content:` and `environment:` into the container before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceFile {
    /// `secrets` or `configs`, and the key in that top-level section.
    pub kind: FileKind,
    pub name: String,
    /// Absolute path in the container.
    pub target: String,
    pub source: FileSource,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Permission bits of a written file; Compose's default is 0444. A bind mount ignores it.
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Secret,
    Config,
}

/// Where a secret's or config's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileSource {
    /// A host file, absolute.
    File(PathBuf),
    /// `content:`, or the value of the variable `environment:` names.
    Content(String),
}

/// A request for devices from a driver (GPUs), as the engine's `DeviceRequests` take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRequest {
    pub driver: Option<String>,
    /// `-1` is all devices.
    pub count: Option<i64>,
    pub device_ids: Vec<String>,
    pub capabilities: Vec<String>,
    pub options: BTreeMap<String, String>,
}

/// `deploy.update_config.order` ("Compose Deploy Specification").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Build {
    /// Absolute path of the build context.
    pub context: PathBuf,
    /// Dockerfile path relative to the context.
    pub dockerfile: String,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Images whose layers the build may reuse.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_from: Vec<String>,
    /// The network `RUN` steps use (`host`, `none`, a network name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `host:ip`, as for the service.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_cache: bool,
    /// Pull a newer base image even when one is present.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pull: bool,
    /// The service's `platform`, else the only entry of `build.platforms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// A container's isolation technology (`isolation:`). Only Windows engines have more than
/// `default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    Default,
    Process,
    Hyperv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    /// `ingress` or `host`: only Swarm tells them apart.
    #[serde(skip)]
    pub mode: Option<String>,
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
    /// Bind long syntax `bind.create_host_path`. The short syntax, and a long syntax without a
    /// `bind:` section, imply true, as in Compose.
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub link_local_ips: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// The network with the highest priority is the one given at create; ties go by key.
    #[serde(skip_serializing_if = "is_zero")]
    pub priority: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub gw_priority: i64,
    /// The entry is a mapping rather than a bare name or null; Compose then sends the endpoint
    /// an address configuration, even an empty one. Not hashed: it changes nothing that runs.
    #[serde(skip)]
    pub configured: bool,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Ipam>,
}

/// A network's address management (`ipam:`), as the engine's network create takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Ipam {
    pub driver: Option<String>,
    pub config: Vec<IpamPool>,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IpamPool {
    pub subnet: Option<String>,
    pub ip_range: Option<String>,
    pub gateway: Option<String>,
    pub aux_addresses: BTreeMap<String, String>,
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

fn is_zero(value: &i64) -> bool {
    *value == 0
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
    #[error("{file}: larger than 1 MiB, the most stackhook reads from one file")]
    TooLarge { file: PathBuf },
    /// A SOPS-encrypted file that could not be opened: no key, no matching key, a bad MAC.
    #[error("{file}: {source}")]
    Sops {
        file: PathBuf,
        #[source]
        source: sops::Error,
    },
    #[error("{file}: invalid interpolation format for {key}: {value:?}")]
    Interpolation {
        file: PathBuf,
        key: String,
        value: String,
    },
    /// Worded as Docker Compose's schema validation says it.
    #[error("{file}: additional properties '{key}' not allowed")]
    UnknownTopLevelKey { file: PathBuf, key: String },
    #[error("{file}: service {service}: key {key} is not supported by stackhook")]
    UnsupportedKey {
        file: PathBuf,
        service: String,
        key: String,
    },
    /// A service key of `SERVICE_KEYS` that stackhook refuses, with why.
    #[error("{file}: service {service}: key {key} is not supported by stackhook: {reason}")]
    RefusedKey {
        file: PathBuf,
        service: String,
        key: String,
        reason: &'static str,
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

/// What the host adds to a stack's own files when it is loaded.
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// The process environment, which wins over `.env` as in Compose.
    pub environment: BTreeMap<String, String>,
    /// A dotenv file of host-local values read after the stack's `.env`, overriding it
    /// (`STACKHOOK_LOCAL_ENV_DIR/<stack>.env`); absent is the same as empty.
    pub local_env: Option<PathBuf>,
    /// The keys that open the stack's SOPS-encrypted files.
    pub age_keys: sops::Keys,
}

/// Loads the compose project of the stack directory `dir` (absolute) as `docker compose up -d`
/// run there would see it, SOPS-encrypted files opened.
///
/// Variables for interpolation come from `dir/.env`, overlaid by the host's local env file,
/// overlaid by the process environment, which wins as in Compose ("Environment variables
/// precedence").
pub fn load(dir: &Path, host: &Host) -> Result<Project, Error> {
    let environment = &host.environment;
    let file = find_file(dir)?;
    let mut sources = Sources {
        sealed: Sealed::new(&host.age_keys),
        ..Sources::default()
    };
    let mut interpolation_environment = BTreeMap::new();
    let dotenv_file = dir.join(".env");
    if dotenv_file.is_file() {
        let mut lookup = |name: &str| environment.get(name).cloned();
        interpolation_environment = read_dotenv(&dotenv_file, &mut lookup, &mut sources.sealed)?;
        sources.read(&dotenv_file);
    }
    if let Some(local_env) = host.local_env.as_deref().filter(|path| path.is_file()) {
        let stack = interpolation_environment.clone();
        let mut lookup = |name: &str| environment.get(name).or_else(|| stack.get(name)).cloned();
        let local = read_dotenv(local_env, &mut lookup, &mut sources.sealed)?;
        interpolation_environment.extend(local);
        sources.read(local_env);
    }
    interpolation_environment.extend(environment.clone());
    // The stack's file is merged over nothing, so its `!reset` and `!override` tags clear
    // nothing: what `!reset` marks is simply gone.
    let (document, _) = document(&file, dir, &interpolation_environment, &mut sources, &[])?;
    let mut context = project::Context {
        file: &file,
        dir,
        environment: &interpolation_environment,
        files_read: sources.files_read,
        variables: sources.variables,
        sealed: sources.sealed,
        secrets: BTreeMap::new(),
        configs: BTreeMap::new(),
        notes: Vec::new(),
    };
    project::project(&Node::new(&file, "", &document), &mut context)
}

/// What reading a project's compose files gathered besides them, for its fingerprint.
#[derive(Default)]
struct Sources {
    /// Every other file read: `.env`, extended and included compose files, their env files.
    files_read: Vec<PathBuf>,
    variables: BTreeMap<String, Option<String>>,
    sealed: Sealed,
}

/// The SOPS files a load opened, and the keys it opens them with.
#[derive(Default)]
struct Sealed {
    keys: sops::Keys,
    files: BTreeMap<PathBuf, sops::Plaintext>,
}

impl Sealed {
    fn new(keys: &sops::Keys) -> Sealed {
        Sealed {
            keys: keys.clone(),
            files: BTreeMap::new(),
        }
    }

    /// `text`, read from `file`, opened if SOPS encrypted it; as it is otherwise.
    fn open(&mut self, file: &Path, text: String) -> Result<String, Error> {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let sops_error = |source| Error::Sops {
            file: file.to_path_buf(),
            source,
        };
        let Some(plain) = sops::open(&name, &text, &self.keys).map_err(sops_error)? else {
            return Ok(text);
        };
        let text = String::from_utf8(plain.as_bytes().to_vec()).map_err(|_| Error::Invalid {
            file: file.to_path_buf(),
            at: "(root)".to_owned(),
            message: "its SOPS-decrypted content is not UTF-8 text".to_owned(),
        })?;
        self.files.insert(file.to_path_buf(), plain);
        Ok(text)
    }

    /// Opens the file of a secret or config if SOPS encrypted it. A file that is missing,
    /// unreadable, not text or over the size limit is no SOPS file: it is mounted as it is,
    /// and the engine says what is wrong with it.
    fn probe(&mut self, file: &Path) -> Result<(), Error> {
        let Ok(text) = read(file) else {
            return Ok(());
        };
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        if let Some(plain) = sops::open(&name, &text, &self.keys).map_err(|source| Error::Sops {
            file: file.to_path_buf(),
            source,
        })? {
            self.files.insert(file.to_path_buf(), plain);
        }
        Ok(())
    }
}

impl Sources {
    fn read(&mut self, file: &Path) {
        if !self.files_read.iter().any(|read| read == file) {
            self.files_read.push(file.to_path_buf());
        }
    }
}

/// One compose file parsed and interpolated, its `!reset` and `!override` tags taken out, its
/// services' `extends` merged and its `include`s imported, in compose-go's order; with the tags'
/// `Resets`, for a caller that merges the file over others. `dir` is where its relative paths
/// resolve; `including` are the files that include it, outermost first.
fn document(
    file: &Path,
    dir: &Path,
    environment: &BTreeMap<String, String>,
    sources: &mut Sources,
    including: &[PathBuf],
) -> Result<(Value, merge::Resets), Error> {
    let text = read(file)?;
    let mut document = parse(file, &text)?;
    let resets = merge::Resets::take(&mut document);
    check_top_level_keys(file, &document)?;
    interpolate_document(file, &mut document, environment, &mut sources.variables)?;
    extends::apply(&mut document, file, dir, &resets, environment, sources)?;
    include::apply(&mut document, file, dir, environment, sources, including)?;
    Ok((document, resets))
}

/// Makes the relative paths of a compose document absolute against `dir`, as compose-go's
/// `ResolveRelativePaths` does for a file read from another directory than the project's:
/// build contexts, env and label files, bind mount sources, `extends.file`, and the files of
/// secrets and configs. With `default_context`, a `build` without a context builds in `dir`.
fn relocate(document: &mut Value, dir: &Path, default_context: bool) {
    let absolute = |value: &mut Value| {
        if let Value::String(path) = value
            && !path.starts_with('~')
            && !Path::new(path.as_str()).is_absolute()
        {
            *path = normalise_path(&dir.join(&*path))
                .to_string_lossy()
                .into_owned();
        }
    };
    if let Some(Value::Mapping(services)) = document.get_mut("services") {
        for service in services.values_mut() {
            let Value::Mapping(service) = service else {
                continue;
            };
            for (key, value) in service.iter_mut() {
                match (key.as_str().unwrap_or_default(), value) {
                    ("build", Value::Mapping(build)) => match build.get_mut("context") {
                        Some(context) if !is_remote(context) => absolute(context),
                        Some(_) => {}
                        None if default_context => {
                            let context = dir.to_string_lossy().into_owned();
                            build.insert("context".into(), context.into());
                        }
                        None => {}
                    },
                    ("build", context) if !is_remote(context) => absolute(context),
                    ("env_file" | "label_file", Value::Sequence(items)) => {
                        for item in items {
                            match item {
                                Value::Mapping(entry) => {
                                    entry.get_mut("path").map(absolute);
                                }
                                path => absolute(path),
                            }
                        }
                    }
                    ("env_file" | "label_file", path) => absolute(path),
                    ("volumes", Value::Sequence(mounts)) => {
                        for mount in mounts {
                            match mount {
                                Value::Mapping(long)
                                    if long.get("type").and_then(Value::as_str) == Some("bind") =>
                                {
                                    long.get_mut("source").map(absolute);
                                }
                                // The short syntax: a source starting with `.` is a relative
                                // host path.
                                Value::String(short) if short.starts_with('.') => {
                                    let (source, rest) =
                                        short.split_once(':').unwrap_or((short.as_str(), ""));
                                    let mut source = Value::String(source.to_owned());
                                    absolute(&mut source);
                                    let source = source.as_str().unwrap_or_default();
                                    *short = match rest {
                                        "" => source.to_owned(),
                                        rest => format!("{source}:{rest}"),
                                    };
                                }
                                _ => {}
                            }
                        }
                    }
                    ("extends", Value::Mapping(extends)) => {
                        extends.get_mut("file").map(absolute);
                    }
                    _ => {}
                }
            }
        }
    }
    for section in ["secrets", "configs"] {
        if let Some(Value::Mapping(definitions)) = document.get_mut(section) {
            for definition in definitions.values_mut() {
                if let Value::Mapping(definition) = definition {
                    definition.get_mut("file").map(absolute);
                }
            }
        }
    }
}

/// A build context given by URL (a git repository), which no directory qualifies.
fn is_remote(context: &Value) -> bool {
    context
        .as_str()
        .is_some_and(|context| context.contains("://") || context.starts_with("git@"))
}

/// Folds `.` and `..` as Compose does with relative paths.
fn normalise_path(path: &Path) -> PathBuf {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    clean
}

/// Top-level keys `up -d` honours.
const TOP_LEVEL_KEYS: [&str; 8] = [
    "version", "name", "include", "services", "networks", "volumes", "configs", "secrets",
];

/// The first of `FILE_NAMES` present in `dir`: Compose uses only one of them.
fn find_file(dir: &Path) -> Result<PathBuf, Error> {
    FILE_NAMES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| Error::NoComposeFile {
            dir: dir.to_path_buf(),
        })
}

/// The largest compose or env file stackhook reads. Real ones are a few kilobytes; the limit
/// keeps a careless (or hostile) commit from taking the deployer's memory (issue 9).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The most YAML nodes a compose file may hold once its aliases are expanded.
pub const MAX_NODES: usize = 100_000;

fn read(file: &Path) -> Result<String, Error> {
    use std::io::Read;
    let io = |source| Error::Io {
        file: file.to_path_buf(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(file)
        .map_err(io)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::TooLarge {
            file: file.to_path_buf(),
        });
    }
    Ok(text)
}

/// How many nodes a YAML value holds, counting up to `limit + 1` at most.
fn count_nodes(value: &Value, limit: usize) -> usize {
    let mut count = 0;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        count += 1;
        if count > limit {
            break;
        }
        match value {
            Value::Sequence(items) => stack.extend(items),
            Value::Mapping(mapping) => {
                for (key, child) in mapping {
                    stack.push(key);
                    stack.push(child);
                }
            }
            Value::Tagged(tagged) => stack.push(&tagged.value),
            _ => {}
        }
    }
    count
}

/// Reads a dotenv file (`.env` or an `env_file`) into variables, opening it if SOPS encrypted
/// it.
fn read_dotenv(
    file: &Path,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
    sealed: &mut Sealed,
) -> Result<BTreeMap<String, String>, Error> {
    let text = sealed.open(file, read(file)?)?;
    parse_dotenv(file, &text, lookup)
}

/// Parses the text of a dotenv file.
fn parse_dotenv(
    file: &Path,
    text: &str,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, Error> {
    let entries = dotenv::parse(text, lookup).map_err(|error| match error {
        dotenv::Error::Syntax { line, message } => Error::Invalid {
            file: file.to_path_buf(),
            at: format!("line {line}"),
            message,
        },
        dotenv::Error::MissingVariable { name, message, .. } => Error::MissingVariable {
            file: file.to_path_buf(),
            name,
            message,
        },
    })?;
    Ok(entries.into_iter().collect())
}

/// Parses YAML and resolves `<<` merge keys, so that anchors and `x-` fragments behave as in
/// Compose.
fn parse(file: &Path, text: &str) -> Result<Value, Error> {
    let yaml_error = |error: yaml_serde::Error| Error::Yaml {
        file: file.to_path_buf(),
        message: error.to_string(),
    };
    // yaml_serde refuses aliases that repeat more than a hundred times the document's events
    // ("repetition limit exceeded"), which stops exponential expansions; this bounds the rest.
    let mut document: Value = yaml_serde::from_str(text).map_err(yaml_error)?;
    resolve_merges(&mut document).map_err(|message| Error::Yaml {
        file: file.to_path_buf(),
        message,
    })?;
    if count_nodes(&document, MAX_NODES) > MAX_NODES {
        return Err(Error::Invalid {
            file: file.to_path_buf(),
            at: "(root)".to_owned(),
            message: format!("more than {MAX_NODES} YAML nodes once its aliases are expanded"),
        });
    }
    match document {
        Value::Mapping(_) => Ok(document),
        Value::Null => Err(Error::Invalid {
            file: file.to_path_buf(),
            at: "(root)".to_owned(),
            message: "empty compose file".to_owned(),
        }),
        _ => Err(Error::Invalid {
            file: file.to_path_buf(),
            at: "(root)".to_owned(),
            message: "must be a mapping".to_owned(),
        }),
    }
}

/// Resolves `<<` keys depth first, so that a fragment which itself merges another is complete
/// before it is merged (`Value::apply_merge` copies such an inner `<<` unresolved). Keys written
/// in the mapping win over merged ones, and earlier merge sources over later ones
/// (<https://yaml.org/type/merge.html>).
fn resolve_merges(value: &mut Value) -> Result<(), String> {
    match value {
        Value::Mapping(mapping) => {
            for child in mapping.values_mut() {
                resolve_merges(child)?;
            }
            let sources = match mapping.remove("<<") {
                None => return Ok(()),
                Some(Value::Mapping(source)) => vec![source],
                Some(Value::Sequence(sources)) => sources
                    .into_iter()
                    .map(|source| match source {
                        Value::Mapping(source) => Ok(source),
                        _ => Err("a << list may hold only mappings".to_owned()),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err("<< must merge a mapping or a list of them".to_owned()),
            };
            for source in sources {
                for (key, value) in source {
                    mapping.entry(key).or_insert(value);
                }
            }
            Ok(())
        }
        Value::Sequence(sequence) => sequence.iter_mut().try_for_each(resolve_merges),
        Value::Tagged(tagged) => resolve_merges(&mut tagged.value),
        _ => Ok(()),
    }
}

fn check_top_level_keys(file: &Path, document: &Value) -> Result<(), Error> {
    let Value::Mapping(mapping) = document else {
        return Ok(());
    };
    for key in mapping.keys() {
        let key = key.as_str().unwrap_or_default();
        let allowed = TOP_LEVEL_KEYS.contains(&key) || key.starts_with("x-");
        // Compose's top-level `models` are what services' `models` use, refused for the same
        // reason.
        if let ("models", Some(Support::Refused(reason))) = (key, service::support("models")) {
            return Err(Error::Invalid {
                file: file.to_path_buf(),
                at: key.to_owned(),
                message: format!("is not supported by stackhook: {reason}"),
            });
        }
        if !allowed {
            return Err(Error::UnknownTopLevelKey {
                file: file.to_path_buf(),
                key: key.to_owned(),
            });
        }
    }
    Ok(())
}

/// Interpolates every string value (never a key) in place, recording each variable looked up.
fn interpolate_document(
    file: &Path,
    document: &mut Value,
    environment: &BTreeMap<String, String>,
    variables: &mut BTreeMap<String, Option<String>>,
) -> Result<(), Error> {
    let mut lookup = |name: &str| {
        let value = environment.get(name).cloned();
        variables.insert(name.to_owned(), value.clone());
        value
    };
    interpolate_value(file, document, String::new(), &mut lookup)
}

fn interpolate_value(
    file: &Path,
    value: &mut Value,
    at: String,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<(), Error> {
    match value {
        Value::String(text) => {
            *text = interpolate::interpolate(text, lookup).map_err(|error| match error {
                interpolate::Error::Syntax => Error::Interpolation {
                    file: file.to_path_buf(),
                    key: at,
                    value: text.clone(),
                },
                interpolate::Error::Missing { name, message } => Error::MissingVariable {
                    file: file.to_path_buf(),
                    name,
                    message,
                },
                interpolate::Error::TooDeep => Error::Invalid {
                    file: file.to_path_buf(),
                    at,
                    message: format!(
                        "variables nest deeper than {} levels",
                        interpolate::MAX_NESTING
                    ),
                },
            })?;
            Ok(())
        }
        Value::Mapping(mapping) => {
            for (key, child) in mapping.iter_mut() {
                let key = key
                    .as_str()
                    .map_or_else(|| format!("{key:?}"), str::to_owned);
                let at = if at.is_empty() {
                    key
                } else {
                    format!("{at}.{key}")
                };
                interpolate_value(file, child, at, lookup)?;
            }
            Ok(())
        }
        Value::Sequence(sequence) => {
            for (index, child) in sequence.iter_mut().enumerate() {
                interpolate_value(file, child, format!("{at}[{index}]"), lookup)?;
            }
            Ok(())
        }
        Value::Tagged(tagged) => interpolate_value(file, &mut tagged.value, at, lookup),
        _ => Ok(()),
    }
}
