//! The Docker-compatible socket API, spoken through bollard, for Docker and Podman alike.
//!
//! Owns connecting (the first candidate socket that answers), the translation of a
//! `ContainerSpec` into a create request (`create`, pure), tolerant reads of container state
//! (`raw`), and the two places where the engines differ: health checks on Podman, which cannot
//! run them without systemd, and Podman's resolution of short image names. It decides nothing
//! about what should run; `deploy` does.

mod create;
mod raw;
mod swarm;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use bollard::errors::Error as ApiError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ExecConfig, Ipam, IpamConfig, NetworkConnectRequest, NetworkCreateRequest, VolumeCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    ListNetworksOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RenameContainerOptionsBuilder, StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;

pub use create::{create_body, endpoint_settings, extra_attachments};

use super::{
    Container, ContainerFile, ContainerSpec, Engine, EngineInfo, EngineKind, ExecOutcome,
    HOOK_TIMEOUT, Health, ImageId, State,
};
use super::{ContainerStatus, compose};

/// The label every container, network and volume of a compose project carries.
const PROJECT_LABEL: &str = "com.docker.compose.project";

/// Seconds a request may take. Calls that legitimately take longer (stop with a long grace
/// period, pulls, builds) raise it for that call.
const REQUEST_TIMEOUT: u64 = 120;

/// How long a pull through Podman's own endpoint may take, which answers only when it is done.
const PULL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A Docker or Podman engine reached through its socket.
#[derive(Debug, Clone)]
pub struct Docker {
    client: bollard::Docker,
    endpoint: raw::Endpoint,
    /// The candidate as given, for messages.
    address: String,
    info: EngineInfo,
}

/// Connects to the first of `candidates` that answers a ping. A candidate is `unix:///path`, a
/// plain socket path, or `tcp://host:port` / `http://host:port`.
pub async fn connect(candidates: &[String]) -> anyhow::Result<Docker> {
    let mut failures = Vec::new();
    for candidate in candidates {
        match connect_one(candidate).await {
            Ok(docker) => return Ok(docker),
            Err(error) => failures.push(format!("{candidate} ({error:#})")),
        }
    }
    let tried = if failures.is_empty() {
        "no engine address configured".to_owned()
    } else {
        format!("tried {}", failures.join(", "))
    };
    bail!(
        "no container engine answered: {tried}; start Docker (`dockerd`) or Podman \
         (`podman system service --time=0 unix:///run/podman/podman.sock`), \
         for example with scripts/engines.sh"
    )
}

impl Docker {
    /// Which engine this is, as found at connect time.
    pub fn kind(&self) -> EngineKind {
        self.info.kind
    }

    /// The address this engine was reached at, as it was given to `connect`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The bollard client, with a timeout long enough for a call that waits `extra`.
    fn client_waiting(&self, extra: Duration) -> bollard::Docker {
        self.client
            .clone()
            .with_timeout(Duration::from_secs(REQUEST_TIMEOUT) + extra)
    }

    /// A path on the versioned API, for the tolerant reads.
    fn api_path(&self, path_and_query: &str) -> String {
        format!("/v{}{path_and_query}", self.client.client_version())
    }

    async fn inspect_raw(&self, id: &str) -> anyhow::Result<raw::ContainerInspect> {
        raw::get_json(
            &self.endpoint,
            &self.api_path(&format!("/containers/{id}/json")),
            Duration::from_secs(REQUEST_TIMEOUT),
        )
        .await?
        .with_context(|| format!("no such container: {id}"))
    }

