//! `extends`: a service built on another one, of the same file or of another file, merged as the
//! Compose Specification's "Merge and override" section says and compose-go v2 (Docker Compose
//! v2.40.3) does it.
//!
//! It works on the interpolated YAML of one compose file, before any service is normalised, so
//! that the merged entry is read as if it had been written out. Which keys of the merged entry
//! stackhook supports, and the uniqueness of list entries (ports, volumes, …), belong to
//! `compose::service`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use yaml_serde::{Mapping, Value};

use super::node::Node;
use super::{Error, Sources, normalise_path, relocate};

/// Replaces every service of `document` that has `extends` by its merge with the service it
/// extends. `dir` is where the file's relative paths (`extends.file` among them) resolve.
pub fn apply(
    document: &mut Value,
    file: &Path,
    dir: &Path,
    environment: &BTreeMap<String, String>,
    sources: &mut Sources,
) -> Result<(), Error> {
    let Some(Value::Mapping(services)) = document.get("services") else {
        return Ok(());
    };
    let origin = Origin {
        file: file.to_path_buf(),
        dir: dir.to_path_buf(),
        services: services.clone(),
    };
    let mut loader = Loader {
        environment,
        sources,
        files: BTreeMap::new(),
    };
    let mut merged = Vec::new();
    for (name, service) in &origin.services {
        let (Some(name), Some(_)) = (name.as_str(), service.get("extends")) else {
            continue;
        };
        let service = extended(&origin, name, &mut Vec::new(), &mut loader)?;
        merged.push((name.to_owned(), service));
    }
    if let Some(Value::Mapping(services)) = document.get_mut("services") {
        for (name, service) in merged {
            services.insert(Value::String(name), service);
        }
    }
    Ok(())
}

/// The services of one compose file, and where its relative paths resolve.
#[derive(Clone)]
struct Origin {
    file: PathBuf,
    dir: PathBuf,
    services: Mapping,
}

/// Reads the other files that `extends.file` names, each once.
struct Loader<'a> {
    environment: &'a BTreeMap<String, String>,
    sources: &'a mut Sources,
    files: BTreeMap<PathBuf, Origin>,
}

impl Loader<'_> {
    /// The services of another compose file: interpolated with the same variables, their
    /// relative paths made absolute against that file's directory, as compose-go's
    /// `getExtendsBaseFromFile` does. Nothing else of that file joins the project.
    fn load(&mut self, file: &Path, node: &Node) -> Result<Origin, Error> {
        if let Some(origin) = self.files.get(file) {
            return Ok(origin.clone());
        }
        // Named from the extending service, which the reader can find and fix.
        let text = super::read(file).map_err(|error| node.invalid(error))?;
        let mut document = super::parse(file, &text)?;
        super::interpolate_document(
            file,
            &mut document,
            self.environment,
            &mut self.sources.variables,
        )?;
        self.sources.read(file);
        let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        relocate(&mut document, &dir, false);
        let services = match document.get("services") {
            Some(Value::Mapping(services)) => services.clone(),
            _ => {
                return Err(node.invalid(format!(
                    "cannot extend from {}: it has no services section",
                    file.display()
                )));
            }
        };
        let origin = Origin {
            file: file.to_path_buf(),
            dir,
            services,
        };
        self.files.insert(file.to_path_buf(), origin.clone());
        Ok(origin)
    }
}

/// The service `name` of `origin` with its `extends` chain merged in, base first. `chain` holds
/// the services being extended, to report a cycle instead of recursing forever.
fn extended(
    origin: &Origin,
    name: &str,
    chain: &mut Vec<(PathBuf, String)>,
    loader: &mut Loader,
) -> Result<Value, Error> {
    let service = origin.services.get(name).cloned().unwrap_or(Value::Null);
    let Value::Mapping(mut service) = service else {
        return Ok(service);
    };
    let Some(extends) = service.shift_remove("extends") else {
        return Ok(Value::Mapping(service));
    };
    chain.push((origin.file.clone(), name.to_owned()));
    let at = format!("services.{name}.extends");
    let node = Node::new(&origin.file, at, &extends);
    let (reference, other) = match node.get("service") {
        Some(reference) => {
            let other = node.get("file").map(|file| file.string()).transpose()?;
            (reference.string()?, other)
        }
        None if node.entries().is_ok() => return Err(node.invalid("needs a service")),
        None => (node.string()?, None),
    };
    let base_origin = match &other {
        Some(path) => loader.load(&normalise_path(&origin.dir.join(path)), &node)?,
        None => origin.clone(),
    };
    if !base_origin.services.contains_key(reference.as_str()) {
        let place = match &other {
            Some(path) => format!(" in {path}"),
            None => String::new(),
        };
        return Err(node.invalid(format!(
            "cannot extend service {name:?}: service {reference:?} not found{place}"
        )));
    }
    let link = (base_origin.file.clone(), reference.clone());
    if chain.contains(&link) {
        let mut steps = chain
            .iter()
            .chain([&link])
            .map(|(file, service)| format!("{service} in {}", file.display()));
        let first = steps.next().unwrap_or_default();
        let rest: Vec<String> = steps.map(|step| format!("extends {step}")).collect();
        return Err(node.invalid(format!("circular reference: {first} {}", rest.join(" "))));
    }
    let base = extended(&base_origin, &reference, chain, loader)?;
    chain.pop();
    match base {
        Value::Mapping(base) => Ok(Value::Mapping(merge_mapping(base, service, ""))),
        _ => Ok(Value::Mapping(service)),
    }
}

