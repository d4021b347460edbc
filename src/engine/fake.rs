//! An in-memory engine for fast unit tests of what `deploy` asks of an engine. It keeps
//! containers by id, records what it was asked, and fails the operations a test names, so the
//! recovery paths can be checked without a real engine. It refuses what Docker refuses (a name in
//! use, a rename to a container's own name), so that no test passes where Docker would fail. The
//! real engines are tested in `tests/it`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::{
    Container, ContainerSpec, ContainerStatus, Engine, EngineInfo, EngineKind, ExecOutcome, Health,
    ImageId, State,
};
use crate::stack::compose;

/// An operation a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Create,
    Start,
    /// The next container started exits at once with status 1.
    Crash,
    /// The next health reading is `Unhealthy`.
    Health,
    /// The next listing of containers panics, as a bug would.
    Panic,
    /// The next exec ends with status 3.
    Exec,
}

#[derive(Debug, Default)]
pub struct Fake {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    containers: BTreeMap<String, Container>,
    exit_codes: BTreeMap<String, i64>,
    failing: BTreeSet<Operation>,
    history: Vec<String>,
    next_id: u32,
    /// Creates of containers whose name holds the key wait until the hold is released.
    holds: BTreeMap<String, Arc<Semaphore>>,
    /// A registry: tag reference → the digest it names and the id of that image.
    registry: BTreeMap<String, (String, ImageId)>,
    /// Local images pulled from `registry`: reference → id. Any other reference is present as
    /// `sha256:<reference>`.
    local: BTreeMap<String, ImageId>,
    /// Image id → its registry digests, for images pulled from `registry`.
    digests: BTreeMap<ImageId, Vec<String>>,
    /// The references pulled, in order.
    pulled: Vec<String>,
}

/// Keeps creates waiting (`Fake::hold`) until released or dropped.
pub struct Hold(Arc<Semaphore>);

impl Hold {
    pub fn release(&self) {
        self.0.close();
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release();
    }
}

impl Fake {
    /// Makes the next `operation` fail, once.
    pub fn fail(&self, operation: Operation) {
        self.inner
            .lock()
            .expect("fake lock")
            .failing
            .insert(operation);
    }

    /// Makes every create of a container whose name contains `fragment` wait until the
    /// returned hold is released: a slow deploy, as a long health check makes one.
    pub fn hold(&self, fragment: &str) -> Hold {
        let semaphore = Arc::new(Semaphore::new(0));
        let mut inner = self.inner.lock().expect("fake lock");
        inner
            .holds
            .insert(fragment.to_owned(), Arc::clone(&semaphore));
        Hold(semaphore)
    }

    /// Adds a running container, as if an earlier deploy had made it.
    pub fn insert(&self, container: Container) {
        let mut inner = self.inner.lock().expect("fake lock");
        inner.containers.insert(container.id.clone(), container);
    }

    /// Publishes `reference` (a tag) in the fake registry as naming `digest`, an image whose id
    /// is `id`; a pull of it makes that image the local one of that name.
    pub fn publish(&self, reference: &str, digest: &str, id: &str) {
        let mut inner = self.inner.lock().expect("fake lock");
        let named = (digest.to_owned(), ImageId::new(id));
        inner.registry.insert(reference.to_owned(), named);
    }

    /// The references pulled so far, in order.
    pub fn pulled(&self) -> Vec<String> {
        self.inner.lock().expect("fake lock").pulled.clone()
    }

    /// What the engine was asked to change, in order: `create NAME`, `start ID`, `stop ID`,
    /// `remove ID`, `rename ID NAME`, `exec ID COMMAND`.
    pub fn history(&self) -> Vec<String> {
        self.inner.lock().expect("fake lock").history.clone()
    }

    fn record(&self, operation: String) {
        self.inner
            .lock()
            .expect("fake lock")
            .history
            .push(operation);
    }

    /// Every container, by name.
    pub fn by_name(&self) -> BTreeMap<String, Container> {
        let inner = self.inner.lock().expect("fake lock");
        inner
            .containers
            .values()
            .map(|c| (c.name.clone(), c.clone()))
            .collect()
    }