    /// Pulls through Podman's own API with TLS verification off. Docker treats registries on
    /// 127.0.0.0/8 as insecure (plain HTTP) by default; Podman 4.3's Docker-compatible
    /// `POST /images/create` ignores `tlsVerify=false` and always speaks HTTPS, so a registry on
    /// the host's loopback would be unreachable from Podman alone.
    async fn pull_over_plain_http(
        &self,
        reference: &str,
        progress: &(dyn for<'a> Fn(&'a str) + Send + Sync),
    ) -> anyhow::Result<()> {
        // The libpod API answers 404 without a version in the path.
        let path = format!(
            "/v{}/libpod/images/pull?reference={}&tlsVerify=false",
            self.info.version,
            raw::encode(reference)
        );
        let (status, body) = raw::post(&self.endpoint, &path, PULL_TIMEOUT).await?;
        #[derive(serde::Deserialize)]
        struct Report {
            stream: Option<String>,
            error: Option<String>,
        }
        let reports = serde_json::Deserializer::from_slice(&body).into_iter::<Report>();
        for report in reports {
            let report = report.with_context(|| format!("pulling image {reference}"))?;
            if let Some(error) = report.error {
                bail!("pulling image {reference}: {}", error.trim());
            }
            if let Some(line) = report.stream.as_deref().map(str::trim)
                && !line.is_empty()
            {
                progress(line);
            }
        }
        if status != 200 {
            bail!(
                "pulling image {reference}: status {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok(())
    }

    /// Runs a health check's test through exec: exit status 0 is healthy, anything else (a
    /// failing test, a timeout) is not yet.
    async fn exec_check(&self, id: &str, check: &compose::Healthcheck) -> anyhow::Result<Health> {
        let Some(cmd) = check_command(&check.test) else {
            return Ok(Health::Healthy);
        };
        let exec = self
            .client
            .create_exec(
                id,
                ExecConfig {
                    cmd: Some(cmd),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await?;
        let run = async {
            let started = self
                .client
                .start_exec(&exec.id, Some(StartExecOptions::default()))
                .await?;
            if let StartExecResults::Attached { mut output, .. } = started {
                while let Some(chunk) = output.next().await {
                    chunk?;
                }
            }
            anyhow::Ok(())
        };
        let timeout = check.timeout.unwrap_or(Duration::from_secs(30));
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result?,
            Err(_elapsed) => return Ok(Health::Starting),
        }
        // The exit code can lag the end of the output by a moment; a check still running
        // counts as not healthy yet.
        let inspected = self.client.inspect_exec(&exec.id).await?;
        Ok(match inspected.exit_code {
            Some(0) if inspected.running != Some(true) => Health::Healthy,
            _ => Health::Starting,
        })
    }

    /// Copies `files` into a created container, as Compose injects secrets and configs given
    /// by `content:` or `environment:` (`copyFileToContainer` in its secrets.go): one tar
    /// entry per file at its absolute path, owned by uid and gid (root when unset).
    async fn copy_files(&self, id: &str, files: &[ContainerFile]) -> anyhow::Result<()> {
        for file in files {
            let archive = file_archive(file)?;
            let mut options = UploadToContainerOptionsBuilder::default().path("/");
            if file.uid.is_some() || file.gid.is_some() {
                options = options.copy_uidgid("true");
            }
            self.client
                .upload_to_container(
                    id,
                    Some(options.build()),
                    bollard::body_full(archive.into()),
                )
                .await
                .with_context(|| format!("copying {} into the container", file.path))?;
        }
        Ok(())
    }

    /// Podman looks short names up as `docker.io/library/<name>`; ask for that too.
    async fn inspect_image_id(&self, reference: &str) -> anyhow::Result<Option<ImageId>> {
        match self.client.inspect_image(reference).await {
            Ok(image) => Ok(image.id.map(ImageId::new)),
            Err(error) if is_status(&error, 404) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }
}

#[async_trait]
impl Engine for Docker {
    async fn info(&self) -> anyhow::Result<EngineInfo> {
        Ok(self.info.clone())
    }

    async fn container_events(&self) -> anyhow::Result<super::ContainerEvents> {
        // Podman 4.3 answers a `label` filter without a value with no events at all: the
        // project label is looked for here instead.
        let filters = HashMap::from([("type".to_owned(), vec!["container".to_owned()])]);
        let options = bollard::query_parameters::EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        // The request's timeout covers the answer's headers, not the stream that follows.
        let mut events = self.client.events(Some(options)).peekable();
        // The first event can be far off; a refused connection shows at once.
        let first = tokio::time::timeout(Duration::from_millis(500), Pin::new(&mut events).peek());
        if let Ok(Some(Err(error))) = first.await {
            bail!("following the engine's events: {error}");
        }
        let events = events.filter_map(|event| async move {
            let event = match event.context("following the engine's events") {
                Ok(event) => event,
                Err(error) => return Some(Err(error)),
            };
            let actor = event.actor.unwrap_or_default();
            let mut attributes = actor.attributes.unwrap_or_default();
            let project = attributes.remove(PROJECT_LABEL)?;
            Some(Ok(super::ContainerEvent {
                action: event.action.unwrap_or_default(),
                id: actor.id.unwrap_or_default(),
                project: Some(project),
            }))
        });
        Ok(Box::pin(events))
    }

    async fn containers(&self, project: Option<&str>) -> anyhow::Result<Vec<Container>> {
        let label = match project {
            Some(project) => format!("{PROJECT_LABEL}={project}"),
            None => PROJECT_LABEL.to_owned(),
        };
        let filters = serde_json::json!({ "label": [label] }).to_string();
        let path = self.api_path(&format!(
            "/containers/json?all=1&filters={}",
            raw::encode(&filters)
        ));
        let listed: Vec<raw::ContainerSummary> =
            raw::get_json(&self.endpoint, &path, Duration::from_secs(REQUEST_TIMEOUT))
                .await
                .and_then(|listed| listed.context("the engine does not list containers"))
                .with_context(|| format!("listing containers labelled {label}"))?;
        Ok(listed
            .into_iter()
            .map(|summary| Container {
                name: summary
                    .names
                    .first()
                    .map(|name| name.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                id: summary.id,
                image: summary.image,
                image_id: ImageId::new(summary.image_id),
                labels: summary.labels.unwrap_or_default(),
                state: parse_state(&summary.state),
            })
            .collect())
    }

    async fn inspect(&self, id: &str) -> anyhow::Result<ContainerStatus> {
        let inspected = self
            .inspect_raw(id)
            .await
            .with_context(|| format!("inspecting container {id}"))?;
        let state = inspected.state;
        Ok(ContainerStatus {
            state: parse_state(&state.status),
            exit_code: state.exit_code,
            health: state.health.and_then(|h| parse_health(&h.status)),
        })
    }

    async fn image_id(&self, reference: &str) -> anyhow::Result<Option<ImageId>> {
        let context = || format!("inspecting image {reference}");
        let found = self
            .inspect_image_id(reference)
            .await
            .with_context(context)?;
        if found.is_some() || self.kind() != EngineKind::Podman {
            return Ok(found);
        }
        match docker_io_name(reference) {
            Some(full) => self.inspect_image_id(&full).await.with_context(context),
            None => Ok(None),
        }
    }

    async fn image_digests(&self, image: &str) -> anyhow::Result<Vec<String>> {
        let inspected = self
            .client
            .inspect_image(image)
            .await
            .with_context(|| format!("inspecting image {image}"))?;
        Ok(inspected.repo_digests.unwrap_or_default())
    }

    /// Docker asks the registry through its distribution endpoint, with its own view of
    /// registries (mirrors, insecure ones). Podman 4.3 has no such endpoint (it answers 404),
    /// so for Podman stackhook asks the registry itself (`registry::digest`).
    async fn registry_digest(&self, reference: &str) -> anyhow::Result<String> {
        if self.kind() == EngineKind::Podman {
            return super::registry::digest(reference).await;
        }
        let inspected = self
            .client
            .inspect_registry_image(reference, None)
            .await
            .with_context(|| format!("asking the registry for {reference} through the engine"))?;
        inspected
            .descriptor
            .digest
            .with_context(|| format!("the engine gave no digest for {reference}"))
    }

    async fn pull(
        &self,
        reference: &str,
        progress: &(dyn for<'a> Fn(&'a str) + Send + Sync),
    ) -> anyhow::Result<()> {
        if self.kind() == EngineKind::Podman && loopback_registry(reference) {
            return self.pull_over_plain_http(reference, progress).await;
        }
        let options = CreateImageOptionsBuilder::default()
            .from_image(reference)
            .build();
        // A pull takes as long as the registry needs; the stream ends when it is done.
        let client = self.client_waiting(Duration::from_secs(3600));
        let mut stream = client.create_image(Some(options), None, None);
        while let Some(info) = stream.next().await {
            let info = info.with_context(|| format!("pulling image {reference}"))?;
            let line = [info.id, info.status]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            if !line.is_empty() {
                progress(&line);
            }
        }
        Ok(())
    }

    async fn build(
        &self,
        tag: &str,
        build: &compose::Build,
        progress: &(dyn for<'a> Fn(&'a str) + Send + Sync),
    ) -> anyhow::Result<()> {
        let context_dir = build.context.clone();
        let archive = tokio::task::spawn_blocking(move || archive_context(&context_dir))
            .await
            .context("archiving the build context")?
            .with_context(|| format!("archiving build context {}", build.context.display()))?;
        let args: HashMap<&str, &str> = build
            .args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut options = BuildImageOptionsBuilder::default()
            .t(tag)
            .dockerfile(&build.dockerfile)
            .buildargs(&args)
            .rm(true);
        if let Some(target) = &build.target {
            options = options.target(target);
        }
        if !build.cache_from.is_empty() {
            options = options.cachefrom(&build.cache_from);
        }
        if let Some(network) = &build.network {
            options = options.networkmode(network);
        }
        // The engine reads one `extrahosts` parameter per host; `compose::load` allows one.
        if let Some(host) = build.extra_hosts.first() {
            options = options.extrahosts(host);
        }
        if !build.labels.is_empty() {
            options = options.labels(&to_hash_map(&build.labels));
        }
        if let Some(size) = build.shm_size {
            options = options.shmsize(i32::try_from(size).unwrap_or(i32::MAX));
        }
        if build.no_cache {
            options = options.nocache(true);
        }
        if build.pull {
            options = options.pull("1");
        }
        if let Some(platform) = &build.platform {
            options = options.platform(platform);
        }
        let client = self.client_waiting(Duration::from_secs(3600));
        let mut stream = client.build_image(
            options.build(),
            None,
            Some(bollard::body_full(archive.into())),
        );
        while let Some(info) = stream.next().await {
            let info = info.with_context(|| format!("building image {tag}"))?;
            if let Some(message) = info.error_detail.and_then(|detail| detail.message) {
                bail!("building image {tag}: {message}");
            }
            let line = info.stream.or(info.status).unwrap_or_default();
            for line in line.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                progress(line);
            }
        }
        Ok(())
    }

    async fn ensure_network(&self, network: &compose::Network) -> anyhow::Result<()> {
        let name = &network.name;
        match self.client.inspect_network(name, None).await {
            Ok(_) => return Ok(()),
            Err(error) if is_status(&error, 404) => {}
            Err(error) => {
                return Err(error).with_context(|| format!("inspecting network {name}"));
            }
        }
        if network.external {
            bail!(
                "network {name} is declared as external, but does not exist; \
                 create it with `docker network create {name}`"
            );
        }
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: network.driver.clone(),
            internal: Some(network.internal),
            attachable: Some(network.attachable),
            enable_ipv6: network.enable_ipv6.then_some(true),
            ipam: network.ipam.as_ref().map(ipam),
            options: Some(to_hash_map(&network.driver_opts)),
            labels: Some(to_hash_map(&network.labels)),
            ..Default::default()
        };
        match self.client.create_network(request).await {
            Ok(_) => Ok(()),
            // Another deployment created it between our inspect and create.
            Err(error) if is_status(&error, 409) => Ok(()),
            Err(error) => Err(error).with_context(|| format!("creating network {name}")),
        }
    }

    async fn networks(&self, project: &str) -> anyhow::Result<Vec<String>> {
        let filters = HashMap::from([("label", vec![format!("{PROJECT_LABEL}={project}")])]);
        let options = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let networks = self
            .client
            .list_networks(Some(options))
            .await
            .with_context(|| format!("listing networks of project {project}"))?;
        let mut names: Vec<String> = networks.into_iter().filter_map(|n| n.name).collect();
        names.sort();
        Ok(names)
    }

    async fn remove_network(&self, name: &str) -> anyhow::Result<()> {
        match self.client.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(error) if is_status(&error, 404) => Ok(()),
            Err(error) => Err(error).with_context(|| format!("removing network {name}")),
        }
    }

    async fn ensure_volume(&self, volume: &compose::Volume) -> anyhow::Result<()> {
        let name = &volume.name;
        match self.client.inspect_volume(name).await {
            Ok(_) => return Ok(()),
            Err(error) if is_status(&error, 404) => {}
            Err(error) => return Err(error).with_context(|| format!("inspecting volume {name}")),
        }
        if volume.external {
            bail!(
                "volume {name} is declared as external, but does not exist; \
                 create it with `docker volume create {name}`"
            );
        }
        let request = VolumeCreateRequest {
            name: Some(name.clone()),
            driver: volume.driver.clone(),
            // Compose sends no options when the file gives none, and Docker then shows
            // `"Options": null`; an empty map would show `{}`.
            driver_opts: (!volume.driver_opts.is_empty()).then(|| to_hash_map(&volume.driver_opts)),
            labels: Some(to_hash_map(&volume.labels)),
            ..Default::default()
        };
        self.client
            .create_volume(request)
            .await
            .with_context(|| format!("creating volume {name}"))?;
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> anyhow::Result<String> {
        let name = &spec.name;
        let mut ids = BTreeMap::new();
        for (service, container) in &spec.service_containers {
            let id = self
                .inspect_raw(container)
                .await
                .with_context(|| format!("looking up the container of service {service}"))?
                .id;
            ids.insert(service.clone(), id);
        }
        let mut options = CreateContainerOptionsBuilder::default().name(name);
        if let Some(platform) = &spec.service.platform {
            options = options.platform(platform);
        }
        let created = self
            .client
            .create_container(Some(options.build()), create_body(spec, self.kind(), &ids))
            .await
            .with_context(|| format!("creating container {name}"))?;
        if !spec.files.is_empty() {
            let copied = self.copy_files(&created.id, &spec.files).await;
            if let Err(error) =
                copied.with_context(|| format!("writing files into container {name}"))
            {
                let _ = self.remove(&created.id).await;
                return Err(error);
            }
        }
        for attachment in extra_attachments(spec) {
            let request = NetworkConnectRequest {
                container: created.id.clone(),
                endpoint_config: Some(endpoint_settings(attachment)),
            };
            let connected = self
                .client
                .connect_network(&attachment.network, request)
                .await
                .with_context(|| {
                    format!(
                        "connecting container {name} to network {}",
                        attachment.network
                    )
                });
            if let Err(error) = connected {
                // Leave no half-made container behind for the next plan to trip over.
                let _ = self.remove(&created.id).await;
                return Err(error);
            }
        }
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> anyhow::Result<()> {
        match self.client.start_container(id, None).await {
            Ok(()) => Ok(()),
            // 304: already running.
            Err(error) if is_status(&error, 304) => Ok(()),
            Err(error) => Err(error).with_context(|| format!("starting container {id}")),
        }
    }

    async fn stop(&self, id: &str, timeout: Option<Duration>) -> anyhow::Result<()> {
        let mut options = StopContainerOptionsBuilder::default();
        if let Some(timeout) = timeout {
            options = options.t(i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX));
        }
        // The engine answers after the grace period at worst; the default one is 10 seconds.
        let client = self.client_waiting(timeout.unwrap_or(Duration::from_secs(10)));
        match client.stop_container(id, Some(options.build())).await {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(error) if is_status(&error, 304) => Ok(()),
            Err(error) => Err(error).with_context(|| format!("stopping container {id}")),
        }
    }

    async fn remove(&self, id: &str) -> anyhow::Result<()> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.client.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(error) if is_status(&error, 404) => Ok(()),
            Err(error) => Err(error).with_context(|| format!("removing container {id}")),
        }
    }

    async fn rename(&self, id: &str, name: &str) -> anyhow::Result<()> {
        let options = RenameContainerOptionsBuilder::default().name(name).build();
        self.client
            .rename_container(id, options)
            .await
            .with_context(|| format!("renaming container {id} to {name}"))
    }

    async fn health(&self, id: &str, check: &compose::Healthcheck) -> anyhow::Result<Health> {
        let context = || format!("checking the health of container {id}");
        let status = self.inspect(id).await.with_context(context)?;
        match status.state {
            State::Running => {}
            State::Created | State::Restarting => return Ok(Health::Starting),
            _ => return Ok(Health::Unhealthy),
        }
        match (self.kind(), status.health) {
            // Docker runs the check itself; a container without one is checked through exec.
            (EngineKind::Docker, Some(health)) => Ok(health),
            // Podman's verdict is trusted only once it has one: without systemd it never
            // leaves `starting` (FIELD-NOTES).
            (EngineKind::Podman, Some(health @ (Health::Healthy | Health::Unhealthy))) => {
                Ok(health)
            }
            _ => match self.exec_check(id, check).await {
                Ok(health) => Ok(health),
                // The container may stop between the inspect and the exec; that is a reading,
                // not an error.
                Err(error) => match self.inspect(id).await {
                    Ok(status) if status.state != State::Running => Ok(Health::Unhealthy),
                    _ => Err(error).with_context(context),
                },
            },
        }
    }

    async fn logs(&self, id: &str, tail: usize) -> anyhow::Result<String> {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&tail.to_string())
            .build();
        let mut stream = self.client.logs(id, Some(options));
        let mut text = String::new();
        while let Some(output) = stream.next().await {
            let output = output.with_context(|| format!("reading the logs of container {id}"))?;
            text.push_str(&String::from_utf8_lossy(&output.into_bytes()));
        }
        Ok(text)
    }

    /// As Docker Compose runs a hook (`runHook` in its hook.go): the hook's user, privileges,
    /// environment and working directory, in the container as it runs. Compose's `up -d` starts
    /// the exec detached and polls it; this one attaches, to keep the output for a failure's
    /// message, which changes nothing inside the container.
    async fn exec(&self, id: &str, hook: &compose::Hook) -> anyhow::Result<ExecOutcome> {
        let environment = env_list(&hook.environment);
        let config = ExecConfig {
            cmd: Some(hook.command.clone()),
            user: hook.user.clone(),
            privileged: Some(hook.privileged),
            env: (!environment.is_empty()).then_some(environment),
            working_dir: hook.working_dir.clone(),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = self
            .client
            .create_exec(id, config)
            .await
            .with_context(|| format!("creating an exec in container {id}"))?;
        let client = self.client_waiting(HOOK_TIMEOUT);
        let run = async {
            let mut output = Vec::new();
            let started = client
                .start_exec(&exec.id, Some(StartExecOptions::default()))
                .await?;
            if let StartExecResults::Attached {
                output: mut stream, ..
            } = started
            {
                while let Some(chunk) = stream.next().await {
                    output.extend_from_slice(&chunk?.into_bytes());
                    let excess = output.len().saturating_sub(HOOK_OUTPUT_BYTES);
                    output.drain(..excess);
                }
            }
            anyhow::Ok(output)
        };
        let output = tokio::time::timeout(HOOK_TIMEOUT, run)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "it did not end within {}",
                    humantime::format_duration(HOOK_TIMEOUT)
                )
            })?
            .with_context(|| format!("running an exec in container {id}"))?;
        // The exit code can lag the end of the output by a moment.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let inspected = self.client.inspect_exec(&exec.id).await?;
            match (inspected.running, inspected.exit_code) {
                (Some(false) | None, Some(exit_code)) => {
                    return Ok(ExecOutcome {
                        exit_code,
                        output: String::from_utf8_lossy(&output).into_owned(),
                    });
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    bail!("exec {} in container {id} has no exit code", exec.id)
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn swarm_manager(&self) -> anyhow::Result<bool> {
        if self.info.kind == EngineKind::Podman {
            return Ok(false);
        }
        swarm::swarm_manager(&self.endpoint).await
    }

    async fn services(&self, namespace: &str) -> anyhow::Result<Vec<super::swarm::Object>> {
        swarm::services(&self.endpoint, namespace)
            .await
            .with_context(|| format!("listing the services of stack {namespace}"))
    }

    async fn service_state(&self, id: &str) -> anyhow::Result<super::swarm::ServiceState> {
        swarm::service_state(&self.endpoint, id).await
    }

    async fn create_service(&self, spec: &super::swarm::ServiceSpec) -> anyhow::Result<String> {
        swarm::create_service(&self.endpoint, spec).await
    }

    async fn update_service(
        &self,
        id: &str,
        version: u64,
        spec: &super::swarm::ServiceSpec,
    ) -> anyhow::Result<()> {
        swarm::update_service(&self.endpoint, id, version, spec).await
    }

    async fn remove_service(&self, id: &str) -> anyhow::Result<()> {
        swarm::remove(&self.endpoint, &format!("/services/{id}"), &[])
            .await
            .with_context(|| format!("removing service {id}"))
    }

    async fn tasks(&self, service: &str) -> anyhow::Result<Vec<super::swarm::Task>> {
        swarm::tasks(&self.endpoint, service)
            .await
            .with_context(|| format!("listing the tasks of service {service}"))
    }

    async fn stack_networks(&self, namespace: &str) -> anyhow::Result<Vec<String>> {
        swarm::stack_networks(&self.endpoint, namespace).await
    }

    async fn ensure_object(
        &self,
        kind: super::swarm::ObjectKind,
        name: &str,
        labels: &BTreeMap<String, String>,
        data: &[u8],
    ) -> anyhow::Result<String> {
        swarm::ensure_object(&self.endpoint, kind, name, labels, data).await
    }

    async fn objects(
        &self,
        kind: super::swarm::ObjectKind,
        namespace: &str,
    ) -> anyhow::Result<Vec<super::swarm::Object>> {
        swarm::objects(&self.endpoint, kind, namespace)
            .await
            .with_context(|| format!("listing the {kind}s of stack {namespace}"))
    }

    async fn remove_object(&self, kind: super::swarm::ObjectKind, id: &str) -> anyhow::Result<()> {
        // A secret or config still in use (by a service Swarm rolled back) stays: 400 says so.
        swarm::remove(&self.endpoint, &format!("/{kind}s/{id}"), &[400])
            .await
            .with_context(|| format!("removing {kind} {id}"))
    }
}

/// The most output of a hook kept for its error message: its end.
const HOOK_OUTPUT_BYTES: usize = 4096;

async fn connect_one(candidate: &str) -> anyhow::Result<Docker> {
    let version = bollard::API_DEFAULT_VERSION;
    let (client, endpoint) = if let Some(address) = candidate
        .strip_prefix("tcp://")
        .or_else(|| candidate.strip_prefix("http://"))
    {
        let address = address.trim_end_matches('/').to_owned();
        let client = bollard::Docker::connect_with_http(candidate, REQUEST_TIMEOUT, version)?;
        (client, raw::Endpoint::Tcp(address))
    } else {
        let path = candidate.strip_prefix("unix://").unwrap_or(candidate);
        if !path.starts_with('/') {
            bail!("not a socket path nor a unix://, tcp:// or http:// address");
        }
        let client = bollard::Docker::connect_with_unix(path, REQUEST_TIMEOUT, version)?;
        (client, raw::Endpoint::Unix(path.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), client.ping())
        .await
        .context("no answer to ping within 5 seconds")?
        .context("ping")?;
    let client = client
        .negotiate_version()
        .await
        .context("negotiating the API version")?;
    let version = client
        .version()
        .await
        .context("reading the engine version")?;
    let podman = version
        .components
        .iter()
        .flatten()
        .any(|component| component.name == "Podman Engine");
    let info = EngineInfo {
        kind: if podman {
            EngineKind::Podman
        } else {
            EngineKind::Docker
        },
        version: version.version.unwrap_or_default(),
        api_version: version.api_version.unwrap_or_default(),
    };
    Ok(Docker {
        client,
        endpoint,
        address: candidate.to_owned(),
        info,
    })
}

/// Variables as the engine takes them, sorted by name: `NAME=value`, or a bare `NAME` for one
/// without a value (Compose sends it so, and the engine keeps it).
fn env_list(environment: &BTreeMap<String, Option<String>>) -> Vec<String> {
    environment
        .iter()
        .map(|(name, value)| match value {
            Some(value) => format!("{name}={value}"),
            None => name.clone(),
        })
        .collect()
}

fn is_status(error: &ApiError, code: u16) -> bool {
    matches!(error, ApiError::DockerResponseServerError { status_code, .. } if *status_code == code)
}

/// A state name as the engine reports it. Names outside Docker's list (Podman's `stopped`,
/// `configured`) are kept, not refused.
fn parse_state(name: &str) -> State {
    match name {
        "created" => State::Created,
        "running" => State::Running,
        "paused" => State::Paused,
        "restarting" => State::Restarting,
        "removing" => State::Removing,
        // Podman 4.3 calls a container that exited and was cleaned up `stopped`.
        "exited" | "stopped" => State::Exited,
        "dead" => State::Dead,
        other => State::Unknown(other.to_owned()),
    }
}

fn parse_health(name: &str) -> Option<Health> {
    match name {
        "starting" => Some(Health::Starting),
        "healthy" => Some(Health::Healthy),
        "unhealthy" => Some(Health::Unhealthy),
        _ => None,
    }
}

/// The argv that runs a health check's test: `CMD` runs its arguments, `CMD-SHELL` its string
/// through `/bin/sh -c`, as the engine does. `None` when there is nothing to run.
fn check_command(test: &[String]) -> Option<Vec<String>> {
    match test.split_first()? {
        (kind, rest) if kind == "CMD" => (!rest.is_empty()).then(|| rest.to_vec()),
        (kind, rest) if kind == "CMD-SHELL" => {
            Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), rest.join(" ")])
        }
        (kind, _) if kind == "NONE" => None,
        // A bare list is taken as `CMD-SHELL`, as the engines do with a string test.
        _ => Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), test.join(" ")]),
    }
}

