//! Swarm mode (issue 12): a stack deployed as a Swarm stack through the engine API, the way
//! `docker stack deploy` does it. Services are `<stack>_<service>` and carry
//! `com.docker.stack.namespace`; networks are overlay networks `<stack>_<key>`; secrets and configs
//! are Swarm objects named by their content, since Swarm cannot change one in place.
//!
//! Each service carries the digest of the spec stackhook sent (`io.stackhook.spec-hash`): a
//! service whose digest matches gets no update call. A changed one is updated at the version it
//! was read at, and the deploy waits until its tasks run the new spec, or Swarm gives up on it
//! (a paused update, or its own rollback with `failure_action: rollback`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::apply::Log;
use super::labels;
use super::plan::{Kind, Summary};
use crate::engine::Engine;
use crate::engine::swarm::{
    Attachment, FileReference, IMAGE_LABEL, NAMESPACE_LABEL, ObjectKind, ServiceSpec, Task,
};
use crate::stack::compose::{self, FileKind, FileSource, Project};

/// The digest of the spec stackhook last sent for a service.
pub const SPEC_HASH: &str = "io.stackhook.spec-hash";

/// How often a converging service is looked at.
const POLL: Duration = Duration::from_millis(250);

/// Failed tasks of a new spec after which a service is taken to never start.
const FAILED_TASKS: usize = 3;

/// A secret's or config's bytes, and the content-addressed name of its Swarm object.
struct Blob {
    kind: ObjectKind,
    name: String,
    data: Vec<u8>,
}

/// Brings the stack to what `project` wants. Returns a summary per service; in a dry run it
/// touches nothing. `digest_key`, the state directory's, keys the digests that name secrets and
/// configs by their content.
pub async fn deploy(
    engine: &dyn Engine,
    project: &Project,
    digest_key: &[u8],
    origin: &labels::Origin<'_>,
    dry_run: bool,
    timeout: Duration,
    log: &Log,
) -> anyhow::Result<Vec<Summary>> {
    let namespace = project.name.as_str();
    let blobs = blobs(project, digest_key)?;
    let mut wanted = specs(project, &blobs, origin)?;
    let existing = engine.services(namespace).await?;
    let mut summaries = Vec::new();
    let mut changes = Vec::new();
    for (key, spec) in &wanted {
        let current = existing.iter().find(|service| service.name == spec.name);
        let hash = &spec.labels[SPEC_HASH];
        let (kind, reason) = match current {
            None => (Kind::Create, "new service"),
            Some(service) if service.labels.get(SPEC_HASH) == Some(hash) => {
                (Kind::Keep, "spec unchanged")
            }
            Some(_) => (Kind::Recreate, "spec changed: rolling update"),
        };
        summaries.push(Summary {
            service: key.clone(),
            number: 1,
            kind,
            reason: Some(reason.to_owned()),
        });
        if kind != Kind::Keep {
            changes.push((key.clone(), current));
        }
    }
    let wanted_names: BTreeSet<&str> = wanted.values().map(|spec| spec.name.as_str()).collect();
    let gone: Vec<_> = existing
        .iter()
        .filter(|service| !wanted_names.contains(service.name.as_str()))
        .collect();
    for service in &gone {
        summaries.push(removal(
            namespace,
            &service.name,
            "service is no longer in the compose file",
        ));
    }
    if dry_run || (changes.is_empty() && gone.is_empty()) {
        return Ok(summaries);
    }

    networks(engine, project).await?;
    let namespace_labels = BTreeMap::from([(NAMESPACE_LABEL.to_owned(), namespace.to_owned())]);
    let mut ids = BTreeMap::new();
    for blob in blobs.values() {
        let id = engine
            .ensure_object(blob.kind, &blob.name, &namespace_labels, &blob.data)
            .await
            .with_context(|| format!("{} {}", blob.kind, blob.name))?;
        ids.insert(blob.name.clone(), id);
    }
    for spec in wanted.values_mut() {
        for file in spec.secrets.iter_mut().chain(spec.configs.iter_mut()) {
            file.id = ids.get(&file.object).cloned().unwrap_or_default();
        }
    }
    let changes: Vec<_> = changes
        .into_iter()
        .map(|(key, current)| (&wanted[&key], key, current))
        .collect();
    let mut converging = Vec::new();
    for (spec, key, current) in changes {
        let id = match current {
            None => {
                log.line(format!("creating service {}", spec.name));
                engine.create_service(spec).await?
            }
            Some(service) => {
                log.line(format!("updating service {}", spec.name));
                engine
                    .update_service(&service.id, service.version, spec)
                    .await?;
                service.id.clone()
            }
        };
        converging.push(async move {
            converge(engine, &id, &spec.name, timeout, log)
                .await
                .with_context(|| format!("service {key}"))
        });
    }
    let results = futures_util::future::join_all(converging).await;
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(Result::err)
        .map(|error| format!("{error:#}"))
        .collect();
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    for service in gone {
        log.line(format!("removing service {}", service.name));
        engine.remove_service(&service.id).await?;
    }
    prune_objects(engine, namespace, &blobs).await?;
    Ok(summaries)
}