    fn with<T>(&self, id: &str, change: impl FnOnce(&mut Container) -> T) -> anyhow::Result<T> {
        let mut inner = self.inner.lock().expect("fake lock");
        match inner.containers.get_mut(id) {
            Some(container) => Ok(change(container)),
            None => bail!("no container {id}"),
        }
    }

    /// Whether `operation` fails now; a failure is used up by the call it fails.
    fn failing(&self, operation: Operation) -> bool {
        self.inner
            .lock()
            .expect("fake lock")
            .failing
            .remove(&operation)
    }
}

/// The id of the local image `reference`: the one pulled under that name, else `sha256:<reference>`
/// (an id is its own).
fn local_id(inner: &Inner, reference: &str) -> ImageId {
    match inner.local.get(reference) {
        Some(id) => id.clone(),
        None if reference.starts_with("sha256:") => ImageId::new(reference),
        None => ImageId::new(format!("sha256:{reference}")),
    }
}

#[async_trait]
impl Engine for Fake {
    async fn info(&self) -> anyhow::Result<EngineInfo> {
        Ok(EngineInfo {
            kind: EngineKind::Docker,
            version: "fake".into(),
            api_version: "1.41".into(),
        })
    }

    async fn containers(&self, project: Option<&str>) -> anyhow::Result<Vec<Container>> {
        if self.failing(Operation::Panic) {
            panic!("injected panic");
        }
        let inner = self.inner.lock().expect("fake lock");
        Ok(inner
            .containers
            .values()
            .filter(|c| project.is_none() || c.label("com.docker.compose.project") == project)
            .cloned()
            .collect())
    }

    async fn inspect(&self, id: &str) -> anyhow::Result<ContainerStatus> {
        let exit_code = self
            .inner
            .lock()
            .expect("fake lock")
            .exit_codes
            .get(id)
            .copied();
        self.with(id, |c| ContainerStatus {
            state: c.state.clone(),
            exit_code: exit_code.or(Some(0)),
            health: None,
        })
    }

    async fn image_id(&self, reference: &str) -> anyhow::Result<Option<ImageId>> {
        let inner = self.inner.lock().expect("fake lock");
        Ok(Some(local_id(&inner, reference)))
    }

    async fn image_digests(&self, image: &str) -> anyhow::Result<Vec<String>> {
        let inner = self.inner.lock().expect("fake lock");
        let id = match image.starts_with("sha256:") {
            true => ImageId::new(image),
            false => local_id(&inner, image),
        };
        Ok(inner.digests.get(&id).cloned().unwrap_or_default())
    }

    async fn registry_digest(&self, reference: &str) -> anyhow::Result<String> {
        let inner = self.inner.lock().expect("fake lock");
        match inner.registry.get(reference) {
            Some((digest, _)) => Ok(digest.clone()),
            None => bail!("{reference}: the registry has no such tag"),
        }
    }

