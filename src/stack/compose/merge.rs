//! How Docker Compose merges one YAML tree over another: a service over the one it extends, as
//! compose-go v2's `override` package (Docker Compose v2.40.3) does it, with its special cases.
//!
//! It works on interpolated YAML, before anything is normalised; what the merged entry means is
//! for `compose::service` to read.

use yaml_serde::{Mapping, Value};

/// `over`, a service's own keys, merged over `base`, the service it extends (compose-go's
/// `ExtendService`).
pub fn service(base: Mapping, over: Mapping) -> Mapping {
    merge_mapping(base, over, "")
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
