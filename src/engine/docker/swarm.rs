//! Swarm services, tasks, secrets and configs (issue 12), in the API's own JSON.
//!
//! `service_spec` maps a `swarm::ServiceSpec` onto the API's `ServiceSpec` as `docker stack
//! deploy` does (docker/cli `cli/compose/convert`): the same fields, defaults and orderings, so
//! that a service stackhook made inspects like one the CLI made. Reads decode only what
//! stackhook needs, into small structs that tolerate what they do not know.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::raw::{self, Endpoint};
use crate::engine::swarm::{
    FileReference, NAMESPACE_LABEL, Object, ObjectKind, ServiceSpec, ServiceState, Task,
    UpdateStatus,
};
use crate::stack::compose::{self, MountKind, UpdateConfig};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The API's `ServiceSpec` for `spec`.
pub fn service_spec(spec: &ServiceSpec) -> anyhow::Result<Value> {
    let service = &spec.service;
    let deploy = &service.swarm;
    let mut container = Map::new();
    let image = service.image.clone().unwrap_or_default();
    container.insert("Image".into(), json!(image));
    put(
        &mut container,
        "Labels",
        non_empty_map(&spec.container_labels),
    );
    put(
        &mut container,
        "Command",
        service.entrypoint.as_ref().map(|c| json!(c)),
    );
    put(
        &mut container,
        "Args",
        service.command.as_ref().map(|c| json!(c)),
    );
    put(
        &mut container,
        "Hostname",
        service.hostname.as_ref().map(|h| json!(h)),
    );
    // Sorted, as the CLI sorts them.
    let env = super::env_list(&service.environment);
    put(&mut container, "Env", (!env.is_empty()).then(|| json!(env)));
    put(
        &mut container,
        "Dir",
        service.working_dir.as_ref().map(|d| json!(d)),
    );
    put(
        &mut container,
        "User",
        service.user.as_ref().map(|u| json!(u)),
    );
    let mounts = mounts(spec)?;
    put(
        &mut container,
        "Mounts",
        (!mounts.is_empty()).then(|| json!(mounts)),
    );
    put(
        &mut container,
        "StopGracePeriod",
        service.stop_grace_period.map(|d| json!(nanos(d))),
    );
    put(
        &mut container,
        "StopSignal",
        service.stop_signal.as_ref().map(|s| json!(s)),
    );
    put(&mut container, "TTY", service.tty.then_some(json!(true)));
    put(
        &mut container,
        "OpenStdin",
        service.stdin_open.then_some(json!(true)),
    );
    put(
        &mut container,
        "ReadOnly",
        service.read_only.then_some(json!(true)),
    );
    put(&mut container, "Init", service.init.map(|init| json!(init)));
    let hosts: Vec<String> = service
        .extra_hosts
        .iter()
        .filter_map(|entry| entry.split_once(':'))
        .map(|(host, ip)| format!("{ip} {host}"))
        .collect();
    put(
        &mut container,
        "Hosts",
        (!hosts.is_empty()).then(|| json!(hosts)),
    );
    if !service.dns.is_empty() || !service.dns_search.is_empty() {
        let mut dns = Map::new();
        put(
            &mut dns,
            "Nameservers",
            (!service.dns.is_empty()).then(|| json!(service.dns)),
        );
        put(
            &mut dns,
            "Search",
            (!service.dns_search.is_empty()).then(|| json!(service.dns_search)),
        );
        container.insert("DNSConfig".into(), Value::Object(dns));
    }
    put(
        &mut container,
        "Healthcheck",
        service.healthcheck.as_ref().map(healthcheck),
    );
    put(&mut container, "Secrets", files(&spec.secrets, "Secret"));
    put(&mut container, "Configs", files(&spec.configs, "Config"));
    container.insert("Privileges".into(), json!({}));
    put(
        &mut container,
        "Isolation",
        service.isolation.map(|i| json!(i)),
    );
    put(&mut container, "Sysctls", non_empty_map(&service.sysctls));
    let (cap_add, cap_drop) = capabilities(&service.cap_add, &service.cap_drop);
    put(
        &mut container,
        "CapabilityAdd",
        (!cap_add.is_empty()).then(|| json!(cap_add)),
    );
    put(
        &mut container,
        "CapabilityDrop",
        (!cap_drop.is_empty()).then(|| json!(cap_drop)),
    );
    let ulimits: Vec<Value> = service
        .ulimits
        .iter()
        .map(|(name, u)| json!({"Name": name, "Soft": u.soft, "Hard": u.hard}))
        .collect();
    put(
        &mut container,
        "Ulimits",
        (!ulimits.is_empty()).then(|| json!(ulimits)),
    );
    put(
        &mut container,
        "OomScoreAdj",
        service.oom_score_adj.map(|o| json!(o)),
    );

    let mut task = Map::new();
    task.insert("ContainerSpec".into(), Value::Object(container));
    if let Some(logging) = &service.logging {
        let mut driver = Map::new();
        put(
            &mut driver,
            "Name",
            logging.driver.as_ref().map(|d| json!(d)),
        );
        put(&mut driver, "Options", non_empty_map(&logging.options));
        task.insert("LogDriver".into(), Value::Object(driver));
    }
    task.insert("Resources".into(), resources(deploy));
    put(&mut task, "RestartPolicy", restart_policy(service));
    let mut placement = Map::new();
    let constraints = &deploy.placement.constraints;
    put(
        &mut placement,
        "Constraints",
        (!constraints.is_empty()).then(|| json!(constraints)),
    );
    let preferences: Vec<Value> = deploy
        .placement
        .preferences
        .iter()
        .map(|spread| json!({"Spread": {"SpreadDescriptor": spread}}))
        .collect();
    put(
        &mut placement,
        "Preferences",
        (!preferences.is_empty()).then(|| json!(preferences)),
    );
    put(
        &mut placement,
        "MaxReplicas",
        deploy.placement.max_replicas_per_node.map(|m| json!(m)),
    );
    task.insert("Placement".into(), Value::Object(placement));
    let networks: Vec<Value> = spec
        .networks
        .iter()
        .map(|attachment| {
            let mut network = Map::new();
            network.insert("Target".into(), json!(attachment.network));
            put(
                &mut network,
                "Aliases",
                (!attachment.aliases.is_empty()).then(|| json!(attachment.aliases)),
            );
            put(
                &mut network,
                "DriverOpts",
                non_empty_map(&attachment.driver_opts),
            );
            Value::Object(network)
        })
        .collect();
    put(
        &mut task,
        "Networks",
        (!networks.is_empty()).then(|| json!(networks)),
    );

    let mut ports = Vec::new();
    for port in &service.ports {
        let mut entry = Map::new();
        entry.insert("Protocol".into(), json!(port.protocol));
        entry.insert("TargetPort".into(), json!(port.target));
        if let Some(published) = &port.published {
            let published: u16 = published.parse().with_context(|| {
                format!("published port {published:?}: Swarm publishes one port, not a range")
            })?;
            entry.insert("PublishedPort".into(), json!(published));
        }
        entry.insert(
            "PublishMode".into(),
            json!(port.mode.as_deref().unwrap_or("ingress")),
        );
        ports.push(Value::Object(entry));
    }
    // The CLI sorts by published port, then target, then protocol (swarm.PortConfig.Compare).
    ports.sort_by_key(|port| {
        (
            port["PublishedPort"].as_u64().unwrap_or(0),
            port["TargetPort"].as_u64().unwrap_or(0),
            port["Protocol"].as_str().unwrap_or_default().to_owned(),
        )
    });
    let mut endpoint = Map::new();
    put(
        &mut endpoint,
        "Mode",
        deploy
            .endpoint_mode
            .as_ref()
            .map(|m| json!(m.to_lowercase())),
    );
    put(
        &mut endpoint,
        "Ports",
        (!ports.is_empty()).then(|| json!(ports)),
    );

    let replicas = service.scale.map(u64::from);
    let mode = match deploy.mode.as_deref().unwrap_or("replicated") {
        "global" => json!({"Global": {}}),
        "global-job" => json!({"GlobalJob": {}}),
        "replicated-job" => {
            let mut job = Map::new();
            put(&mut job, "MaxConcurrent", replicas.map(|r| json!(r)));
            put(&mut job, "TotalCompletions", replicas.map(|r| json!(r)));
            json!({ "ReplicatedJob": job })
        }
        _ => {
            let mut replicated = Map::new();
            put(&mut replicated, "Replicas", replicas.map(|r| json!(r)));
            json!({ "Replicated": replicated })
        }
    };

    let mut root = Map::new();
    root.insert("Name".into(), json!(spec.name));
    root.insert("Labels".into(), json!(spec.labels));
    root.insert("TaskTemplate".into(), Value::Object(task));
    root.insert("Mode".into(), mode);
    put(
        &mut root,
        "UpdateConfig",
        deploy.update_config.as_ref().map(update_config),
    );
    put(
        &mut root,
        "RollbackConfig",
        deploy.rollback_config.as_ref().map(update_config),
    );
    root.insert("EndpointSpec".into(), Value::Object(endpoint));
    Ok(Value::Object(root))
}

