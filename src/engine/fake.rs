//! An in-memory engine for fast unit tests of what `deploy` asks of an engine. It keeps
//! containers by id, and fails the operations a test names, so the recovery paths can be checked
//! without a real engine. The real engines are tested in `tests/it`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::bail;
use async_trait::async_trait;

use super::{
    Container, ContainerSpec, ContainerStatus, Engine, EngineInfo, EngineKind, Health, State,
};
use crate::stack::compose;

/// An operation a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Create,
    Start,
}

#[derive(Debug, Default)]
pub struct Fake {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    containers: BTreeMap<String, Container>,
    failing: BTreeSet<Operation>,
    next_id: u32,
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

    /// Adds a running container, as if an earlier deploy had made it.
    pub fn insert(&self, container: Container) {
        let mut inner = self.inner.lock().expect("fake lock");
        inner.containers.insert(container.id.clone(), container);
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
        let inner = self.inner.lock().expect("fake lock");
        Ok(inner
            .containers
            .values()
            .filter(|c| project.is_none() || c.label("com.docker.compose.project") == project)
            .cloned()
            .collect())
    }

    async fn inspect(&self, id: &str) -> anyhow::Result<ContainerStatus> {
        self.with(id, |c| ContainerStatus {
            state: c.state.clone(),
            exit_code: Some(0),
            health: None,
        })
    }

    async fn image_id(&self, reference: &str) -> anyhow::Result<Option<String>> {
        Ok(Some(format!("sha256:{reference}")))
    }

    async fn pull(
        &self,
        _reference: &str,
        _progress: &(dyn for<'a> Fn(&'a str) + Send + Sync),
    ) -> anyhow::Result<()> {
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
            image_id: format!("sha256:{image}"),
            image,
            labels: spec.labels.clone(),
            state: State::Created,
        };
        inner.containers.insert(id.clone(), container);
        Ok(id)
    }

    async fn start(&self, id: &str) -> anyhow::Result<()> {
        if self.failing(Operation::Start) {
            bail!("starting {id}: injected failure");
        }
        self.with(id, |c| c.state = State::Running)
    }

    async fn stop(&self, id: &str, _timeout: Option<Duration>) -> anyhow::Result<()> {
        self.with(id, |c| c.state = State::Exited)
    }

    async fn remove(&self, id: &str) -> anyhow::Result<()> {
        let mut inner = self.inner.lock().expect("fake lock");
        inner.containers.remove(id);
        Ok(())
    }

    async fn rename(&self, id: &str, name: &str) -> anyhow::Result<()> {
        self.with(id, |c| c.name = name.to_owned())
    }

    async fn health(&self, _id: &str, _check: &compose::Healthcheck) -> anyhow::Result<Health> {
        Ok(Health::Healthy)
    }

    async fn logs(&self, _id: &str, _tail: usize) -> anyhow::Result<String> {
        Ok(String::new())
    }
}