    async fn pull(
        &self,
        reference: &str,
        _progress: &(dyn for<'a> Fn(&'a str) + Send + Sync),
    ) -> anyhow::Result<()> {
        let mut inner = self.inner.lock().expect("fake lock");
        inner.pulled.push(reference.to_owned());
        if let Some((digest, id)) = inner.registry.get(reference).cloned() {
            let name = reference
                .rsplit_once(':')
                .map_or(reference, |(name, _)| name);
            inner.local.insert(reference.to_owned(), id.clone());
            inner.digests.insert(id, vec![format!("{name}@{digest}")]);
        }
        Ok(())
    }

    async fn build(
        &self,
        _tag: &str,
        _build: &compose::Build,
        _progress: &(dyn for<'a> Fn(&'a str) + Send + Sync),
    ) -> anyhow::Result<()> {
        Ok(())
    }

    async fn ensure_network(&self, _network: &compose::Network) -> anyhow::Result<()> {
        Ok(())
    }

    async fn networks(&self, _project: &str) -> anyhow::Result<Vec<String>> {
        Ok(Vec::new())
    }

    async fn remove_network(&self, _name: &str) -> anyhow::Result<()> {
        Ok(())
    }

    async fn ensure_volume(&self, _volume: &compose::Volume) -> anyhow::Result<()> {
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> anyhow::Result<String> {
        let holds: Vec<Arc<Semaphore>> = {
            let inner = self.inner.lock().expect("fake lock");
            let held = inner
                .holds
                .iter()
                .filter(|(key, _)| spec.name.contains(*key));
            held.map(|(_, hold)| Arc::clone(hold)).collect()
        };
        for hold in holds {
            // A released hold is a closed semaphore: acquiring fails at once.
            let _ = hold.acquire().await;
        }
        self.record(format!("create {}", spec.name));
        if self.failing(Operation::Create) {
            bail!("creating {}: injected failure", spec.name);
        }
        let mut inner = self.inner.lock().expect("fake lock");
        if inner.containers.values().any(|c| c.name == spec.name) {
            bail!("the container name {} is already in use", spec.name);
        }
        inner.next_id += 1;
        let id = format!("fake{:08}", inner.next_id);
        let image = spec.service.image.clone().unwrap_or_default();
        let container = Container {
            id: id.clone(),
            name: spec.name.clone(),
            image_id: local_id(&inner, &image),
            image,
            labels: spec.labels.clone(),
            state: State::Created,
        };
        inner.containers.insert(id.clone(), container);
        Ok(id)
    }

    async fn start(&self, id: &str) -> anyhow::Result<()> {
        self.record(format!("start {id}"));
        if self.failing(Operation::Start) {
            bail!("starting {id}: injected failure");
        }
        if self.failing(Operation::Crash) {
            let mut inner = self.inner.lock().expect("fake lock");
            inner.exit_codes.insert(id.to_owned(), 1);
            drop(inner);
            return self.with(id, |c| c.state = State::Exited);
        }
        self.with(id, |c| c.state = State::Running)
    }

    async fn stop(&self, id: &str, _timeout: Option<Duration>) -> anyhow::Result<()> {
        self.record(format!("stop {id}"));
        self.with(id, |c| c.state = State::Exited)
    }

    async fn remove(&self, id: &str) -> anyhow::Result<()> {
        self.record(format!("remove {id}"));
        let mut inner = self.inner.lock().expect("fake lock");
        inner.containers.remove(id);
        Ok(())
    }

    /// Refuses what Docker refuses: a name another container has, and a container's own name
    /// ("Renaming a container with the same name as its current name", 409).
    async fn rename(&self, id: &str, name: &str) -> anyhow::Result<()> {
        self.record(format!("rename {id} {name}"));
        let mut inner = self.inner.lock().expect("fake lock");
        if let Some(other) = inner.containers.values().find(|c| c.name == name) {
            if other.id == id {
                bail!("renaming {id}: it is already named {name}");
            }
            bail!("renaming {id}: the container name {name} is already in use");
        }
        match inner.containers.get_mut(id) {
            Some(container) => container.name = name.to_owned(),
            None => bail!("no container {id}"),
        }
        Ok(())
    }

    async fn health(&self, _id: &str, _check: &compose::Healthcheck) -> anyhow::Result<Health> {
        if self.failing(Operation::Health) {
            return Ok(Health::Unhealthy);
        }
        Ok(Health::Healthy)
    }

    async fn logs(&self, id: &str, _tail: usize) -> anyhow::Result<String> {
        Ok(format!("last words of {id}\n"))
    }

    /// Refuses what Docker refuses: an exec in a container that is not running (409).
    async fn exec(&self, id: &str, hook: &compose::Hook) -> anyhow::Result<ExecOutcome> {
        self.record(format!("exec {id} {}", hook.command.join(" ")));
        if self.with(id, |c| c.state.clone())? != State::Running {
            bail!("container {id} is not running");
        }
        let exit_code = if self.failing(Operation::Exec) { 3 } else { 0 };
        Ok(ExecOutcome {
            exit_code,
            output: format!("output of {}\n", hook.command.join(" ")),
        })
    }
}