/// `name[:tag]` → `docker.io/library/name[:tag]`, `user/name` → `docker.io/user/name`;
/// `None` for names that already carry a registry, and for image ids.
fn docker_io_name(reference: &str) -> Option<String> {
    if reference.starts_with("sha256:") {
        return None;
    }
    match reference.split_once('/') {
        None => Some(format!("docker.io/library/{reference}")),
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => None,
        Some(_) => Some(format!("docker.io/{reference}")),
    }
}

fn ipam(ipam: &compose::Ipam) -> Ipam {
    Ipam {
        driver: ipam.driver.clone(),
        config: (!ipam.config.is_empty()).then(|| {
            ipam.config
                .iter()
                .map(|pool| IpamConfig {
                    subnet: pool.subnet.clone(),
                    ip_range: pool.ip_range.clone(),
                    gateway: pool.gateway.clone(),
                    auxiliary_addresses: (!pool.aux_addresses.is_empty())
                        .then(|| to_hash_map(&pool.aux_addresses)),
                })
                .collect()
        }),
        // Compose v2.40 does not send `ipam.options` (`resolveOrCreateNetwork`).
        options: None,
    }
}

/// One file as a tar archive, as Compose's `createTar` writes it.
fn file_archive(file: &ContainerFile) -> anyhow::Result<Vec<u8>> {
    let mut header = tar::Header::new_gnu();
    header.set_size(file.content.len() as u64);
    header.set_mode(file.mode);
    header.set_uid(u64::from(file.uid.unwrap_or(0)));
    header.set_gid(u64::from(file.gid.unwrap_or(0)));
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs()),
    );
    let mut archive = tar::Builder::new(Vec::new());
    archive.append_data(
        &mut header,
        file.path.trim_start_matches('/'),
        file.content.as_bytes(),
    )?;
    Ok(archive.into_inner()?)
}

