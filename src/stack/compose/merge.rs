//! How Docker Compose merges one YAML tree over another: a service over the one it extends, and a
//! compose file over the files before it (an `include` entry's later paths), as compose-go v2's
//! `override` package (Docker Compose v2.40.3) does it, with its special cases.
//!
//! A file's `!reset` and `!override` tags (`Resets`) say where it replaces, rather than merges
//! with, what it is merged over. It works on interpolated YAML, before anything is normalised;
//! what the merged entry means is for `compose::service` to read.

use yaml_serde::value::Tag;
use yaml_serde::{Mapping, Value};

/// Where one compose file's `!reset` and `!override` tags stood, as paths of mapping keys from the
/// file's root (compose-go's `ResetProcessor`, Compose Specification "Merge and override":
/// "Reset value", "Replace value"). Each path is cleared from what the file is merged over (the
/// files before it, the service a service of it extends) before the merge, so that an
/// `!override` value replaces what was there and a `!reset` one leaves nothing.
#[derive(Debug, Clone, Default)]
pub struct Resets {
    paths: Vec<Vec<String>>,
}

impl Resets {
    /// Takes the tags out of a freshly parsed `document`: a `!reset` node is dropped, an
    /// `!override` one keeps its value. Inside a list, a `!reset` entry is dropped too, but no
    /// path is recorded: Compose removes nothing from a list it merges over.
    pub fn take(document: &mut Value) -> Resets {
        let mut resets = Resets::default();
        resets.strip(document, Some(Vec::new()));
        resets
    }

    /// Clears every recorded path from `base`, the files this one is merged over.
    pub fn clear(&self, base: &mut Mapping) {
        for path in &self.paths {
            remove(base, path);
        }
    }

    /// Clears the recorded paths below `services.<name>` from `base`, the service that this
    /// file's service `name` extends.
    pub fn clear_service(&self, name: &str, base: &mut Mapping) {
        for path in &self.paths {
            if let [section, service, rest @ ..] = path.as_slice()
                && section == "services"
                && service == name
                && !rest.is_empty()
            {
                remove(base, rest);
            }
        }
    }

    /// Strips the tags below `value`, recording the paths of those reached through mapping keys
    /// only (`at` is `None` inside a list).
    fn strip(&mut self, value: &mut Value, at: Option<Vec<String>>) {
        match value {
            Value::Mapping(mapping) => {
                let keys: Vec<Value> = mapping.keys().cloned().collect();
                for key in keys {
                    let child_at = at.clone().map(|mut at| {
                        at.push(key_text(&key));
                        at
                    });
                    let Some(child) = mapping.get_mut(&key) else {
                        continue;
                    };
                    let tag = compose_tag(child);
                    if let (Some(_), Some(path)) = (tag, &child_at) {
                        self.paths.push(path.clone());
                    }
                    match tag {
                        Some(ComposeTag::Reset) => {
                            mapping.shift_remove(&key);
                        }
                        Some(ComposeTag::Override) | None => self.strip(child, child_at),
                    }
                }
            }
            Value::Sequence(items) => {
                items.retain(|item| compose_tag(item) != Some(ComposeTag::Reset));
                for item in items {
                    self.strip(item, None);
                }
            }
            Value::Tagged(tagged) => {
                if tag_of(&tagged.tag) == Some(ComposeTag::Override) {
                    // `!override` is only a mark; what it marks stays.
                    *value = std::mem::take(&mut tagged.value);
                    self.strip(value, at);
                } else {
                    self.strip(&mut tagged.value, at);
                }
            }
            _ => {}
        }
    }
}

/// `over`, a service's own keys, merged over `base`, the service it extends (compose-go's
/// `ExtendService`).
pub fn service(base: Mapping, over: Mapping) -> Mapping {
    merge_mapping(base, over, "")
}

/// `over`, a whole compose file, merged over `base`, the files before it, as Compose merges an
/// override file (compose-go's `override.Merge`): services as `extends` merges them, networks,
/// volumes, secrets and configs key by key, anything else as plain YAML.
pub fn document(mut base: Mapping, over: Mapping) -> Mapping {
    for (key, value) in over {
        let merged = match base.get(&key) {
            None => value,
            Some(existing) => match key.as_str() {
                Some("services") => {
                    entries(existing.clone(), value, |base, over| match (base, over) {
                        (Value::Mapping(base), Value::Mapping(over)) => {
                            Value::Mapping(service(base, over))
                        }
                        (base, over) => plain(base, over),
                    })
                }
                Some(section @ ("networks" | "volumes" | "secrets" | "configs")) => {
                    entries(existing.clone(), value, |base, over| {
                        resource(base, over, section)
                    })
                }
                _ => plain(existing.clone(), value),
            },
        };
        base.insert(key, merged);
    }
    base
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

/// The entries of a top-level section (`services`, `networks`, …), each of `over` merged over the
/// one of the same name in `base` with `merge`.
fn entries(base: Value, over: Value, merge: impl Fn(Value, Value) -> Value) -> Value {
    let (mut base, over) = match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => (base, over),
        (base, over) => return plain(base, over),
    };
    for (name, value) in over {
        let merged = match base.get(&name) {
            Some(existing) => merge(existing.clone(), value),
            None => value,
        };
        base.insert(name, merged);
    }
    Value::Mapping(base)
}