/// Takes a whole stack down: its services, then its secrets, configs and networks. Volumes
/// stay, as they do in standalone mode.
pub async fn take_down(
    engine: &dyn Engine,
    namespace: &str,
    dry_run: bool,
    log: &Log,
) -> anyhow::Result<Vec<Summary>> {
    let services = engine.services(namespace).await?;
    let summaries = services
        .iter()
        .map(|service| {
            removal(
                namespace,
                &service.name,
                "stack is no longer in the repository",
            )
        })
        .collect();
    if dry_run {
        return Ok(summaries);
    }
    for service in &services {
        log.line(format!("removing service {}", service.name));
        engine.remove_service(&service.id).await?;
    }
    prune_objects(engine, namespace, &BTreeMap::new()).await?;
    // A network is free once the removed services' tasks have let go of it.
    let deadline = Instant::now() + Duration::from_secs(60);
    for network in engine.stack_networks(namespace).await? {
        loop {
            match engine.remove_network(&network).await {
                Ok(()) => break,
                Err(error) if Instant::now() > deadline => return Err(error),
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }
    Ok(summaries)
}

/// The compose key of the service Swarm names `<namespace>_<key>`.
pub fn service_key<'a>(namespace: &str, name: &'a str) -> &'a str {
    name.strip_prefix(namespace)
        .and_then(|rest| rest.strip_prefix('_'))
        .unwrap_or(name)
}

fn removal(namespace: &str, name: &str, reason: &str) -> Summary {
    Summary {
        service: service_key(namespace, name).to_owned(),
        number: 1,
        kind: Kind::Remove,
        reason: Some(reason.to_owned()),
    }
}

/// Creates the stack's overlay networks that its services join (external ones must exist).
async fn networks(engine: &dyn Engine, project: &Project) -> anyhow::Result<()> {
    let keys: BTreeSet<&String> = project
        .services
        .values()
        .filter(|service| service.network_mode.is_none())
        .flat_map(|service| service.networks.keys())
        .collect();
    for key in keys {
        let network = network(project, key);
        engine
            .ensure_network(&network)
            .await
            .with_context(|| format!("network {}", network.name))?;
    }
    Ok(())
}

/// A network as `docker stack deploy` creates it: overlay unless the file says otherwise,
/// labelled with the namespace.
fn network(project: &Project, key: &str) -> compose::Network {
    let mut network = project
        .networks
        .get(key)
        .cloned()
        .unwrap_or_else(|| compose::Network {
            name: format!("{}_{key}", project.name),
            ..Default::default()
        });
    if !network.external {
        network.driver.get_or_insert_with(|| "overlay".to_owned());
        network
            .labels
            .insert(NAMESPACE_LABEL.to_owned(), project.name.clone());
    }
    network
}

