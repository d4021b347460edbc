//! The types that cross the engine boundary in Swarm mode (issue 12): a service as `deploy`
//! wants it, and what the engine reports of services and their tasks.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stack::compose;

/// The label `docker stack deploy` puts on every service, network, secret and config of a stack.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// The label on a service naming the image the compose file gave.
pub const IMAGE_LABEL: &str = "com.docker.stack.image";

/// One Swarm service as `deploy::swarm` wants it. `deploy` decides the names (`<stack>_<service>`,
/// networks, volumes, secrets and configs) and the labels; the engine maps the rest of the
/// compose service onto the API's `ServiceSpec` the way `docker stack deploy` does.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSpec {
    /// `<stack>_<service>`.
    pub name: String,
    /// The service's key in the compose file: its alias on every network it joins.
    pub key: String,
    /// The service, its `image` the reference to run.
    pub service: compose::Service,
    /// The service's own labels (`deploy.labels`, the namespace and the image).
    pub labels: BTreeMap<String, String>,
    /// The containers' labels (the service's `labels:` and the namespace).
    pub container_labels: BTreeMap<String, String>,
    /// The networks it joins, sorted by name.
    pub networks: Vec<Attachment>,
    /// The stack's named volumes by their key, named and labelled for the engine.
    pub volumes: BTreeMap<String, compose::Volume>,
    /// Secrets, then configs, by the Swarm object each names, sorted by that name.
    pub secrets: Vec<FileReference>,
    pub configs: Vec<FileReference>,
}

/// A network a service joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub network: String,
    pub aliases: Vec<String>,
    pub driver_opts: BTreeMap<String, String>,
}

/// A secret or config as a service's tasks see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReference {
    /// The Swarm object's name.
    pub object: String,
    /// Its id, which Swarm wants beside the name; known once the object exists.
    #[serde(skip)]
    pub id: String,
    /// The file's name: relative to `/run/secrets` for a secret, to `/` for a config, or absolute.
    pub target: String,
    pub uid: String,
    pub gid: String,
    pub mode: u32,
}

/// A secret or a config: both are immutable named blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Secret,
    Config,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObjectKind::Secret => "secret",
            ObjectKind::Config => "config",
        })
    }
}

/// A Swarm object (service, secret, config) as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub id: String,
    pub name: String,
    /// The version index an update must name.
    pub version: u64,
    pub labels: BTreeMap<String, String>,
}

/// Where a service's rolling update stands (`UpdateStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateStatus {
    /// `updating`, `paused`, `completed`, `rollback_started`, `rollback_paused`,
    /// `rollback_completed`.
    pub state: String,
    pub message: String,
}

/// A service now: its version, its rolling update and how many tasks it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub object: Object,
    pub update: Option<UpdateStatus>,
    /// Replicas wanted; `None` for a global service.
    pub replicas: Option<u64>,
    /// A job (`replicated-job`, `global-job`): done when its tasks complete.
    pub job: bool,
}

/// One task of a service that matches its current spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    /// `running`, `shutdown`, `complete`, …
    pub desired: String,
    /// `new`, `pending`, `starting`, `running`, `complete`, `failed`, `rejected`, …
    pub state: String,
    /// The error that ended it, if one did.
    pub error: Option<String>,
}
