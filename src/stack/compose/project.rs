//! The project level of a compose file: its name, top-level `networks` and `volumes`, the
//! `default` network, and the checks that tie services to them and to each other.
//!
//! It works on a parsed, interpolated document; finding and reading the compose file and `.env`
//! belong to `compose::load`, and a service's own keys to `compose::service`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::node::Node;
use super::normalise_path;
use super::service;
use super::{
    Error, FileKind, FileSource, Ipam, IpamPool, MountKind, Network, Project, Service, Volume,
};

/// What normalising needs besides the document, and what it gathers on the way.
pub struct Context<'a> {
    /// The compose file, absolute.
    pub file: &'a Path,
    /// The stack directory, absolute: relative paths resolve against it.
    pub dir: &'a Path,
    /// `.env` overlaid by the process environment.
    pub environment: &'a BTreeMap<String, String>,
    pub files_read: Vec<PathBuf>,
    pub variables: BTreeMap<String, Option<String>>,
    /// The SOPS files opened so far, and the keys that open them.
    pub sealed: super::Sealed,
    /// Top-level `secrets` and `configs` by key, read before the services that use them.
    pub secrets: BTreeMap<String, Definition>,
    pub configs: BTreeMap<String, Definition>,
    /// Keys `up -d` ignores without Swarm, found so far (`Project::notes`).
    pub notes: Vec<String>,
}

/// A top-level secret or config: where its bytes come from, or why it cannot be used.
#[derive(Debug, Clone)]
pub enum Definition {
    Source(FileSource),
    /// Kept for the message when a service uses it: the key it was refused for.
    Refused(String),
}

impl Context<'_> {
    /// Looks a variable up in the interpolation environment and records it for fingerprints.
    pub fn lookup(&mut self, name: &str) -> Option<String> {
        let value = self.environment.get(name).cloned();
        self.variables.insert(name.to_owned(), value.clone());
        value
    }
}

pub fn project(root: &Node, context: &mut Context) -> Result<Project, Error> {
    let name = project_name(root, context)?;
    for (kind, key) in [(FileKind::Secret, "secrets"), (FileKind::Config, "configs")] {
        for (name, node) in section(root, key)? {
            let definition = definition(kind, &node, context)?;
            match kind {
                FileKind::Secret => context.secrets.insert(name, definition),
                FileKind::Config => context.configs.insert(name, definition),
            };
        }
    }
    let mut services = BTreeMap::new();
    let mut inactive = BTreeSet::new();
    for (key, node) in section(root, "services")? {
        match service::service(&key, &node, context)? {
            Some(service) => {
                services.insert(key, service);
            }
            None => {
                inactive.insert(key);
            }
        }
    }
    check_dependencies(root, &mut services, &inactive)?;
    let mut networks = BTreeMap::new();
    for (key, node) in section(root, "networks")? {
        let network = network(&name, &key, &node)?;
        networks.insert(key, network);
    }
    let uses_default = services
        .values()
        .any(|service| service.networks.contains_key("default"));
    if uses_default && !networks.contains_key("default") {
        let network = Network {
            name: format!("{name}_default"),
            ..Network::default()
        };
        networks.insert("default".to_owned(), network);
    }
    let mut volumes = BTreeMap::new();
    for (key, node) in section(root, "volumes")? {
        let volume = volume(&name, &key, &node)?;
        volumes.insert(key, volume);
    }
    check_references(root, &services, &networks, &volumes)?;
    Ok(Project {
        name,
        working_dir: context.dir.to_path_buf(),
        config_files: vec![context.file.to_path_buf()],
        services,
        networks,
        volumes,
        files_read: std::mem::take(&mut context.files_read),
        variables: std::mem::take(&mut context.variables),
        sealed: std::mem::take(&mut context.sealed.files),
        notes: std::mem::take(&mut context.notes),
    })
}