/// The build context as a tar archive. Symbolic links stay links, as the docker CLI sends them.
fn archive_context(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    archive.follow_symlinks(false);
    archive.append_dir_all(".", dir)?;
    Ok(archive.into_inner()?)
}

fn to_hash_map(map: &std::collections::BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Whether an image reference names a registry on this host's loopback (`localhost:5000/app`,
/// `127.0.0.1:5000/app`), which Docker reaches over plain HTTP by default.
fn loopback_registry(reference: &str) -> bool {
    reference
        .split_once('/')
        .is_some_and(|(first, _)| super::registry::loopback(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn loopback_registries() {
        for reference in [
            "localhost:5000/app:1",
            "127.0.0.1:36053/a/b:2",
            "localhost/app",
        ] {
            assert!(loopback_registry(reference), "{reference}");
        }
        for reference in [
            "busybox",
            "library/app:1",
            "ghcr.io/a/b",
            "10.0.0.1:5000/app",
        ] {
            assert!(!loopback_registry(reference), "{reference}");
        }
    }

    #[test]
    fn unknown_states_are_kept_and_podmans_stopped_is_exited() {
        assert_eq!(parse_state("running"), State::Running);
        assert_eq!(parse_state("stopped"), State::Exited);
        assert_eq!(parse_state("frozen"), State::Unknown("frozen".to_owned()));
    }

    #[test]
    fn check_commands_follow_the_test_kind() {
        assert_eq!(
            check_command(&strings(&["CMD", "true", "x"])),
            Some(strings(&["true", "x"]))
        );
        assert_eq!(
            check_command(&strings(&["CMD-SHELL", "wget -q localhost || exit 1"])),
            Some(strings(&["/bin/sh", "-c", "wget -q localhost || exit 1"]))
        );
        assert_eq!(check_command(&strings(&["NONE"])), None);
        assert_eq!(check_command(&[]), None);
    }

    #[test]
    fn short_names_resolve_on_docker_io() {
        assert_eq!(
            docker_io_name("bb:latest").as_deref(),
            Some("docker.io/library/bb:latest")
        );
        assert_eq!(
            docker_io_name("me/app").as_deref(),
            Some("docker.io/me/app")
        );
        assert_eq!(docker_io_name("localhost/app"), None);
        assert_eq!(docker_io_name("ghcr.io/me/app"), None);
        assert_eq!(docker_io_name("localhost:5000/app"), None);
    }
}
