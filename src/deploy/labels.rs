//! The names and labels Docker Compose gives what it creates, so that `docker compose ps`, `logs`
//! and `down` work on what stackhook deployed, and stackhook can adopt what Compose deployed.
//!
//! Observed on Docker Compose v2.40.3 (`docker inspect` of a container, network and volume it
//! made): containers are named `<project>-<service>-1` with aliases `[<container>, <service>]` on
//! every network, networks `<project>_<key>`, volumes `<project>_<key>`. Pure: no IO.

use std::collections::BTreeMap;

use crate::engine::{Attachment, ContainerFile, ContainerSpec, ImageId};
use crate::stack::ConfigHash;
use crate::stack::compose::{self, Condition, Network, Project, Volume};

pub const PROJECT: &str = "com.docker.compose.project";
pub const SERVICE: &str = "com.docker.compose.service";
pub const CONTAINER_NUMBER: &str = "com.docker.compose.container-number";
pub const ONEOFF: &str = "com.docker.compose.oneoff";
pub const CONFIG_HASH: &str = "com.docker.compose.config-hash";
pub const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
pub const CONFIG_FILES: &str = "com.docker.compose.project.config_files";
pub const IMAGE: &str = "com.docker.compose.image";
pub const DEPENDS_ON: &str = "com.docker.compose.depends_on";
pub const VERSION: &str = "com.docker.compose.version";
pub const NETWORK: &str = "com.docker.compose.network";
pub const VOLUME: &str = "com.docker.compose.volume";
pub const STACKHOOK_COMMIT: &str = "io.stackhook.commit";
pub const STACKHOOK_STACK: &str = "io.stackhook.stack";

/// The Compose release whose labelling stackhook follows. Compose compares it with its own
/// version only to print a warning, so claiming the version we match keeps `ps` quiet.
pub const COMPOSE_VERSION: &str = "2.40.3";

/// What one deploy of a service is tied to.
pub struct Origin<'a> {
    pub stack: &'a str,
    pub commit: &'a str,
}

/// The container name Compose would use.
/// The name Compose gives a service's container `number` (from 1).
pub fn container_name(project: &Project, service: &str, number: u32) -> String {
    project.services[service]
        .container_name
        .clone()
        .unwrap_or_else(|| format!("{}-{service}-{number}", project.name))
}

/// How many containers run a service: `scale` / `deploy.replicas`, else one.
pub fn replicas(project: &Project, service: &str) -> u32 {
    project.services[service].scale.unwrap_or(1)
}

/// The request to create `service`'s container `number` (from 1). `image` is the reference to run
/// (the service's image, or the name a `build:` produced) and `image_id` its id (`None` only in a
/// dry run, for an image that is not there yet).
pub fn container_spec(
    project: &Project,
    service_name: &str,
    number: u32,
    image: &str,
    image_id: Option<&ImageId>,
    config_hash: &ConfigHash,
    origin: &Origin<'_>,
) -> ContainerSpec {
    let service = &project.services[service_name];
    let name = container_name(project, service_name, number);
    let depends_on = service
        .depends_on
        .iter()
        .map(|(dependency, how)| {
            let condition = match how.condition {
                Condition::ServiceStarted => "service_started",
                Condition::ServiceHealthy => "service_healthy",
                Condition::ServiceCompletedSuccessfully => "service_completed_successfully",
            };
            format!("{dependency}:{condition}:{}", how.restart)
        })
        .collect::<Vec<_>>()
        .join(",");
    let config_files = project
        .config_files
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(",");

    let mut labels = service.labels.clone();
    labels.extend(
        [
            (PROJECT, project.name.clone()),
            (SERVICE, service_name.to_owned()),
            (CONTAINER_NUMBER, number.to_string()),
            (ONEOFF, "False".to_owned()),
            (CONFIG_HASH, config_hash.as_str().to_owned()),
            (WORKING_DIR, project.working_dir.display().to_string()),
            (CONFIG_FILES, config_files),
            (IMAGE, image_id.map_or("", ImageId::as_str).to_owned()),
            (DEPENDS_ON, depends_on),
            (VERSION, COMPOSE_VERSION.to_owned()),
            (STACKHOOK_COMMIT, origin.commit.to_owned()),
            (STACKHOOK_STACK, origin.stack.to_owned()),
        ]
        .map(|(key, value)| (key.to_owned(), value)),
    );

    let links = links(project, service);
    let networks = if service.network_mode.is_some() {
        Vec::new()
    } else {
        let mut entries: Vec<_> = service.networks.iter().collect();
        // Compose's `NetworksByPriority`: the highest priority first, then by key.
        entries
            .sort_by(|(a_key, a), (b_key, b)| b.priority.cmp(&a.priority).then(a_key.cmp(b_key)));
        entries
            .into_iter()
            .map(|(key, attachment)| {
                let mut aliases = vec![name.clone(), service_name.to_owned()];
                aliases.extend(attachment.aliases.iter().cloned());
                Attachment {
                    network: project.networks[key].name.clone(),
                    aliases,
                    ipv4_address: attachment.ipv4_address.clone(),
                    ipv6_address: attachment.ipv6_address.clone(),
                    link_local_ips: attachment.link_local_ips.clone(),
                    ipam_config: attachment.configured,
                    mac_address: attachment.mac_address.clone(),
                    driver_opts: attachment.driver_opts.clone(),
                    gw_priority: attachment.gw_priority,
                    links: links.clone(),
                }
            })
            .collect()
    };
    let service_containers = referenced_services(service)
        .into_iter()
        .filter(|other| project.services.contains_key(*other))
        .map(|other| (other.to_owned(), container_name(project, other, 1)))
        .collect();

    let files = written_files(service);
    let mut service = service.clone();
    service.image = Some(image.to_owned());
    ContainerSpec {
        name,
        service,
        labels,
        networks,
        volume_names: project
            .volumes
            .iter()
            .map(|(key, volume)| (key.clone(), volume.name.clone()))
            .collect(),
        service_containers,
        files,
    }
}