/// `file:` (relative to the stack), `content:` or `environment:`. External ones, and a config's
/// `driver`/`template_driver`, exist only in Swarm: Compose refuses them when a service uses
/// them ("unsupported external secret"), and so does stackhook.
fn definition(kind: FileKind, node: &Node, context: &mut Context) -> Result<Definition, Error> {
    let mut source = None;
    for (key, value) in node.entries()? {
        // Compose's schema: only a config has `content`, only a secret `driver` and `driver_opts`.
        let allowed = match kind {
            FileKind::Secret => key != "content",
            FileKind::Config => key != "driver" && key != "driver_opts",
        };
        if !allowed {
            return Err(node.invalid(format!("additional properties '{key}' not allowed")));
        }
        match key.as_str() {
            "file" => {
                let path = normalise_path(&context.dir.join(value.string()?));
                context.sealed.probe(&path)?;
                source = Some(FileSource::File(path));
            }
            "content" => source = Some(FileSource::Content(value.string()?)),
            "environment" => {
                let variable = value.string()?;
                let Some(content) = context.lookup(&variable) else {
                    return Err(
                        value.invalid(format!("environment variable {variable:?} is not set"))
                    );
                };
                source = Some(FileSource::Content(content));
            }
            "external" if value.get("name").is_some() || value.bool()? => {
                return Ok(Definition::Refused("external".to_owned()));
            }
            "external" | "name" | "labels" => {}
            "driver" | "driver_opts" | "template_driver" => {
                return Ok(Definition::Refused(key));
            }
            _ => return Err(value.invalid(format!("additional properties '{key}' not allowed"))),
        }
    }
    let what = match kind {
        FileKind::Secret => "secret",
        FileKind::Config => "config",
    };
    source
        .map(Definition::Source)
        .ok_or_else(|| node.invalid(format!("a {what} needs file, content or environment")))
}

/// The entries of a top-level section; absent or null means none.
fn section<'a>(root: &Node<'a>, key: &str) -> Result<Vec<(String, Node<'a>)>, Error> {
    match root.get(key) {
        Some(node) if !node.is_null() => node.entries(),
        _ => Ok(Vec::new()),
    }
}

/// `COMPOSE_PROJECT_NAME`, else `name:`, else the directory name, in Compose's order of
/// precedence ("Specify a project name"), normalised as `docker compose config` shows it
/// (`name: My_App` becomes `my_app`).
fn project_name(root: &Node, context: &mut Context) -> Result<String, Error> {
    let (given, at) = match context.lookup("COMPOSE_PROJECT_NAME") {
        Some(name) if !name.is_empty() => (name, "COMPOSE_PROJECT_NAME".to_owned()),
        _ => match root.get("name") {
            Some(node) if !node.is_null() => (node.string()?, node.at.clone()),
            _ => {
                let directory = context.dir.file_name().unwrap_or_default();
                (directory.to_string_lossy().into_owned(), "name".to_owned())
            }
        },
    };
    let name = normalise_name(&given);
    if name.is_empty() {
        return Err(Error::Invalid {
            file: context.file.to_path_buf(),
            at,
            message: format!("{given:?} gives an empty project name once normalised; set name:"),
        });
    }
    Ok(name)
}

/// Lowercase, only `[a-z0-9_-]`, starting with a letter or digit (compose-go's
/// `NormalizeProjectName`).
fn normalise_name(name: &str) -> String {
    let kept: String = name
        .to_lowercase()
        .chars()
        .filter(|character| {
            character.is_ascii_lowercase()
                || character.is_ascii_digit()
                || *character == '_'
                || *character == '-'
        })
        .collect();
    kept.trim_start_matches(['_', '-']).to_owned()
}

fn network(project: &str, key: &str, node: &Node) -> Result<Network, Error> {
    let mut network = Network {
        name: format!("{project}_{key}"),
        ..Network::default()
    };
    if node.is_null() {
        return Ok(network);
    }
    let mut explicit_name = None;
    for (field, value) in node.entries()? {
        match field.as_str() {
            "name" => explicit_name = Some(value.string()?),
            "external" => {
                (network.external, explicit_name) = external(&value, explicit_name)?;
            }
            "internal" => network.internal = value.bool()?,
            "driver" => network.driver = Some(value.string()?),
            "driver_opts" => network.driver_opts = strings_map(&value)?,
            "labels" => network.labels = strings_map(&value)?,
            "attachable" => network.attachable = value.bool()?,
            "enable_ipv6" => network.enable_ipv6 = value.bool()?,
            "ipam" => network.ipam = Some(ipam(&value)?),
            _ => return Err(value.invalid("is not supported by stackhook")),
        }
    }
    network.name = resolved_name(project, key, network.external, explicit_name);
    Ok(network)
}

fn ipam(node: &Node) -> Result<Ipam, Error> {
    let mut ipam = Ipam::default();
    for (field, value) in node.entries()? {
        match field.as_str() {
            "driver" => ipam.driver = Some(value.string()?),
            "options" => ipam.options = strings_map(&value)?,
            "config" => {
                for item in value.items()? {
                    let mut pool = IpamPool::default();
                    for (key, setting) in item.entries()? {
                        match key.as_str() {
                            "subnet" => pool.subnet = Some(setting.string()?),
                            "ip_range" => pool.ip_range = Some(setting.string()?),
                            "gateway" => pool.gateway = Some(setting.string()?),
                            "aux_addresses" => pool.aux_addresses = strings_map(&setting)?,
                            _ => {
                                return Err(setting.invalid(format!(
                                    "additional properties '{key}' not allowed"
                                )));
                            }
                        }
                    }
                    ipam.config.push(pool);
                }
            }
            _ => return Err(value.invalid(format!("additional properties '{field}' not allowed"))),
        }
    }
    Ok(ipam)
}