/// compose-go's `mergeYaml` with its special cases (`override/merge.go`), for a path `at`
/// inside one service (`environment`, `build.args`, `ulimits.nofile`).
fn merge(base: Value, over: Value, at: &str) -> Value {
    match at {
        "command" | "entrypoint" | "healthcheck.test" => over,
        "annotations" | "build.args" | "build.labels" | "deploy.labels" | "environment"
        | "labels" | "sysctls" => {
            let mut merged = key_values(base);
            merged.extend(key_values(over));
            Value::Mapping(merged)
        }
        "dns" | "dns_opt" | "dns_search" | "env_file" | "label_file" | "tmpfs" => {
            let mut merged = sequence(base);
            merged.extend(sequence(over));
            Value::Sequence(merged)
        }
        "extra_hosts" | "build.extra_hosts" => {
            let mut merged = hosts(base);
            let added: Vec<Value> = hosts(over)
                .into_iter()
                .filter(|host| !merged.contains(host))
                .collect();
            merged.extend(added);
            Value::Sequence(merged)
        }
        "depends_on" => Value::Mapping(merge_mapping(dependencies(base), dependencies(over), at)),
        "networks" => Value::Mapping(merge_mapping(networks(base), networks(over), at)),
        "build" => Value::Mapping(merge_mapping(build(base), build(over), at)),
        // The same driver (or none on either side) merges the options; another replaces all.
        "logging" => match (base, over) {
            (Value::Mapping(base), Value::Mapping(over))
                if base.get("driver").is_none()
                    || over.get("driver").is_none()
                    || base.get("driver") == over.get("driver") =>
            {
                Value::Mapping(merge_mapping(base, over, at))
            }
            (_, over) => over,
        },
        _ if at.starts_with("ulimits.") => over,
        _ => match (base, over) {
            (base, Value::Null) => base,
            (Value::Mapping(base), Value::Mapping(over)) => {
                Value::Mapping(merge_mapping(base, over, at))
            }
            (Value::Sequence(mut base), Value::Sequence(over)) => {
                base.extend(over);
                Value::Sequence(base)
            }
            (_, over) => over,
        },
    }
}

/// Keys of `over` merged into `base`; an `x-` key is replaced whole.
fn merge_mapping(mut base: Mapping, over: Mapping, at: &str) -> Mapping {
    for (key, value) in over {
        let name = key.as_str().unwrap_or_default().to_owned();
        let merged = match base.get(&key) {
            Some(existing) if !name.starts_with("x-") => {
                let child = if at.is_empty() {
                    name
                } else {
                    format!("{at}.{name}")
                };
                merge(existing.clone(), value, &child)
            }
            _ => value,
        };
        base.insert(key, merged);
    }
    base
}

/// A dictionary in either syntax as a mapping; a bare `KEY` maps to null.
fn key_values(value: Value) -> Mapping {
    match value {
        Value::Mapping(mapping) => mapping,
        Value::Sequence(items) => items
            .into_iter()
            .map(
                |item| match item.as_str().and_then(|text| text.split_once('=')) {
                    Some((key, value)) => (key.into(), value.into()),
                    None => (item, Value::Null),
                },
            )
            .collect(),
        _ => Mapping::new(),
    }
}

/// One string or a list of them as a list.
fn sequence(value: Value) -> Vec<Value> {
    match value {
        Value::Sequence(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// `extra_hosts` as a list of `host=ip` or `host:ip` entries.
fn hosts(value: Value) -> Vec<Value> {
    match value {
        Value::Mapping(mapping) => mapping
            .into_iter()
            .flat_map(|(host, ips)| {
                let host = host.as_str().unwrap_or_default().to_owned();
                sequence(ips).into_iter().map(move |ip| {
                    let ip = ip.as_str().map(str::to_owned).unwrap_or_default();
                    Value::String(format!("{host}={ip}"))
                })
            })
            .collect(),
        other => sequence(other),
    }
}

/// `depends_on` as a mapping; a listed service is started and required (compose-go's
/// `mergeDependsOn`).
fn dependencies(value: Value) -> Mapping {
    match value {
        Value::Sequence(names) => names
            .into_iter()
            .map(|name| {
                let mut details = Mapping::new();
                details.insert("condition".into(), "service_started".into());
                details.insert("required".into(), true.into());
                (name, Value::Mapping(details))
            })
            .collect(),
        Value::Mapping(mapping) => mapping,
        _ => Mapping::new(),
    }
}

/// A service's `networks` as a mapping; a listed network maps to null.
fn networks(value: Value) -> Mapping {
    match value {
        Value::Sequence(names) => names.into_iter().map(|name| (name, Value::Null)).collect(),
        Value::Mapping(mapping) => mapping,
        _ => Mapping::new(),
    }
}

/// `build: path` as `build: {context: path}`.
fn build(value: Value) -> Mapping {
    match value {
        Value::Mapping(mapping) => mapping,
        Value::Null => Mapping::new(),
        context => [("context".into(), context)].into_iter().collect(),
    }
}