/// Every secret and config the services use, by kind and key, with its content-addressed name.
fn blobs(
    project: &Project,
    digest_key: &[u8],
) -> anyhow::Result<BTreeMap<(FileKind, String), Blob>> {
    let mut blobs = BTreeMap::new();
    for file in project.services.values().flat_map(|service| &service.files) {
        let key = (file.kind, file.name.clone());
        if blobs.contains_key(&key) {
            continue;
        }
        // A SOPS-encrypted file goes into Swarm decrypted, straight from memory.
        let data = match &file.source {
            FileSource::File(path) => match project.sealed.get(path) {
                Some(decrypted) => decrypted.as_bytes().to_vec(),
                None => {
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
                }
            },
            FileSource::Content(content) => content.clone().into_bytes(),
        };
        // Keyed, so that the name, which anyone who lists secrets sees, says nothing of a
        // secret's value.
        let mut mac =
            Hmac::<Sha256>::new_from_slice(digest_key).expect("HMAC takes any key length");
        mac.update(&data);
        let digest = hex::encode(mac.finalize().into_bytes());
        let kind = match file.kind {
            FileKind::Secret => ObjectKind::Secret,
            FileKind::Config => ObjectKind::Config,
        };
        let name = format!("{}_{}_{}", project.name, file.name, &digest[..12]);
        blobs.insert(key, Blob { kind, name, data });
    }
    Ok(blobs)
}

/// Removes the stack's secrets and configs that no wanted service uses any more.
async fn prune_objects(
    engine: &dyn Engine,
    namespace: &str,
    blobs: &BTreeMap<(FileKind, String), Blob>,
) -> anyhow::Result<()> {
    let keep: BTreeSet<&str> = blobs.values().map(|blob| blob.name.as_str()).collect();
    for kind in [ObjectKind::Secret, ObjectKind::Config] {
        for object in engine.objects(kind, namespace).await? {
            if !keep.contains(object.name.as_str()) {
                engine.remove_object(kind, &object.id).await?;
            }
        }
    }
    Ok(())
}

/// The services' specs by their key, each labelled with its own digest.
fn specs(
    project: &Project,
    blobs: &BTreeMap<(FileKind, String), Blob>,
    origin: &labels::Origin<'_>,
) -> anyhow::Result<BTreeMap<String, ServiceSpec>> {
    let namespace = &project.name;
    let stack_label = || BTreeMap::from([(NAMESPACE_LABEL.to_owned(), namespace.clone())]);
    let mut specs = BTreeMap::new();
    for (key, service) in &project.services {
        let Some(image) = service.image.clone() else {
            bail!(
                "service {key}: Swarm runs images, and this service only has build:; build and push an image, and name it in image:"
            );
        };
        if let Some(mode) = &service.network_mode {
            bail!("service {key}: network_mode {mode:?} is not available to Swarm services");
        }
        let mut labels = service.swarm.labels.clone();
        labels.extend(stack_label());
        labels.insert(IMAGE_LABEL.to_owned(), image.clone());
        labels.insert(labels::STACKHOOK_STACK.to_owned(), origin.stack.to_owned());
        let mut container_labels = service.labels.clone();
        container_labels.extend(stack_label());
        let mut networks: Vec<Attachment> = service
            .networks
            .iter()
            .map(|(network_key, attachment)| {
                let network = network(project, network_key);
                let mut aliases = attachment.aliases.clone();
                if !["host", "bridge", "none"].contains(&network.name.as_str()) {
                    aliases.push(key.clone());
                }
                Attachment {
                    network: network.name,
                    aliases,
                    driver_opts: attachment.driver_opts.clone(),
                }
            })
            .collect();
        networks.sort_by(|a, b| a.network.cmp(&b.network));
        let volumes = project
            .volumes
            .iter()
            .map(|(volume_key, volume)| {
                let mut volume = volume.clone();
                if !volume.external {
                    volume
                        .labels
                        .insert(NAMESPACE_LABEL.to_owned(), namespace.clone());
                }
                (volume_key.clone(), volume)
            })
            .collect();
        let reference = |file: &compose::ServiceFile| {
            let blob = &blobs[&(file.kind, file.name.clone())];
            let target = match file.kind {
                FileKind::Secret => file
                    .target
                    .strip_prefix("/run/secrets/")
                    .unwrap_or(&file.target)
                    .to_owned(),
                FileKind::Config if file.target == format!("/{}", file.name) => file.name.clone(),
                FileKind::Config => file.target.clone(),
            };
            FileReference {
                object: blob.name.clone(),
                id: String::new(),
                target,
                uid: file.uid.unwrap_or(0).to_string(),
                gid: file.gid.unwrap_or(0).to_string(),
                mode: file.mode.unwrap_or(0o444),
            }
        };
        let sorted = |kind: FileKind| {
            let mut references: Vec<FileReference> = service
                .files
                .iter()
                .filter(|file| file.kind == kind)
                .map(reference)
                .collect();
            references.sort_by(|a, b| (&a.object, &a.target).cmp(&(&b.object, &b.target)));
            references
        };
        let mut service = service.clone();
        service.image = Some(image);
        let mut spec = ServiceSpec {
            name: format!("{namespace}_{key}"),
            key: key.clone(),
            secrets: sorted(FileKind::Secret),
            configs: sorted(FileKind::Config),
            service,
            labels,
            container_labels,
            networks,
            volumes,
        };
        let hash = spec_hash(&spec);
        spec.labels.insert(SPEC_HASH.to_owned(), hash);
        specs.insert(key.clone(), spec);
    }
    Ok(specs)
}