fn volume(project: &str, key: &str, node: &Node) -> Result<Volume, Error> {
    let mut volume = Volume::default();
    let mut explicit_name = None;
    if !node.is_null() {
        for (field, value) in node.entries()? {
            match field.as_str() {
                "name" => explicit_name = Some(value.string()?),
                "external" => {
                    (volume.external, explicit_name) = external(&value, explicit_name)?;
                }
                "driver" => volume.driver = Some(value.string()?),
                "driver_opts" => volume.driver_opts = strings_map(&value)?,
                "labels" => volume.labels = strings_map(&value)?,
                _ => return Err(value.invalid("is not supported by stackhook")),
            }
        }
    }
    volume.name = resolved_name(project, key, volume.external, explicit_name);
    Ok(volume)
}

/// `external: true`, or the legacy `external: {name: ...}` which also names the resource.
fn external(node: &Node, name: Option<String>) -> Result<(bool, Option<String>), Error> {
    match node.get("name") {
        Some(legacy) => Ok((true, Some(legacy.string()?))),
        None => Ok((node.bool()?, name)),
    }
}

/// An explicit name is used verbatim; an external resource is named by its key; others are
/// prefixed with the project ("Networks top-level elements", "Volumes top-level elements").
fn resolved_name(project: &str, key: &str, external: bool, name: Option<String>) -> String {
    match name {
        Some(name) => name,
        None if external => key.to_owned(),
        None => format!("{project}_{key}"),
    }
}

/// A dictionary whose bare keys and null values mean the empty string (labels, options).
pub fn strings_map(node: &Node) -> Result<BTreeMap<String, String>, Error> {
    Ok(node
        .dictionary()?
        .into_iter()
        .map(|(key, value)| (key, value.unwrap_or_default()))
        .collect())
}

/// Every dependency must name a service of the file. One left out by its profile is dropped when
/// it is optional (`required: false`) and an error otherwise, as `docker compose up` reports.
fn check_dependencies(
    root: &Node,
    services: &mut BTreeMap<String, Service>,
    inactive: &BTreeSet<String>,
) -> Result<(), Error> {
    let active: BTreeSet<String> = services.keys().cloned().collect();
    for (name, service) in services.iter_mut() {
        let absent: Vec<String> = service
            .depends_on
            .keys()
            .filter(|dependency| !active.contains(*dependency))
            .cloned()
            .collect();
        for dependency in absent {
            let optional = service
                .depends_on
                .remove(&dependency)
                .is_some_and(|details| !details.required);
            let reason = match inactive.contains(&dependency) {
                true if optional => continue,
                true => "which is only in a profile",
                false => "which is not defined",
            };
            return Err(Error::Invalid {
                file: root.file.to_path_buf(),
                at: format!("services.{name}.depends_on"),
                message: format!("depends on service {dependency:?} {reason}"),
            });
        }
    }
    Ok(())
}

/// Services may use only declared networks (or `default`) and declared named volumes, and share
/// the network stack only of a service in the file.
fn check_references(
    root: &Node,
    services: &BTreeMap<String, Service>,
    networks: &BTreeMap<String, Network>,
    volumes: &BTreeMap<String, Volume>,
) -> Result<(), Error> {
    let invalid = |at: String, message: String| Error::Invalid {
        file: root.file.to_path_buf(),
        at,
        message,
    };
    for (name, service) in services {
        if let Some(network) = service
            .networks
            .keys()
            .find(|key| !networks.contains_key(*key))
        {
            return Err(invalid(
                format!("services.{name}.networks"),
                format!("service refers to undefined network {network}"),
            ));
        }
        let undeclared_volume = service
            .volumes
            .iter()
            .find_map(|mount| match &mount.source {
                Some(source)
                    if mount.kind == MountKind::Volume && !volumes.contains_key(source) =>
                {
                    Some(source)
                }
                _ => None,
            });
        if let Some(volume) = undeclared_volume {
            return Err(invalid(
                format!("services.{name}.volumes"),
                format!("service refers to undefined volume {volume}"),
            ));
        }
        let shared = service
            .network_mode
            .as_deref()
            .and_then(|mode| mode.strip_prefix("service:"));
        if let Some(other) = shared.filter(|other| !services.contains_key(*other)) {
            return Err(invalid(
                format!("services.{name}.network_mode"),
                format!("network_mode refers to undefined service {other}"),
            ));
        }
    }
    Ok(())
}
