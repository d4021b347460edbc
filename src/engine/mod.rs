//! The boundary to the container runtime: the `Engine` trait and the types that cross it.
//!
//! Only this module talks to the container socket, and only this module knows bollard. Docker and
//! Podman differences (health checks without systemd, state names, image name resolution) are
//! handled behind the trait, never by callers. Deciding *what* to create is `deploy`'s job; the
//! engine carries out one request at a time.

pub mod docker;
#[cfg(test)]
pub mod fake;
pub mod swarm;
pub mod registry;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::stack::compose;

/// A stream of container events.
pub type ContainerEvents =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = anyhow::Result<ContainerEvent>> + Send>>;

/// Something that happened to a container (`die`, `destroy`, `create`, `rename`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub action: String,
    pub id: String,
    /// Its `com.docker.compose.project` label.
    pub project: Option<String>,
}

/// A container runtime reached through its Docker-compatible API.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Which engine answers, and its API version.
    async fn info(&self) -> anyhow::Result<EngineInfo>;
    /// What happens from now on to containers that carry a compose project label, until the
    /// connection breaks (the stream ends or yields an error). An engine without events never
    /// yields one.
    async fn container_events(&self) -> anyhow::Result<ContainerEvents> {
        Ok(Box::pin(futures_util::stream::pending()))
    }
    /// Containers, running or not, labelled `com.docker.compose.project=<project>`; with `None`,
    /// every container carrying that label.
    async fn containers(&self, project: Option<&str>) -> anyhow::Result<Vec<Container>>;
    /// The current state of one container.
    async fn inspect(&self, id: &str) -> anyhow::Result<ContainerStatus>;
    /// The id of a local image, `None` when the engine does not have it.
    async fn image_id(&self, reference: &str) -> anyhow::Result<Option<ImageId>>;
    /// What a local image (by id or reference) was pulled as: its registry digests
    /// (`<repository>@sha256:…`, the engine's `RepoDigests`). Empty for an image built or loaded
    /// here, which came from no registry.
    async fn image_digests(&self, image: &str) -> anyhow::Result<Vec<String>>;
    /// The digest the tag `reference` names in its registry now, as a pull would find it (a
    /// manifest list's, where the tag names one). Asks the registry; pulls nothing.
    async fn registry_digest(&self, reference: &str) -> anyhow::Result<String>;
    /// Pulls an image, reporting progress lines to `progress`.
    async fn pull(
        &self,
        reference: &str,
        progress: &(dyn for<'a> Fn(&'a str) + Send + Sync),
    ) -> anyhow::Result<()>;
    /// Builds `tag` from a compose `build:` section.
    async fn build(
        &self,
        tag: &str,
        build: &compose::Build,
        progress: &(dyn for<'a> Fn(&'a str) + Send + Sync),
    ) -> anyhow::Result<()>;
    /// Creates the network unless one of that name exists; for an external network, checks
    /// that it exists.
    async fn ensure_network(&self, network: &compose::Network) -> anyhow::Result<()>;
    /// Networks labelled `com.docker.compose.project=<project>`.
    async fn networks(&self, project: &str) -> anyhow::Result<Vec<String>>;
    async fn remove_network(&self, name: &str) -> anyhow::Result<()>;
    /// Creates the volume unless one of that name exists; for an external volume, checks that
    /// it exists.
    async fn ensure_volume(&self, volume: &compose::Volume) -> anyhow::Result<()>;
    /// Creates (but does not start) a container, attached to all its networks. Returns its id.
    async fn create(&self, spec: &ContainerSpec) -> anyhow::Result<String>;
    async fn start(&self, id: &str) -> anyhow::Result<()>;
    /// Stops a container, waiting `timeout` (the engine's default when `None`) before killing it.
    async fn stop(&self, id: &str, timeout: Option<Duration>) -> anyhow::Result<()>;
    /// Removes a container (forcibly, with its anonymous volumes).
    async fn remove(&self, id: &str) -> anyhow::Result<()>;
    async fn rename(&self, id: &str, name: &str) -> anyhow::Result<()>;
    /// One reading of a container's health. On engines that cannot run health checks themselves
    /// (Podman without systemd) this runs `check` through exec.
    async fn health(&self, id: &str, check: &compose::Healthcheck) -> anyhow::Result<Health>;
    /// The last `tail` lines of a container's output, stdout and stderr interleaved.
    async fn logs(&self, id: &str, tail: usize) -> anyhow::Result<String>;
    /// Runs a lifecycle hook's command in a running container and waits for it to end, at most
    /// `HOOK_TIMEOUT`.
    async fn exec(&self, id: &str, hook: &compose::Hook) -> anyhow::Result<ExecOutcome>;

    // Swarm mode (issue 12). An engine that is no Swarm manager refuses every call.

    /// Whether the engine is a manager of an active swarm.
    async fn swarm_manager(&self) -> anyhow::Result<bool> {
        Ok(false)
    }
    /// Services labelled `com.docker.stack.namespace=<namespace>`.
    async fn services(&self, _namespace: &str) -> anyhow::Result<Vec<swarm::Object>> {
        anyhow::bail!("this engine runs no Swarm services")
    }
    async fn service_state(&self, _id: &str) -> anyhow::Result<swarm::ServiceState> {
        anyhow::bail!("this engine runs no Swarm services")
    }
    /// Creates a service; returns its id.
    async fn create_service(&self, _spec: &swarm::ServiceSpec) -> anyhow::Result<String> {
        anyhow::bail!("this engine runs no Swarm services")
    }
    /// Replaces a service's spec; `version` is the one it was read at.
    async fn update_service(
        &self,
        _id: &str,
        _version: u64,
        _spec: &swarm::ServiceSpec,
    ) -> anyhow::Result<()> {
        anyhow::bail!("this engine runs no Swarm services")
    }
    async fn remove_service(&self, _id: &str) -> anyhow::Result<()> {
        anyhow::bail!("this engine runs no Swarm services")
    }
    /// The tasks of a service that match its current spec.
    async fn tasks(&self, _service: &str) -> anyhow::Result<Vec<swarm::Task>> {
        anyhow::bail!("this engine runs no Swarm services")
    }
    /// Networks labelled `com.docker.stack.namespace=<namespace>`.
    async fn stack_networks(&self, _namespace: &str) -> anyhow::Result<Vec<String>> {
        anyhow::bail!("this engine runs no Swarm services")
    }
    /// Creates a secret or config unless one of that name exists, and returns its id. Names are
    /// content-addressed, so one that exists holds these bytes.
    async fn ensure_object(
        &self,
        _kind: swarm::ObjectKind,
        _name: &str,
        _labels: &BTreeMap<String, String>,
        _data: &[u8],
    ) -> anyhow::Result<String> {
        anyhow::bail!("this engine runs no Swarm services")
    }
    /// Secrets or configs labelled `com.docker.stack.namespace=<namespace>`.
    async fn objects(
        &self,
        _kind: swarm::ObjectKind,
        _namespace: &str,
    ) -> anyhow::Result<Vec<swarm::Object>> {
        anyhow::bail!("this engine runs no Swarm services")
    }
    /// Removes a secret or config; one still in use stays, and that is no error.
    async fn remove_object(&self, _kind: swarm::ObjectKind, _id: &str) -> anyhow::Result<()> {
        anyhow::bail!("this engine runs no Swarm services")
    }
}