/// A network, volume, secret or config over another of the same name: a network's or volume's
/// `labels` in either syntax, a network's `ipam.config` by subnet, the rest as plain YAML.
fn resource(base: Value, over: Value, section: &str) -> Value {
    let (mut base, over) = match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => (base, over),
        (base, over) => return plain(base, over),
    };
    for (key, value) in over {
        let merged = match (key.as_str(), base.get(&key)) {
            (_, None) => value,
            (Some("labels"), Some(existing)) if matches!(section, "networks" | "volumes") => {
                let mut merged = key_values(existing.clone());
                merged.extend(key_values(value));
                Value::Mapping(merged)
            }
            (Some("ipam"), Some(Value::Mapping(existing))) if section == "networks" => {
                let mut ipam = existing.clone();
                if let Value::Mapping(over) = value {
                    for (key, value) in over {
                        let merged = match (key.as_str(), ipam.get(&key)) {
                            (Some("config"), Some(configs)) => ipam_config(configs.clone(), value),
                            (_, Some(existing)) => plain(existing.clone(), value),
                            (_, None) => value,
                        };
                        ipam.insert(key, merged);
                    }
                }
                Value::Mapping(ipam)
            }
            (_, Some(existing)) => plain(existing.clone(), value),
        };
        base.insert(key, merged);
    }
    Value::Mapping(base)
}

/// compose-go's `mergeIPAMConfig`: each pool of `over` replaces, or merges into, the pool of
/// `base` with its subnet. As in Compose, a pool of `base` that `over` does not name is dropped,
/// and an empty `base` drops `over`'s pools too: `docker compose config` shows the same.
fn ipam_config(base: Value, over: Value) -> Value {
    let (base, over) = match (base, over) {
        (Value::Sequence(base), Value::Sequence(over)) => (base, over),
        (base, over) => return plain(base, over),
    };
    let pool = |value: &Value| match value {
        Value::Mapping(pool) => pool.clone(),
        _ => Mapping::new(),
    };
    let subnet = |pool: &Mapping| pool.get("subnet").cloned();
    let mut merged: Vec<Mapping> = Vec::new();
    for original in &base {
        let mut right = pool(original);
        for entry in &over {
            let left = pool(entry);
            let known = merged.iter().any(|pool| subnet(pool) == subnet(&left));
            if subnet(&left) != subnet(&right) && !known {
                merged.push(left);
                continue;
            }
            for (key, value) in left {
                let value = match right.get(&key) {
                    Some(existing) => plain(existing.clone(), value),
                    None => value,
                };
                right.insert(key, value);
            }
            match merged
                .iter()
                .position(|pool| subnet(pool) == subnet(&right))
            {
                Some(index) => merged[index] = right.clone(),
                None => merged.push(right.clone()),
            }
        }
    }
    Value::Sequence(merged.into_iter().map(Value::Mapping).collect())
}

/// compose-go's `mergeYaml` without special cases: mappings key by key, sequences appended, a
/// null keeping what was there, anything else replaced.
fn plain(base: Value, over: Value) -> Value {
    match (base, over) {
        (base, Value::Null) => base,
        (Value::Mapping(mut base), Value::Mapping(over)) => {
            for (key, value) in over {
                let merged = match base.get(&key) {
                    Some(existing) => plain(existing.clone(), value),
                    None => value,
                };
                base.insert(key, merged);
            }
            Value::Mapping(base)
        }
        (Value::Sequence(mut base), Value::Sequence(over)) => {
            base.extend(over);
            Value::Sequence(base)
        }
        (_, over) => over,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ComposeTag {
    Reset,
    Override,
}

/// The Compose tag on `value`, if it carries one.
fn compose_tag(value: &Value) -> Option<ComposeTag> {
    match value {
        Value::Tagged(tagged) => tag_of(&tagged.tag),
        _ => None,
    }
}

fn tag_of(tag: &Tag) -> Option<ComposeTag> {
    if *tag == Tag::new("reset") {
        Some(ComposeTag::Reset)
    } else if *tag == Tag::new("override") {
        Some(ComposeTag::Override)
    } else {
        None
    }
}

/// A mapping key as a path element; Compose reads every key as a string.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(value) => value.to_string(),
        other => format!("{other:?}"),
    }
}

/// Removes the entry at `path` from `mapping`, if there is one.
fn remove(mapping: &mut Mapping, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(key) = mapping.keys().find(|key| key_text(key) == *first).cloned() else {
        return;
    };
    if rest.is_empty() {
        mapping.shift_remove(&key);
    } else if let Some(Value::Mapping(child)) = mapping.get_mut(&key) {
        remove(child, rest);
    }
}