/// Secrets and configs given by `content:` or `environment:`, which Compose writes into the
/// container before it starts (`injectFileReferences`), with mode 0444 unless one is set.
fn written_files(service: &compose::Service) -> Vec<ContainerFile> {
    service
        .files
        .iter()
        .filter_map(|file| match &file.source {
            compose::FileSource::Content(content) => Some(ContainerFile {
                path: file.target.clone(),
                content: content.clone(),
                uid: file.uid,
                gid: file.gid,
                mode: file.mode.unwrap_or(0o444),
            }),
            compose::FileSource::File(_) => None,
        })
        .collect()
}

/// The links Compose gives a container on each of its networks (`getLinks` in Compose's
/// convergence.go): for `links: [service[:alias]]`, the service's container under the alias,
/// `<service>-1` and `<project>-<service>-1`; then `external_links` as `container:alias`.
fn links(project: &Project, service: &compose::Service) -> Vec<String> {
    let mut links = Vec::new();
    for link in &service.links {
        let (linked, alias) = link.split_once(':').unwrap_or((link, link));
        if !project.services.contains_key(linked) {
            continue;
        }
        let container = container_name(project, linked, 1);
        links.push(format!("{container}:{alias}"));
        links.push(format!("{container}:{linked}-1"));
        links.push(format!("{container}:{}-{linked}-1", project.name));
    }
    for link in &service.external_links {
        let (container, alias) = link.split_once(':').unwrap_or((link, link));
        links.push(format!("{container}:{alias}"));
    }
    links
}

/// The services whose containers `service` names by id: `volumes_from` entries other than
/// `container:…`, and the `service:` network, IPC and PID namespaces.
fn referenced_services(service: &compose::Service) -> Vec<&str> {
    let mut services: Vec<&str> = service
        .volumes_from
        .iter()
        .filter(|entry| !entry.starts_with("container:"))
        .map(|entry| entry.split(':').next().unwrap_or_default())
        .collect();
    let namespaces = [&service.network_mode, &service.ipc, &service.pid];
    services.extend(
        namespaces
            .into_iter()
            .flatten()
            .filter_map(|mode| mode.strip_prefix("service:")),
    );
    services
}

/// A project's network with Compose's labels added.
pub fn network(project: &Project, key: &str) -> Network {
    let mut network = project.networks[key].clone();
    if !network.external {
        add_labels(&mut network.labels, project, NETWORK, key);
    }
    network
}

/// A project's volume with Compose's labels added.
pub fn volume(project: &Project, key: &str) -> Volume {
    let mut volume = project.volumes[key].clone();
    if !volume.external {
        add_labels(&mut volume.labels, project, VOLUME, key);
    }
    volume
}

fn add_labels(labels: &mut BTreeMap<String, String>, project: &Project, kind: &str, key: &str) {
    labels.insert(PROJECT.to_owned(), project.name.clone());
    labels.insert(kind.to_owned(), key.to_owned());
    labels.insert(VERSION.to_owned(), COMPOSE_VERSION.to_owned());
}