/// Capabilities as the CLI sends them (docker/cli `opts.EffectiveCapAddCapDrop`): `CAP_`-named,
/// sorted, `ALL` standing alone, and one both added and dropped only added.
fn capabilities(add: &[String], drop: &[String]) -> (Vec<String>, Vec<String>) {
    let normalise = |caps: &[String]| -> std::collections::BTreeSet<String> {
        let caps: std::collections::BTreeSet<String> = caps
            .iter()
            .map(|cap| cap.trim().to_uppercase())
            .filter(|cap| !cap.is_empty())
            .map(|cap| match cap.as_str() {
                "ALL" => cap,
                _ if cap.starts_with("CAP_") => cap,
                _ => format!("CAP_{cap}"),
            })
            .collect();
        match caps.contains("ALL") {
            true => ["ALL".to_owned()].into(),
            false => caps,
        }
    };
    let add = normalise(add);
    let drop = normalise(drop);
    let drop = drop.difference(&add).cloned().collect();
    (add.into_iter().collect(), drop)
}

fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), value);
    }
}

fn non_empty_map(map: &BTreeMap<String, String>) -> Option<Value> {
    (!map.is_empty()).then(|| json!(map))
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn healthcheck(check: &compose::Healthcheck) -> Value {
    if check.is_disabled() {
        return json!({"Test": ["NONE"]});
    }
    let mut health = Map::new();
    put(
        &mut health,
        "Test",
        (!check.test.is_empty()).then(|| json!(check.test)),
    );
    put(
        &mut health,
        "Interval",
        check.interval.map(|d| json!(nanos(d))),
    );
    put(
        &mut health,
        "Timeout",
        check.timeout.map(|d| json!(nanos(d))),
    );
    put(
        &mut health,
        "StartPeriod",
        check.start_period.map(|d| json!(nanos(d))),
    );
    put(
        &mut health,
        "StartInterval",
        check.start_interval.map(|d| json!(nanos(d))),
    );
    put(&mut health, "Retries", check.retries.map(|r| json!(r)));
    Value::Object(health)
}

fn files(references: &[FileReference], kind: &str) -> Option<Value> {
    let entries: Vec<Value> = references
        .iter()
        .map(|file| {
            json!({
                "File": {"Name": file.target, "UID": file.uid, "GID": file.gid, "Mode": file.mode},
                format!("{kind}ID"): file.id,
                format!("{kind}Name"): file.object,
            })
        })
        .collect();
    (!entries.is_empty()).then(|| json!(entries))
}

/// `deploy.resources`: always present, as the CLI sends it, each section when the file has it.
fn resources(deploy: &compose::SwarmDeploy) -> Value {
    let cpus = |cpus: Option<f64>| cpus.map(|c| json!((c * 1e9).round() as i64));
    let mut resources = Map::new();
    if let Some(limits) = &deploy.limits {
        let mut section = Map::new();
        put(&mut section, "NanoCPUs", cpus(limits.cpus));
        put(&mut section, "MemoryBytes", limits.memory.map(|m| json!(m)));
        put(&mut section, "Pids", limits.pids.map(|p| json!(p)));
        resources.insert("Limits".into(), Value::Object(section));
    }
    if let Some(reservations) = &deploy.reservations {
        let mut section = Map::new();
        put(&mut section, "NanoCPUs", cpus(reservations.cpus));
        put(
            &mut section,
            "MemoryBytes",
            reservations.memory.map(|m| json!(m)),
        );
        let generic: Vec<Value> = reservations
            .generic
            .iter()
            .map(|(kind, value)| json!({"DiscreteResourceSpec": {"Kind": kind, "Value": value}}))
            .collect();
        put(
            &mut section,
            "GenericResources",
            (!generic.is_empty()).then(|| json!(generic)),
        );
        resources.insert("Reservations".into(), Value::Object(section));
    }
    Value::Object(resources)
}

/// `deploy.restart_policy`, else the service's `restart:` as the CLI reads it: `always` and
/// `unless-stopped` restart on any exit, `on-failure[:N]` on failure, `no` not at all.
fn restart_policy(service: &compose::Service) -> Option<Value> {
    if let Some(policy) = &service.swarm.restart_policy {
        let mut restart = Map::new();
        put(
            &mut restart,
            "Condition",
            policy.condition.as_ref().map(|c| json!(c)),
        );
        put(&mut restart, "Delay", policy.delay.map(|d| json!(nanos(d))));
        put(
            &mut restart,
            "MaxAttempts",
            policy.max_attempts.map(|m| json!(m)),
        );
        put(
            &mut restart,
            "Window",
            policy.window.map(|d| json!(nanos(d))),
        );
        return Some(Value::Object(restart));
    }
    let restart = service.restart.as_deref().filter(|r| !r.is_empty())?;
    let (name, attempts) = match restart.split_once(':') {
        Some((name, attempts)) => (name, attempts.parse::<u64>().ok().filter(|&a| a > 0)),
        None => (restart, None),
    };
    let condition = match name {
        "always" | "unless-stopped" => "any",
        "on-failure" => "on-failure",
        _ => return None,
    };
    let mut policy = Map::new();
    policy.insert("Condition".into(), json!(condition));
    put(&mut policy, "MaxAttempts", attempts.map(|a| json!(a)));
    Some(Value::Object(policy))
}

fn update_config(config: &UpdateConfig) -> Value {
    let mut update = Map::new();
    update.insert("Parallelism".into(), json!(config.parallelism.unwrap_or(1)));
    put(&mut update, "Delay", config.delay.map(|d| json!(nanos(d))));
    put(
        &mut update,
        "FailureAction",
        config.failure_action.as_ref().map(|a| json!(a)),
    );
    put(
        &mut update,
        "Monitor",
        config.monitor.map(|d| json!(nanos(d))),
    );
    put(
        &mut update,
        "MaxFailureRatio",
        config.max_failure_ratio.map(|r| json!(r)),
    );
    put(&mut update, "Order", config.order.map(|o| json!(o)));
    Value::Object(update)
}

/// The service's mounts, in the file's order (docker/cli `convert.Volumes`).
fn mounts(spec: &ServiceSpec) -> anyhow::Result<Vec<Value>> {
    let mut mounts = Vec::new();
    for mount in &spec.service.volumes {
        let mut entry = Map::new();
        let kind = match mount.kind {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        };
        entry.insert("Type".into(), json!(kind));
        entry.insert("Target".into(), json!(mount.target));
        match mount.kind {
            MountKind::Bind => {
                let source = mount
                    .source
                    .as_ref()
                    .context("a bind mount needs a source")?;
                entry.insert("Source".into(), json!(source));
                let propagation = mount.options.iter().find(|option| {
                    [
                        "rprivate", "private", "rshared", "shared", "rslave", "slave",
                    ]
                    .contains(&option.as_str())
                });
                put(
                    &mut entry,
                    "BindOptions",
                    propagation.map(|p| json!({"Propagation": p})),
                );
            }
            MountKind::Volume => {
                if let Some(key) = &mount.source {
                    let volume = spec
                        .volumes
                        .get(key)
                        .with_context(|| format!("undefined volume {key:?}"))?;
                    entry.insert("Source".into(), json!(volume.name));
                    let mut options = Map::new();
                    put(&mut options, "NoCopy", mount.nocopy.then_some(json!(true)));
                    if !volume.external {
                        put(&mut options, "Labels", non_empty_map(&volume.labels));
                        if volume.driver.is_some() || !volume.driver_opts.is_empty() {
                            let mut driver = Map::new();
                            put(
                                &mut driver,
                                "Name",
                                volume.driver.as_ref().map(|d| json!(d)),
                            );
                            put(&mut driver, "Options", non_empty_map(&volume.driver_opts));
                            options.insert("DriverConfig".into(), Value::Object(driver));
                        }
                    }
                    entry.insert("VolumeOptions".into(), Value::Object(options));
                }
            }
            MountKind::Tmpfs => {
                put(
                    &mut entry,
                    "TmpfsOptions",
                    mount.tmpfs_size.map(|s| json!({"SizeBytes": s})),
                );
            }
        }
        put(
            &mut entry,
            "ReadOnly",
            mount.read_only.then_some(json!(true)),
        );
        mounts.push(Value::Object(entry));
    }
    Ok(mounts)
}

// Reads.

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ApiObject {
    #[serde(rename = "ID")]
    id: String,
    #[serde(default)]
    version: ApiVersion,
    spec: ApiObjectSpec,
    #[serde(default)]
    update_status: Option<ApiUpdateStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ApiVersion {
    #[serde(default)]
    index: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ApiObjectSpec {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    mode: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ApiUpdateStatus {
    #[serde(default)]
    state: String,
    #[serde(default)]
    message: String,
}

impl ApiObject {
    fn object(self) -> Object {
        Object {
            id: self.id,
            name: self.spec.name,
            version: self.version.index,
            labels: self.spec.labels.unwrap_or_default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ApiTask {
    #[serde(rename = "ID")]
    id: String,
    #[serde(default)]
    desired_state: String,
    #[serde(default)]
    status: ApiTaskStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ApiTaskStatus {
    #[serde(default)]
    state: String,
    #[serde(default)]
    err: Option<String>,
}

fn filters(pairs: &[(&str, &str)]) -> String {
    let mut filters: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, value) in pairs {
        filters.entry(key).or_default().push(value);
    }
    raw::encode(&serde_json::to_string(&filters).unwrap_or_default())
}

pub async fn swarm_manager(endpoint: &Endpoint) -> anyhow::Result<bool> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Info {
        #[serde(default)]
        swarm: SwarmInfo,
    }
    #[derive(Default, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct SwarmInfo {
        #[serde(default)]
        local_node_state: String,
        #[serde(default)]
        control_available: bool,
    }
    let info: Info = raw::get_json(endpoint, "/info", TIMEOUT)
        .await?
        .context("the engine has no /info")?;
    Ok(info.swarm.local_node_state == "active" && info.swarm.control_available)
}

pub async fn services(endpoint: &Endpoint, namespace: &str) -> anyhow::Result<Vec<Object>> {
    let label = format!("{NAMESPACE_LABEL}={namespace}");
    let path = format!("/services?filters={}", filters(&[("label", &label)]));
    let services: Vec<ApiObject> = raw::get_json(endpoint, &path, TIMEOUT)
        .await?
        .unwrap_or_default();
    let mut services: Vec<Object> = services.into_iter().map(ApiObject::object).collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(services)
}

pub async fn service_state(endpoint: &Endpoint, id: &str) -> anyhow::Result<ServiceState> {
    let service: ApiObject = raw::get_json(endpoint, &format!("/services/{id}"), TIMEOUT)
        .await?
        .with_context(|| format!("service {id} is gone"))?;
    let mode = service.spec.mode.clone().unwrap_or(Value::Null);
    let replicas = mode["Replicated"]["Replicas"]
        .as_u64()
        .or_else(|| mode["Replicated"].is_object().then_some(1))
        .or_else(|| mode["ReplicatedJob"]["TotalCompletions"].as_u64())
        .or_else(|| mode["ReplicatedJob"].is_object().then_some(1));
    let job = mode.get("ReplicatedJob").is_some() || mode.get("GlobalJob").is_some();
    let update = service.update_status.as_ref().map(|status| UpdateStatus {
        state: status.state.clone(),
        message: status.message.clone(),
    });
    Ok(ServiceState {
        object: service.object(),
        update,
        replicas,
        job,
    })
}

pub async fn tasks(endpoint: &Endpoint, service: &str) -> anyhow::Result<Vec<Task>> {
    let path = format!(
        "/tasks?filters={}",
        filters(&[("service", service), ("_up-to-date", "true")])
    );
    let tasks: Vec<ApiTask> = raw::get_json(endpoint, &path, TIMEOUT)
        .await?
        .unwrap_or_default();
    Ok(tasks
        .into_iter()
        .map(|task| Task {
            id: task.id,
            desired: task.desired_state,
            state: task.status.state,
            error: task.status.err.filter(|e| !e.is_empty()),
        })
        .collect())
}

pub async fn stack_networks(endpoint: &Endpoint, namespace: &str) -> anyhow::Result<Vec<String>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Network {
        name: String,
    }
    let label = format!("{NAMESPACE_LABEL}={namespace}");
    let path = format!("/networks?filters={}", filters(&[("label", &label)]));
    let networks: Vec<Network> = raw::get_json(endpoint, &path, TIMEOUT)
        .await?
        .unwrap_or_default();
    let mut names: Vec<String> = networks.into_iter().map(|n| n.name).collect();
    names.sort();
    Ok(names)
}

pub async fn objects(
    endpoint: &Endpoint,
    kind: ObjectKind,
    namespace: &str,
) -> anyhow::Result<Vec<Object>> {
    let label = format!("{NAMESPACE_LABEL}={namespace}");
    let path = format!("/{kind}s?filters={}", filters(&[("label", &label)]));
    let objects: Vec<ApiObject> = raw::get_json(endpoint, &path, TIMEOUT)
        .await?
        .unwrap_or_default();
    Ok(objects.into_iter().map(ApiObject::object).collect())
}

// Writes.

/// Sends a write; an answer other than 2xx is an error carrying the engine's message.
async fn write(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: &Value,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let (status, answer) = raw::send_json(endpoint, method, path, body, TIMEOUT).await?;
    if !(200..300).contains(&status) {
        bail!("{}", engine_message(status, &answer));
    }
    Ok((status, answer))
}

fn engine_message(status: u16, answer: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    match serde_json::from_slice::<Message>(answer) {
        Ok(message) => message.message,
        Err(_) => format!(
            "status {status}: {}",
            String::from_utf8_lossy(answer).trim()
        ),
    }
}

pub async fn create_service(endpoint: &Endpoint, spec: &ServiceSpec) -> anyhow::Result<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Created {
        #[serde(rename = "ID")]
        id: String,
    }
    let body = service_spec(spec)?;
    let (_, answer) = write(endpoint, "POST", "/services/create", &body)
        .await
        .with_context(|| format!("creating service {}", spec.name))?;
    let created: Created = serde_json::from_slice(&answer)
        .with_context(|| format!("reading the id of service {}", spec.name))?;
    Ok(created.id)
}

pub async fn update_service(
    endpoint: &Endpoint,
    id: &str,
    version: u64,
    spec: &ServiceSpec,
) -> anyhow::Result<()> {
    let body = service_spec(spec)?;
    let path = format!("/services/{id}/update?version={version}");
    write(endpoint, "POST", &path, &body)
        .await
        .with_context(|| format!("updating service {}", spec.name))?;
    Ok(())
}

/// `DELETE path`: what is gone already (404), or answers with a status of `also`, is no error.
pub async fn remove(endpoint: &Endpoint, path: &str, also: &[u16]) -> anyhow::Result<()> {
    let (status, answer) = raw::send_json(endpoint, "DELETE", path, &Value::Null, TIMEOUT).await?;
    match status {
        200..=299 | 404 => Ok(()),
        status if also.contains(&status) => Ok(()),
        _ => bail!("DELETE {path}: {}", engine_message(status, &answer)),
    }
}

pub async fn ensure_object(
    endpoint: &Endpoint,
    kind: ObjectKind,
    name: &str,
    labels: &BTreeMap<String, String>,
    data: &[u8],
) -> anyhow::Result<String> {
    use base64::Engine as _;
    let body = json!({
        "Name": name,
        "Labels": labels,
        "Data": base64::engine::general_purpose::STANDARD.encode(data),
    });
    let (status, answer) = raw::send_json(
        endpoint,
        "POST",
        &format!("/{kind}s/create"),
        &body,
        TIMEOUT,
    )
    .await?;
    match status {
        200..=299 => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Created {
                #[serde(rename = "ID")]
                id: String,
            }
            let created: Created = serde_json::from_slice(&answer)
                .with_context(|| format!("reading the id of {kind} {name}"))?;
            Ok(created.id)
        }
        // Content-addressed: one of this name holds these bytes already.
        409 => {
            let path = format!("/{kind}s?filters={}", filters(&[("name", name)]));
            let found: Vec<ApiObject> = raw::get_json(endpoint, &path, TIMEOUT)
                .await?
                .unwrap_or_default();
            found
                .into_iter()
                .find(|object| object.spec.name == name)
                .map(|object| object.id)
                .with_context(|| format!("{kind} {name} exists, yet is not listed"))
        }
        _ => bail!(
            "creating {kind} {name}: {}",
            engine_message(status, &answer)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::compose::{Port, Service, SwarmDeploy};

    fn spec(service: Service) -> ServiceSpec {
        ServiceSpec {
            name: "shop_web".into(),
            key: "web".into(),
            service,
            labels: BTreeMap::from([(NAMESPACE_LABEL.into(), "shop".into())]),
            container_labels: BTreeMap::new(),
            networks: Vec::new(),
            volumes: BTreeMap::new(),
            secrets: Vec::new(),
            configs: Vec::new(),
        }
    }

    #[test]
    fn restart_falls_back_to_the_services_restart_as_the_cli_reads_it() {
        let with = |restart: &str| {
            let service = Service {
                restart: Some(restart.into()),
                ..Service::default()
            };
            restart_policy(&service)
        };
        assert_eq!(with("always"), Some(json!({"Condition": "any"})));
        assert_eq!(with("unless-stopped"), Some(json!({"Condition": "any"})));
        assert_eq!(
            with("on-failure:3"),
            Some(json!({"Condition": "on-failure", "MaxAttempts": 3}))
        );
        assert_eq!(with("no"), None);
    }

    #[test]
    fn capabilities_are_named_and_sorted_as_the_cli_sends_them() {
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            capabilities(
                &strings(&["sys_admin", "NET_ADMIN"]),
                &strings(&["net_admin", "CHOWN"])
            ),
            (
                strings(&["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]),
                strings(&["CAP_CHOWN"])
            )
        );
        assert_eq!(
            capabilities(&strings(&["ALL", "CHOWN"]), &[]),
            (strings(&["ALL"]), Vec::new())
        );
    }

    #[test]
    fn a_service_maps_onto_the_apis_service_spec() {
        let service = Service {
            image: Some("app:1".into()),
            command: Some(vec!["serve".into()]),
            extra_hosts: vec!["db:10.0.0.2".into()],
            ports: vec![
                Port {
                    target: 81,
                    published: Some("8081".into()),
                    host_ip: None,
                    protocol: "tcp".into(),
                    mode: Some("host".into()),
                },
                Port {
                    target: 80,
                    published: Some("8080".into()),
                    host_ip: None,
                    protocol: "tcp".into(),
                    mode: None,
                },
            ],
            scale: Some(3),
            swarm: SwarmDeploy {
                update_config: Some(UpdateConfig {
                    monitor: Some(Duration::from_secs(2)),
                    ..UpdateConfig::default()
                }),
                ..SwarmDeploy::default()
            },
            ..Service::default()
        };
        let body = service_spec(&spec(service)).unwrap();
        assert_eq!(
            body,
            json!({
                "Name": "shop_web",
                "Labels": {"com.docker.stack.namespace": "shop"},
                "TaskTemplate": {
                    "ContainerSpec": {
                        "Image": "app:1",
                        "Args": ["serve"],
                        "Hosts": ["10.0.0.2 db"],
                        "Privileges": {},
                    },
                    "Resources": {},
                    "Placement": {},
                },
                "Mode": {"Replicated": {"Replicas": 3}},
                "UpdateConfig": {"Parallelism": 1, "Monitor": 2_000_000_000u64},
                "EndpointSpec": {"Ports": [
                    {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
                    {"Protocol": "tcp", "TargetPort": 81, "PublishedPort": 8081, "PublishMode": "host"},
                ]},
            })
        );
    }

    #[test]
    fn a_port_range_is_refused_with_why() {
        let service = Service {
            image: Some("app:1".into()),
            ports: vec![Port {
                target: 80,
                published: Some("8000-8010".into()),
                host_ip: None,
                protocol: "tcp".into(),
                mode: None,
            }],
            ..Service::default()
        };
        let error = service_spec(&spec(service)).unwrap_err();
        assert!(format!("{error:#}").contains("not a range"), "{error:#}");
    }
}