/// The longest a lifecycle hook may run. Docker Compose waits for ever; a deployment should
/// not, since it holds its stack's lane.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(600);

/// How a command run through exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub exit_code: i64,
    /// Its last output, stdout and stderr interleaved.
    pub output: String,
}

/// The id the engine gives an image (`sha256:…`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ImageId(String);

impl ImageId {
    pub fn new(id: impl Into<String>) -> ImageId {
        ImageId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Docker,
    Podman,
}

#[derive(Debug, Clone, Serialize)]
pub struct EngineInfo {
    pub kind: EngineKind,
    pub version: String,
    pub api_version: String,
}

/// A container as listed: enough to compare with what a compose file wants.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Container {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    /// The image reference it was created from.
    pub image: String,
    pub image_id: ImageId,
    pub labels: BTreeMap<String, String>,
    pub state: State,
}

impl Container {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// A container's lifecycle state. Engines report states the API enum does not know (Podman's
/// `stopped`); those become `Unknown` rather than an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerStatus {
    pub state: State,
    pub exit_code: Option<i64>,
    /// The engine's own health status, where the container has a health check.
    pub health: Option<Health>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

/// Everything needed to create one service's container. `deploy` decides names, labels, network
/// aliases and volume names, as Docker Compose would; the engine maps them onto its API.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ContainerSpec {
    pub name: String,
    /// The service with its image resolved (`image` is always `Some`).
    pub service: compose::Service,
    /// Every label the container carries: the service's own and Compose's.
    pub labels: BTreeMap<String, String>,
    /// In attachment order; the first is the one given at create time.
    pub networks: Vec<Attachment>,
    /// Engine volume names by their key in the project's `volumes`.
    pub volume_names: BTreeMap<String, String>,
    /// Container names of the services this one refers to by `service:<name>` (namespaces) or
    /// in `volumes_from`. The engine refers to those containers by id, as Compose does, so it
    /// looks them up when it creates this one.
    pub service_containers: BTreeMap<String, String>,
    /// Files written into the container after it is created and before it starts: secrets and
    /// configs given by `content:` or `environment:`.
    pub files: Vec<ContainerFile>,
}

/// One network a container joins, with its endpoint settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Attachment {
    /// The engine's network name.
    pub network: String,
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
    pub link_local_ips: Vec<String>,
    /// Whether the endpoint carries an address configuration, empty or not: Compose sends one
    /// for every network the service's entry configures (a mapping rather than a bare name),
    /// and Docker shows it as `{}`.
    pub ipam_config: bool,
    pub mac_address: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub gw_priority: i64,
    /// Legacy links, `<container>:<alias>`.
    pub links: Vec<String>,
}

/// A file the engine copies into a container before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerFile {
    /// Absolute path in the container.
    pub path: String,
    /// Kept out of reports and logs: it may be a secret.
    #[serde(skip)]
    pub content: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: u32,
}