/// The digest of everything a spec asks of Swarm: the service with its Swarm settings, which
/// the standalone config hash leaves out.
fn spec_hash(spec: &ServiceSpec) -> String {
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(spec).unwrap_or_default());
    hasher.update(serde_json::to_vec(&spec.service.swarm).unwrap_or_default());
    hex::encode(hasher.finalize())
}

/// Waits until the service's tasks run its current spec: as many running as it wants (all of a
/// global service's), and no rolling update under way. Fails when Swarm pauses or rolls back the
/// update, when tasks of the new spec keep failing, or at `timeout`.
async fn converge(
    engine: &dyn Engine,
    id: &str,
    name: &str,
    timeout: Duration,
    log: &Log,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = engine.service_state(id).await?;
        let tasks = engine.tasks(id).await?;
        let update = state.update.as_ref();
        match update.map(|u| u.state.as_str()) {
            Some("paused") => bail!(
                "Swarm paused its update of {name}: {}{}",
                update.map(|u| u.message.as_str()).unwrap_or_default(),
                errors(&tasks)
            ),
            Some("rollback_completed") => bail!(
                "Swarm rolled {name} back to its previous spec: {}{}",
                update.map(|u| u.message.as_str()).unwrap_or_default(),
                errors(&tasks)
            ),
            Some("rollback_paused") => bail!(
                "Swarm paused rolling {name} back: {}",
                update.map(|u| u.message.as_str()).unwrap_or_default()
            ),
            _ => {}
        }
        let updating =
            update.is_some_and(|u| u.state == "updating" || u.state == "rollback_started");
        let live: Vec<&Task> = tasks.iter().filter(|t| t.desired == "running").collect();
        let running = live.iter().filter(|t| t.state == "running").count() as u64;
        let done = if state.job {
            let complete = tasks.iter().filter(|t| t.state == "complete").count() as u64;
            live.is_empty() && complete >= state.replicas.unwrap_or(1)
        } else {
            match state.replicas {
                Some(replicas) => running == replicas,
                None => running > 0 && live.iter().all(|t| t.state == "running"),
            }
        };
        if done && !updating {
            log.line(format!("service {name} converged ({running} running)"));
            return Ok(());
        }
        let failed = tasks
            .iter()
            .filter(|t| matches!(t.state.as_str(), "failed" | "rejected"))
            .count();
        if failed >= FAILED_TASKS && !updating {
            bail!(
                "{name}: {failed} tasks of its new spec failed{}",
                errors(&tasks)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{name} did not converge within {} ({running} running){}",
                humantime::format_duration(timeout),
                errors(&tasks)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The distinct errors of failed tasks, as `: a; b`, or nothing.
fn errors(tasks: &[Task]) -> String {
    let errors: BTreeSet<&str> = tasks.iter().filter_map(|t| t.error.as_deref()).collect();
    match errors.is_empty() {
        true => String::new(),
        false => format!(": {}", errors.into_iter().collect::<Vec<_>>().join("; ")),
    }
}
