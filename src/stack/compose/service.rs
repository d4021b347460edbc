//! One entry of `services:` normalised into a `compose::Service`: every short syntax expanded,
//! every path made absolute, `env_file` read and merged under `environment`.
//!
//! Only keys stackhook can honour are accepted; any other is an `UnsupportedKey` error rather
//! than silently ignored, because ignoring it would deploy something other than `docker compose
//! up -d` would. Project-wide checks (declared networks and volumes, dependencies) belong to
//! `compose::project`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::node::Node;
use super::project::{Context, Definition, strings_map};
use super::{
    Blkio, Build, Condition, Dependency, DeviceRate, DeviceRequest, DeviceWeight, Error, FileKind,
    FileSource, Healthcheck, Hook, Isolation, Logging, Mount, MountKind, Placement, Port,
    PullPolicy, RestartPolicy, Service, ServiceFile, ServiceNetwork, SwarmResources, Ulimit,
    UpdateConfig, UpdateOrder,
};

/// How stackhook treats one service key of the Compose Specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Parsed into `compose::Service` and given to the engine as Docker Compose gives it.
    Applied,
    /// Accepted without effect, as `docker compose up -d` has none for it.
    Ignored,
    /// Accepted without effect, as Docker Compose accepts it and does nothing with it on Linux;
    /// the plan says so in a note (`Project::notes`) that gives this reason.
    Noted(&'static str),
    /// Valid Compose that stackhook refuses (`RefusedKey`, with this reason) rather than deploy
    /// something other than Compose would.
    Refused(&'static str),
}

/// Every service key of Docker Compose v2.40.3's schema, with how stackhook treats it: the one
/// list from which parsing, notes, the `RefusedKey` error and the README's list derive. A key
/// that is not here (nor `x-`) is not Compose, and is reported as Compose's schema check
/// reports it.
pub const SERVICE_KEYS: &[(&str, Support)] = &[
    ("annotations", Support::Applied),
    // Which services' output `up` (without `-d`) follows.
    ("attach", Support::Ignored),
    ("blkio_config", Support::Applied),
    ("build", Support::Applied),
    ("cap_add", Support::Applied),
    ("cap_drop", Support::Applied),
    ("cgroup", Support::Applied),
    ("cgroup_parent", Support::Applied),
    ("command", Support::Applied),
    ("configs", Support::Applied),
    ("container_name", Support::Applied),
    ("cpu_count", Support::Applied),
    ("cpu_percent", Support::Applied),
    ("cpu_period", Support::Applied),
    ("cpu_quota", Support::Applied),
    ("cpu_rt_period", Support::Applied),
    ("cpu_rt_runtime", Support::Applied),
    ("cpu_shares", Support::Applied),
    ("cpus", Support::Applied),
    ("cpuset", Support::Applied),
    (
        "credential_spec",
        Support::Noted(
            "only Windows containers use it, and docker compose up sends the engine none",
        ),
    ),
    ("depends_on", Support::Applied),
    ("deploy", Support::Applied),
    // Used by `docker compose watch` only.
    ("develop", Support::Ignored),
    ("device_cgroup_rules", Support::Applied),
    ("devices", Support::Applied),
    ("dns", Support::Applied),
    ("dns_opt", Support::Applied),
    ("dns_search", Support::Applied),
    ("domainname", Support::Applied),
    ("entrypoint", Support::Applied),
    ("env_file", Support::Applied),
    ("environment", Support::Applied),
    ("expose", Support::Applied),
    ("extends", Support::Applied),
    ("external_links", Support::Applied),
    ("extra_hosts", Support::Applied),
    ("gpus", Support::Applied),
    ("group_add", Support::Applied),
    ("healthcheck", Support::Applied),
    ("hostname", Support::Applied),
    ("image", Support::Applied),
    ("init", Support::Applied),
    ("ipc", Support::Applied),
    ("isolation", Support::Applied),
    ("label_file", Support::Applied),
    ("labels", Support::Applied),
    ("links", Support::Applied),
    ("logging", Support::Applied),
    ("mac_address", Support::Applied),
    ("mem_limit", Support::Applied),
    ("mem_reservation", Support::Applied),
    ("mem_swappiness", Support::Applied),
    ("memswap_limit", Support::Applied),
    (
        "models",
        Support::Refused(
            "it needs Docker Model Runner, which Compose drives through the `docker model` CLI plugin, not the engine API",
        ),
    ),
    ("network_mode", Support::Applied),
    ("networks", Support::Applied),
    ("oom_kill_disable", Support::Applied),
    ("oom_score_adj", Support::Applied),
    ("pid", Support::Applied),
    ("pids_limit", Support::Applied),
    ("platform", Support::Applied),
    ("ports", Support::Applied),
    ("post_start", Support::Applied),
    ("pre_stop", Support::Applied),
    ("privileged", Support::Applied),
    ("profiles", Support::Applied),
    (
        "provider",
        Support::Refused(
            "Compose hands the service to a provider plugin, a program it runs on the host; stackhook runs no program a repository names",
        ),
    ),
    ("pull_policy", Support::Applied),
    (
        "pull_refresh_after",
        Support::Noted("docker compose 2.40 reads no such setting, and ignores it too"),
    ),
    ("read_only", Support::Applied),
    ("restart", Support::Applied),
    ("runtime", Support::Applied),
    ("scale", Support::Applied),
    ("secrets", Support::Applied),
    ("security_opt", Support::Applied),
    ("shm_size", Support::Applied),
    ("stdin_open", Support::Applied),
    ("stop_grace_period", Support::Applied),
    ("stop_signal", Support::Applied),
    ("storage_opt", Support::Applied),
    ("sysctls", Support::Applied),
    ("tmpfs", Support::Applied),
    ("tty", Support::Applied),
    ("ulimits", Support::Applied),
    (
        "use_api_socket",
        Support::Refused(
            "with the engine socket, Compose copies the Docker CLI credentials of whoever runs it into the container; stackhook has none to copy (mount /var/run/docker.sock as a volume instead)",
        ),
    ),
    ("user", Support::Applied),
    ("userns_mode", Support::Applied),
    ("uts", Support::Applied),
    ("volumes", Support::Applied),
    ("volumes_from", Support::Applied),
    ("working_dir", Support::Applied),
];

/// How stackhook treats `key`; `None` when it is no Compose service key.
pub fn support(key: &str) -> Option<Support> {
    SERVICE_KEYS
        .iter()
        .find(|(known, _)| *known == key)
        .map(|(_, support)| *support)
}

/// Normalises the service `name`; `None` when it has `profiles:`, since stackhook never enables
/// a profile and `up` leaves such services out ("Using profiles with Compose").
pub fn service(name: &str, node: &Node, context: &mut Context) -> Result<Option<Service>, Error> {
    let entries = if node.is_null() {
        Vec::new()
    } else {
        node.entries()?
    };
    let unsupported = |key: &str| Error::UnsupportedKey {
        file: node.file.to_path_buf(),
        service: name.to_owned(),
        key: key.to_owned(),
    };
    for (key, _) in &entries {
        match support(key) {
            Some(Support::Applied | Support::Ignored | Support::Noted(_)) => {}
            Some(Support::Refused(reason)) => {
                return Err(Error::RefusedKey {
                    file: node.file.to_path_buf(),
                    service: name.to_owned(),
                    key: key.to_owned(),
                    reason,
                });
            }
            None if key.starts_with("x-") => {}
            // Worded as Compose's schema validation says it.
            None => {
                return Err(node.invalid(format!("additional properties '{key}' not allowed")));
            }
        }
    }
    let fields: BTreeMap<String, Node> = entries
        .into_iter()
        .filter(|(_, value)| !value.is_null())
        .collect();
    if let Some(profiles) = fields.get("profiles")
        && !profiles.strings()?.is_empty()
    {
        return Ok(None);
    }
    for (key, value) in &fields {
        if let Some(Support::Noted(reason)) = support(key) {
            context.notes.push(format!("{}: {reason}", value.at));
        }
    }
    let mut service = Service::default();
    let mut environment_node = None;
    let mut env_files = None;
    let mut gpu_requests = Vec::new();
    for (key, value) in &fields {
        match key.as_str() {
            "image" => service.image = Some(value.string()?),
            "build" => service.build = Some(build(value, context)?),
            "pull_policy" => service.pull_policy = Some(pull_policy(value)?),
            "command" => service.command = Some(command(value)?),
            "entrypoint" => service.entrypoint = Some(command(value)?),
            "environment" => environment_node = Some(value),
            "env_file" => env_files = Some(value),
            "user" => service.user = Some(value.string()?),
            "working_dir" => service.working_dir = Some(value.string()?),
            "hostname" => service.hostname = Some(value.string()?),
            "domainname" => service.domainname = Some(value.string()?),
            "labels" => service.labels = strings_map(value)?,
            "ports" => service.ports = ports(value)?,
            "expose" => service.expose = value.strings()?,
            "volumes" => service.volumes = mounts(value, context)?,
            "tmpfs" => service.tmpfs = value.string_or_strings()?,
            "networks" => service.networks = networks(value)?,
            "network_mode" => service.network_mode = Some(value.string()?),
            "restart" => service.restart = Some(restart(value)?),
            "healthcheck" => service.healthcheck = Some(healthcheck(value)?),
            "depends_on" => service.depends_on = depends_on(value)?,
            "extra_hosts" => service.extra_hosts = extra_hosts(value)?,
            "dns" => service.dns = value.string_or_strings()?,
            "cap_add" => service.cap_add = value.strings()?,
            "cap_drop" => service.cap_drop = value.strings()?,
            "privileged" => service.privileged = value.bool()?,
            "devices" => service.devices = value.strings()?,
            "init" => service.init = Some(value.bool()?),
            "read_only" => service.read_only = value.bool()?,
            "security_opt" => service.security_opt = value.strings()?,
            "sysctls" => service.sysctls = strings_map(value)?,
            "ulimits" => service.ulimits = ulimits(value)?,
            "logging" => service.logging = Some(logging(value)?),
            "stop_signal" => service.stop_signal = Some(value.string()?),
            "stop_grace_period" => service.stop_grace_period = Some(value.duration()?),
            "tty" => service.tty = value.bool()?,
            "stdin_open" => service.stdin_open = value.bool()?,
            "mem_limit" => service.mem_limit = Some(value.bytes()?),
            "mem_reservation" => service.mem_reservation = Some(value.bytes()?),
            "cpus" => service.cpus = Some(value.float()?),
            "shm_size" => service.shm_size = Some(value.bytes()?),
            "pids_limit" => service.pids_limit = Some(value.integer()?),
            "container_name" => service.container_name = Some(value.string()?),
            "scale" => service.scale = Some(replicas(value)?),
            "platform" => service.platform = Some(value.string()?),
            "pid" => service.pid = Some(value.string()?),
            "ipc" => service.ipc = Some(value.string()?),
            "uts" => service.uts = Some(value.string()?),
            "cgroup" => service.cgroup = Some(cgroup(value)?),
            "cgroup_parent" => service.cgroup_parent = Some(value.string()?),
            "userns_mode" => service.userns_mode = Some(value.string()?),
            "runtime" => service.runtime = Some(value.string()?),
            "isolation" => service.isolation = Some(isolation(value)?),
            "links" => service.links = value.strings()?,
            "external_links" => service.external_links = value.strings()?,
            "volumes_from" => service.volumes_from = value.strings()?,
            "group_add" => service.group_add = value.strings()?,
            "dns_search" => service.dns_search = value.string_or_strings()?,
            "dns_opt" => service.dns_opt = value.strings()?,
            "mac_address" => service.mac_address = Some(value.string()?),
            "cpu_shares" => service.cpu_shares = Some(value.integer()?),
            "cpu_quota" => service.cpu_quota = Some(value.integer()?),
            "cpu_period" => service.cpu_period = Some(value.integer()?),
            "cpu_rt_runtime" => service.cpu_rt_runtime = Some(value.integer()?),
            "cpu_rt_period" => service.cpu_rt_period = Some(value.integer()?),
            "cpu_count" => service.cpu_count = Some(value.integer()?),
            "cpu_percent" => service.cpu_percent = Some(value.float()?),
            "cpuset" => service.cpuset = Some(value.string()?),
            "memswap_limit" => service.memswap_limit = Some(swap_bytes(value)?),
            "mem_swappiness" => service.mem_swappiness = Some(value.integer()?),
            "oom_score_adj" => service.oom_score_adj = Some(value.integer()?),
            "oom_kill_disable" => service.oom_kill_disable = value.bool()?,
            "device_cgroup_rules" => service.device_cgroup_rules = value.strings()?,
            "storage_opt" => service.storage_opt = strings_map(value)?,
            "annotations" => service.annotations = strings_map(value)?,
            "gpus" => gpu_requests = gpus(value)?,
            "blkio_config" => service.blkio = Some(blkio(value)?),
            "post_start" => service.post_start = hooks(value)?,
            "pre_stop" => service.pre_stop = hooks(value)?,
            "secrets" => service
                .files
                .extend(files(FileKind::Secret, name, value, context)?),
            _ => {}
        }
    }
    // Secrets before configs, whatever the order of keys in the file.
    if let Some(value) = fields.get("configs") {
        service
            .files
            .extend(files(FileKind::Config, name, value, context)?);
    }
    if service.read_only
        && let Some(file) = service
            .files
            .iter()
            .find(|file| matches!(file.source, FileSource::Content(_)))
    {
        // Compose's words (`injectFileReferences`).
        return Err(node.invalid(format!(
            "cannot create {:?} in read-only service {name}: `file` is the sole supported option",
            file.name
        )));
    }
    if let Some(files) = fields.get("label_file") {
        service.labels = labels(files, &service.labels, context)?;
    }
    // `deploy` comes last: where both are set, Compose lets `deploy.resources` and
    // `deploy.restart_policy` win.
    if let Some(deploy_node) = fields.get("deploy") {
        deploy(deploy_node, &mut service, &mut context.notes, &unsupported)?;
    }
    // After `deploy.resources.reservations.devices`, in Compose's order.
    service.device_requests.extend(gpu_requests);
    if let Some(build) = &mut service.build
        && service.platform.is_some()
    {
        // The service's platform is the one built for ("build.platforms").
        build.platform.clone_from(&service.platform);
    }
    if service.scale.is_some_and(|scale| scale > 1)
        && let Some(container_name) = &service.container_name
    {
        return Err(node.invalid(format!(
            "can't set container_name and scale or replicas above 1, as container name {container_name} must be unique"
        )));
    }
    implicit_dependencies(&mut service);
    service.environment = environment(env_files, environment_node, context)?;
    if service.image.is_none() && service.build.is_none() {
        return Err(Error::NoImage {
            file: node.file.to_path_buf(),
            service: name.to_owned(),
        });
    }
    if service.networks.is_empty() && service.network_mode.is_none() {
        // "If no networks are declared, the service joins the default network."
        service
            .networks
            .insert("default".to_owned(), ServiceNetwork::default());
    } else if !service.networks.is_empty() && service.network_mode.is_some() {
        return Err(node.invalid("network_mode and networks cannot be combined"));
    }
    enforce_unicity(&mut service);
    Ok(Some(service))
}

/// Compose keeps one entry per key in these lists, the last one in the place of the first
/// (compose-go's `EnforceUnicity`), whether the duplicates come from `extends` or are written
/// twice in one service.
fn enforce_unicity(service: &mut Service) {
    unique_by(&mut service.ports, |port| {
        let Port {
            target,
            published,
            host_ip,
            protocol,
            mode: _,
        } = port;
        (
            *target,
            published.clone(),
            host_ip.clone(),
            protocol.clone(),
        )
    });
    unique_by(&mut service.volumes, |mount| mount.target.clone());
    unique_by(&mut service.files, |file| (file.kind, file.target.clone()));
    unique_by(&mut service.devices, |device| {
        let mut parts = device.split(':');
        let source = parts.next().unwrap_or_default();
        parts.next().unwrap_or(source).to_owned()
    });
    let lists = [
        &mut service.expose,
        &mut service.cap_add,
        &mut service.cap_drop,
        &mut service.dns,
        &mut service.dns_opt,
        &mut service.dns_search,
        &mut service.links,
        &mut service.tmpfs,
    ];
    for list in lists {
        // compose-go's `keyValueIndexer`: what comes before a `=`.
        unique_by(list, |entry| {
            entry
                .split_once('=')
                .map_or(entry.as_str(), |(key, _)| key)
                .to_owned()
        });
    }
    for network in service.networks.values_mut() {
        unique_by(&mut network.aliases, String::clone);
        unique_by(&mut network.link_local_ips, String::clone);
    }
}

fn unique_by<T, K: PartialEq>(items: &mut Vec<T>, key: impl Fn(&T) -> K) {
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    let mut keys: Vec<K> = Vec::with_capacity(items.len());
    for item in items.drain(..) {
        let item_key = key(&item);
        match keys.iter().position(|known| *known == item_key) {
            Some(index) => kept[index] = item,
            None => {
                keys.push(item_key);
                kept.push(item);
            }
        }
    }
    *items = kept;
}

fn build(node: &Node, context: &Context) -> Result<Build, Error> {
    let mut build = Build {
        context: context.dir.to_path_buf(),
        dockerfile: "Dockerfile".to_owned(),
        args: BTreeMap::new(),
        target: None,
        cache_from: Vec::new(),
        network: None,
        extra_hosts: Vec::new(),
        labels: BTreeMap::new(),
        shm_size: None,
        no_cache: false,
        pull: false,
        platform: None,
    };
    if node.entries().is_err() {
        build.context = resolve(context, &node.string()?);
        return Ok(build);
    }
    for (key, value) in node.entries()? {
        match key.as_str() {
            "context" => build.context = resolve(context, &value.string()?),
            "dockerfile" => build.dockerfile = value.string()?,
            // An argument without a value takes the interpolation environment's, else is
            // left out ("build.args").
            "args" => {
                build.args = value
                    .dictionary()?
                    .into_iter()
                    .filter_map(|(key, value)| {
                        let value = value.or_else(|| context.environment.get(&key).cloned())?;
                        Some((key, value))
                    })
                    .collect();
            }
            "target" => build.target = Some(value.string()?),
            "cache_from" => build.cache_from = value.strings()?,
            "network" => build.network = Some(value.string()?),
            "extra_hosts" => {
                build.extra_hosts = extra_hosts(&value)?;
                // The build API takes them as repeated query parameters, which bollard's
                // options cannot say.
                if build.extra_hosts.len() > 1 {
                    return Err(value.invalid("more than one host is not supported by stackhook"));
                }
            }
            "labels" => build.labels = strings_map(&value)?,
            "shm_size" => build.shm_size = Some(value.bytes()?),
            "no_cache" => build.no_cache = value.bool()?,
            "pull" => build.pull = value.bool()?,
            "platforms" => match value.strings()?.as_slice() {
                [] => {}
                [platform] => build.platform = Some(platform.clone()),
                _ => {
                    return Err(
                        value.invalid("more than one platform is not supported by stackhook")
                    );
                }
            },
            // BuildKit's outputs and inputs, which the engine's classic build API has no way
            // to take: refused rather than built without them.
            _ => return Err(value.invalid("is not supported by stackhook")),
        }
    }
    Ok(build)
}

/// A service's `secrets:` or `configs:`, short (`- name`) or long (`source`, `target`, `uid`,
/// `gid`, `mode`), resolved against the top-level definitions. A secret's target defaults to
/// `/run/secrets/<source>` and a relative one is under `/run/secrets`; a config's is
/// `/<source>`, or `/<target>`.
fn files(
    kind: FileKind,
    service: &str,
    node: &Node,
    context: &Context,
) -> Result<Vec<ServiceFile>, Error> {
    let (section, base) = match kind {
        FileKind::Secret => (&context.secrets, "/run/secrets/"),
        FileKind::Config => (&context.configs, "/"),
    };
    let mut files = Vec::new();
    for item in node.items()? {
        let mut name = None;
        let mut target = None;
        let (mut uid, mut gid, mut mode) = (None, None, None);
        if item.entries().is_ok() {
            for (key, value) in item.entries()? {
                match key.as_str() {
                    "source" => name = Some(value.string()?),
                    "target" => target = Some(value.string()?),
                    "uid" => uid = Some(id(&value)?),
                    "gid" => gid = Some(id(&value)?),
                    "mode" => mode = Some(file_mode(&value)?),
                    _ => {
                        return Err(
                            value.invalid(format!("additional properties '{key}' not allowed"))
                        );
                    }
                }
            }
        } else {
            name = Some(item.string()?);
        }
        let name = name.ok_or_else(|| item.invalid("needs a source"))?;
        let source = match section.get(&name) {
            Some(Definition::Source(source)) => source.clone(),
            Some(Definition::Refused(key)) => {
                let key = match kind {
                    FileKind::Secret => format!("secrets.{name}.{key}"),
                    FileKind::Config => format!("configs.{name}.{key}"),
                };
                return Err(Error::UnsupportedKey {
                    file: node.file.to_path_buf(),
                    service: service.to_owned(),
                    key,
                });
            }
            None => return Err(item.invalid(format!("refers to undefined {name}"))),
        };
        let target = match target {
            Some(target) if target.starts_with('/') => target,
            Some(target) => format!("{base}{target}"),
            None => format!("{base}{name}"),
        };
        files.push(ServiceFile {
            kind,
            name,
            target,
            source,
            uid,
            gid,
            mode,
        });
    }
    Ok(files)
}

fn id(node: &Node) -> Result<u32, Error> {
    let text = node.string()?;
    text.parse()
        .map_err(|_| node.invalid(format!("{text:?} is not a numeric id")))
}

/// A file mode, written in octal as in `chmod` (`0440`, `"0440"`, `0o440`).
fn file_mode(node: &Node) -> Result<u32, Error> {
    let text = node.string()?;
    let digits = text.trim_start_matches("0o");
    u32::from_str_radix(digits, 8).map_err(|_| node.invalid(format!("{text:?} is not a file mode")))
}

/// `cgroup:` takes only the two modes Compose's schema allows.
fn cgroup(node: &Node) -> Result<String, Error> {
    let mode = node.string()?;
    match mode.as_str() {
        "host" | "private" => Ok(mode),
        _ => Err(node.invalid(format!("{mode:?} must be one of host, private"))),
    }
}

/// `memswap_limit`: a byte size, or `-1` for unlimited swap.
fn swap_bytes(node: &Node) -> Result<i64, Error> {
    if node.string()?.trim() == "-1" {
        return Ok(-1);
    }
    node.bytes()
}

/// `gpus: all`, or a list of device requests; each asks for the `gpu` capability besides its
/// own (`getDeployResources` in Compose's create.go).
fn gpus(node: &Node) -> Result<Vec<DeviceRequest>, Error> {
    if node.items().is_err() {
        return match node.string()?.as_str() {
            "all" => Ok(vec![DeviceRequest {
                driver: None,
                count: Some(-1),
                device_ids: Vec::new(),
                capabilities: vec!["gpu".to_owned()],
                options: BTreeMap::new(),
            }]),
            other => Err(node.invalid(format!("{other:?} must be all or a list"))),
        };
    }
    node.items()?
        .iter()
        .map(|item| {
            let mut request = device_request(item)?;
            request.capabilities.push("gpu".to_owned());
            Ok(request)
        })
        .collect()
}

/// `blkio_config`. Rates take byte sizes (`12mb`), as compose-go reads them (`UnitBytes`), for
/// operations per second too.
fn blkio(node: &Node) -> Result<Blkio, Error> {
    let mut blkio = Blkio::default();
    let weight = |node: &Node| {
        let weight = node.integer()?;
        u16::try_from(weight).map_err(|_| node.invalid(format!("{weight} is not a weight")))
    };
    for (key, value) in node.entries()? {
        let rates = |value: &Node| -> Result<Vec<DeviceRate>, Error> {
            value
                .items()?
                .iter()
                .map(|item| {
                    let (path, rate) = blkio_device(item, "rate")?;
                    Ok(DeviceRate {
                        path,
                        rate: rate.bytes()?,
                    })
                })
                .collect()
        };
        match key.as_str() {
            // Compose leaves a weight of 0 out of the request (`omitempty`).
            "weight" => blkio.weight = Some(weight(&value)?).filter(|weight| *weight != 0),
            "weight_device" => {
                for item in value.items()? {
                    let (path, device_weight) = blkio_device(&item, "weight")?;
                    blkio.weight_device.push(DeviceWeight {
                        path,
                        weight: weight(&device_weight)?,
                    });
                }
            }
            "device_read_bps" => blkio.device_read_bps = rates(&value)?,
            "device_read_iops" => blkio.device_read_iops = rates(&value)?,
            "device_write_bps" => blkio.device_write_bps = rates(&value)?,
            "device_write_iops" => blkio.device_write_iops = rates(&value)?,
            _ => return Err(value.invalid(format!("additional properties '{key}' not allowed"))),
        }
    }
    Ok(blkio)
}

/// `post_start` or `pre_stop`: a list of hooks, each needing a `command`.
fn hooks(node: &Node) -> Result<Vec<Hook>, Error> {
    let mut hooks = Vec::new();
    for item in node.items()? {
        let mut hook = Hook::default();
        let mut command = None;
        for (key, value) in item.entries()? {
            match key.as_str() {
                "command" => command = Some(self::command(&value)?),
                "user" => hook.user = Some(value.string()?),
                "privileged" => hook.privileged = value.bool()?,
                "working_dir" => hook.working_dir = Some(value.string()?),
                "environment" => hook.environment = value.dictionary()?.into_iter().collect(),
                key if key.starts_with("x-") => {}
                _ => {
                    return Err(value.invalid(format!("additional properties '{key}' not allowed")));
                }
            }
        }
        // Compose's schema: "command is required".
        hook.command = command.ok_or_else(|| item.invalid("command is required"))?;
        hooks.push(hook);
    }
    Ok(hooks)
}

/// One entry of a `blkio_config` list: `path` and the value under `value_key`.
fn blkio_device<'a>(item: &Node<'a>, value_key: &str) -> Result<(String, Node<'a>), Error> {
    let mut path = None;
    let mut value = None;
    for (key, field) in item.entries()? {
        match key.as_str() {
            "path" => path = Some(field.string()?),
            key if key == value_key => value = Some(field),
            _ => return Err(field.invalid(format!("additional properties '{key}' not allowed"))),
        }
    }
    match (path, value) {
        (Some(path), Some(value)) => Ok((path, value)),
        _ => Err(item.invalid(format!("needs both path and {value_key}"))),
    }
}

/// One device request (`driver`, `count`, `device_ids`, `capabilities`, `options`). Without a
/// count or ids it asks for all devices, as compose-go normalises it.
fn device_request(node: &Node) -> Result<DeviceRequest, Error> {
    let mut request = DeviceRequest {
        driver: None,
        count: None,
        device_ids: Vec::new(),
        capabilities: Vec::new(),
        options: BTreeMap::new(),
    };
    for (key, value) in node.entries()? {
        match key.as_str() {
            "driver" => request.driver = Some(value.string()?),
            "count" if value.string()? == "all" => request.count = Some(-1),
            "count" => request.count = Some(value.integer()?),
            "device_ids" => request.device_ids = value.strings()?,
            "capabilities" => request.capabilities = value.strings()?,
            "options" => request.options = strings_map(&value)?,
            _ => return Err(value.invalid("is not supported by stackhook")),
        }
    }
    if request.count.is_none() && request.device_ids.is_empty() {
        request.count = Some(-1);
    }
    Ok(request)
}

/// `label_file` entries (one path or a list) read in order, each overriding the one before, and
/// `labels:` over them all.
fn labels(
    files: &Node,
    labels: &BTreeMap<String, String>,
    context: &mut Context,
) -> Result<BTreeMap<String, String>, Error> {
    let mut merged = BTreeMap::new();
    for path in files.string_or_strings()? {
        let path = resolve(context, &path);
        let text = context.sealed.open(&path, super::read(&path)?)?;
        let mut lookup = |name: &str| context.lookup(name);
        merged.extend(super::parse_dotenv(&path, &text, &mut lookup)?);
        if !context.files_read.contains(&path) {
            context.files_read.push(path);
        }
    }
    merged.extend(labels.clone());
    Ok(merged)
}

/// The isolation technologies the engine's API names; the engine on Linux takes only
/// `default`, and refuses the others itself, as it does for Compose.
fn isolation(node: &Node) -> Result<Isolation, Error> {
    match node.string()?.as_str() {
        "default" => Ok(Isolation::Default),
        "process" => Ok(Isolation::Process),
        "hyperv" => Ok(Isolation::Hyperv),
        other => Err(node.invalid(format!(
            "isolation {other:?} is none of default, process, hyperv"
        ))),
    }
}

fn pull_policy(node: &Node) -> Result<PullPolicy, Error> {
    match node.string()?.as_str() {
        "always" => Ok(PullPolicy::Always),
        "missing" | "if_not_present" => Ok(PullPolicy::Missing),
        "never" => Ok(PullPolicy::Never),
        "build" => Ok(PullPolicy::Build),
        other => Err(node.invalid(format!("pull policy {other:?} is not supported"))),
    }
}

/// A list is taken as is; a string is split as a POSIX shell would split words, without
/// expansion, as Compose does.
fn command(node: &Node) -> Result<Vec<String>, Error> {
    if node.items().is_ok() {
        return node.strings();
    }
    let text = node.string()?;
    split_words(&text).ok_or_else(|| node.invalid("has an unclosed quote"))
}

/// Shell word splitting: blanks separate words, single quotes keep everything, double quotes
/// keep all but `\"`, `\\`, `\$` and `` \` ``, and a backslash outside quotes escapes any
/// character.
fn split_words(text: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut characters = text.chars();
    while let Some(character) = characters.next() {
        match character {
            ' ' | '\t' | '\n' => words.extend(word.take()),
            '\'' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match characters.next()? {
                        '\'' => break,
                        other => current.push(other),
                    }
                }
            }
            '"' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match characters.next()? {
                        '"' => break,
                        '\\' => match characters.next()? {
                            escaped @ ('"' | '\\' | '$' | '`') => current.push(escaped),
                            '\n' => {}
                            other => {
                                current.push('\\');
                                current.push(other);
                            }
                        },
                        other => current.push(other),
                    }
                }
            }
            '\\' => {
                let current = word.get_or_insert_with(String::new);
                match characters.next() {
                    Some('\n') => {}
                    Some(escaped) => current.push(escaped),
                    None => current.push('\\'),
                }
            }
            other => word.get_or_insert_with(String::new).push(other),
        }
    }
    words.extend(word);
    Some(words)
}

/// `env_file` entries in order, each overriding the one before, then `environment` over them
/// ("Environment variables precedence"). A name without a value is looked up in the
/// interpolation environment and kept without a value when unset, as Compose sends it.
fn environment(
    env_files: Option<&Node>,
    environment: Option<&Node>,
    context: &mut Context,
) -> Result<BTreeMap<String, Option<String>>, Error> {
    let mut variables = BTreeMap::new();
    if let Some(node) = env_files {
        for (path, required) in env_file_entries(node, context)? {
            if !path.is_file() && !required {
                continue;
            }
            let text = context.sealed.open(&path, super::read(&path)?)?;
            let mut lookup = |name: &str| context.lookup(name);
            variables.extend(
                super::parse_dotenv(&path, &text, &mut lookup)?
                    .into_iter()
                    .map(|(name, value)| (name, Some(value))),
            );
            if !context.files_read.contains(&path) {
                context.files_read.push(path);
            }
        }
    }
    if let Some(node) = environment {
        for (name, value) in node.dictionary()? {
            let value = value.or_else(|| context.lookup(&name));
            variables.insert(name, value);
        }
    }
    Ok(variables)
}

/// `env_file` as a path, a list of paths, or a list of `{path, required}`.
fn env_file_entries(node: &Node, context: &Context) -> Result<Vec<(PathBuf, bool)>, Error> {
    let items = match node.items() {
        Ok(items) => items,
        Err(_) => vec![node.clone()],
    };
    items
        .iter()
        .map(|item| match item.get("path") {
            Some(path) => {
                let required = match item.get("required") {
                    Some(required) => required.bool()?,
                    None => true,
                };
                Ok((resolve(context, &path.string()?), required))
            }
            None => Ok((resolve(context, &item.string()?), true)),
        })
        .collect()
}

fn ports(node: &Node) -> Result<Vec<Port>, Error> {
    let mut ports = Vec::new();
    for item in node.items()? {
        if item.entries().is_ok() {
            ports.push(long_port(&item)?);
        } else {
            let text = item.string()?;
            let parsed = short_ports(&text)
                .ok_or_else(|| item.invalid(format!("invalid port specification {text:?}")))?;
            ports.extend(parsed);
        }
    }
    Ok(ports)
}

/// `[[host_ip:]published:]target[/protocol]`, where `published` and `target` may be ranges. A
/// container range becomes one `Port` per container port, paired with the host range when there
/// is one, as `docker compose config` shows.
fn short_ports(text: &str) -> Option<Vec<Port>> {
    let (address, protocol) = match text.rsplit_once('/') {
        Some((address, protocol)) => (address, protocol.to_owned()),
        None => (text, "tcp".to_owned()),
    };
    let (host_ip, rest) = if let Some(bracketed) = address.strip_prefix('[') {
        let (ip, rest) = bracketed.split_once("]:")?;
        (Some(ip.to_owned()), rest)
    } else {
        match address.matches(':').count() {
            0 | 1 => (None, address),
            2 => {
                let (ip, rest) = address.split_once(':')?;
                (Some(ip.to_owned()).filter(|ip| !ip.is_empty()), rest)
            }
            _ => return None,
        }
    };
    let (published, target) = match rest.split_once(':') {
        Some((published, target)) => (Some(published).filter(|p| !p.is_empty()), target),
        None => (None, rest),
    };
    let (first, last) = port_range(target)?;
    let published_range = match published {
        Some(text) => Some(port_range(text)?),
        None => None,
    };
    let count = last - first + 1;
    let mut ports = Vec::new();
    for offset in 0..count {
        let published = match (published, published_range) {
            (None, _) => None,
            // A host range for one container port lets the engine pick within it.
            (Some(text), _) if count == 1 => Some(text.to_owned()),
            (Some(_), Some((host_first, host_last))) if host_last - host_first + 1 == count => {
                Some((host_first + offset).to_string())
            }
            _ => return None,
        };
        ports.push(Port {
            target: first + offset,
            published,
            host_ip: host_ip.clone(),
            protocol: protocol.clone(),
            mode: None,
        });
    }
    Some(ports)
}

fn port_range(text: &str) -> Option<(u16, u16)> {
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let (first, last): (u16, u16) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some((first, last))
}

fn long_port(node: &Node) -> Result<Port, Error> {
    let mut port = Port {
        target: 0,
        published: None,
        host_ip: None,
        protocol: "tcp".to_owned(),
        mode: None,
    };
    for (key, value) in node.entries()? {
        match key.as_str() {
            "target" => {
                port.target = u16::try_from(value.integer()?)
                    .map_err(|_| value.invalid("is not a port number"))?;
            }
            "published" => port.published = Some(value.string()?),
            "host_ip" => port.host_ip = Some(value.string()?),
            "protocol" => port.protocol = value.string()?,
            // `mode: ingress` is the default; `host` only differs in Swarm.
            "mode" => port.mode = Some(value.string()?),
            // Informational.
            "name" | "app_protocol" => {}
            _ => return Err(value.invalid("is not supported by stackhook")),
        }
    }
    if port.target == 0 {
        return Err(node.invalid("a port needs a target"));
    }
    Ok(port)
}

fn mounts(node: &Node, context: &Context) -> Result<Vec<Mount>, Error> {
    node.items()?
        .iter()
        .map(|item| {
            if item.entries().is_ok() {
                long_mount(item, context)
            } else {
                short_mount(item, context)
            }
        })
        .collect()
}

/// `[source:]target[:options]`. A source starting with `.`, `/` or `~` is a host path (a bind
/// mount); any other names a volume ("volumes" short syntax).
fn short_mount(node: &Node, context: &Context) -> Result<Mount, Error> {
    let text = node.string()?;
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [target] => (None, *target, ""),
        [source, target] => (Some(*source), *target, ""),
        [source, target, options] => (Some(*source), *target, *options),
        _ => return Err(node.invalid(format!("invalid volume specification {text:?}"))),
    };
    if target.is_empty() || source.is_some_and(str::is_empty) {
        return Err(node.invalid(format!("invalid volume specification {text:?}")));
    }
    let mut mount = Mount {
        kind: MountKind::Volume,
        source: None,
        target: target.to_owned(),
        read_only: false,
        options: Vec::new(),
        nocopy: false,
        tmpfs_size: None,
        create_host_path: false,
    };
    for option in options.split(',').filter(|option| !option.is_empty()) {
        match option {
            "ro" => mount.read_only = true,
            "rw" => {}
            "nocopy" => mount.nocopy = true,
            other => mount.options.push(other.to_owned()),
        }
    }
    if let Some(source) = source {
        if source.starts_with(['.', '/', '~']) {
            mount.kind = MountKind::Bind;
            mount.source = Some(resolve(context, source).to_string_lossy().into_owned());
            // The short syntax creates a missing host directory, as the legacy engine did.
            mount.create_host_path = true;
        } else {
            mount.source = Some(source.to_owned());
        }
    }
    Ok(mount)
}

fn long_mount(node: &Node, context: &Context) -> Result<Mount, Error> {
    let kind = match node.get("type").map(|kind| kind.string()).transpose()? {
        Some(kind) if kind == "bind" => MountKind::Bind,
        Some(kind) if kind == "volume" => MountKind::Volume,
        Some(kind) if kind == "tmpfs" => MountKind::Tmpfs,
        Some(kind) => return Err(node.invalid(format!("mount type {kind:?} is not supported"))),
        None => return Err(node.invalid("a mount needs a type")),
    };
    let mut mount = Mount {
        kind,
        source: None,
        target: String::new(),
        read_only: false,
        options: Vec::new(),
        nocopy: false,
        tmpfs_size: None,
        create_host_path: false,
    };
    let mut bind_section = false;
    for (key, value) in node.entries()? {
        match key.as_str() {
            "type" => {}
            "source" => mount.source = Some(value.string()?),
            "target" => mount.target = value.string()?,
            "read_only" => mount.read_only = value.bool()?,
            "bind" => {
                bind_section = true;
                for (option, setting) in value.entries()? {
                    match option.as_str() {
                        "create_host_path" => mount.create_host_path = setting.bool()?,
                        "propagation" | "selinux" => mount.options.push(setting.string()?),
                        _ => return Err(setting.invalid("is not supported by stackhook")),
                    }
                }
            }
            "volume" => {
                for (option, setting) in value.entries()? {
                    match option.as_str() {
                        "nocopy" => mount.nocopy = setting.bool()?,
                        _ => return Err(setting.invalid("is not supported by stackhook")),
                    }
                }
            }
            "tmpfs" => {
                for (option, setting) in value.entries()? {
                    match option.as_str() {
                        "size" => mount.tmpfs_size = Some(setting.bytes()?),
                        _ => return Err(setting.invalid("is not supported by stackhook")),
                    }
                }
            }
            "consistency" => {}
            _ => return Err(value.invalid("is not supported by stackhook")),
        }
    }
    if mount.target.is_empty() {
        return Err(node.invalid("a mount needs a target"));
    }
    if mount.kind == MountKind::Bind && !bind_section {
        // Compose uses the mount API only for a bind whose `bind:` section asks for it
        // (`requireMountAPI` in compose's create.go); without one, the bind string is used,
        // and with it the engine creates a missing host path, as for the short syntax.
        mount.create_host_path = true;
    }
    if mount.kind == MountKind::Bind {
        let source = mount
            .source
            .as_deref()
            .ok_or_else(|| node.invalid("a bind mount needs a source"))?;
        mount.source = Some(resolve(context, source).to_string_lossy().into_owned());
    }
    Ok(mount)
}

fn networks(node: &Node) -> Result<BTreeMap<String, ServiceNetwork>, Error> {
    if node.items().is_ok() {
        return Ok(node
            .strings()?
            .into_iter()
            .map(|key| (key, ServiceNetwork::default()))
            .collect());
    }
    let mut networks = BTreeMap::new();
    for (key, value) in node.entries()? {
        let mut network = ServiceNetwork::default();
        if !value.is_null() {
            network.configured = true;
            for (field, setting) in value.entries()? {
                match field.as_str() {
                    "aliases" => network.aliases = setting.strings()?,
                    "ipv4_address" => network.ipv4_address = Some(setting.string()?),
                    "ipv6_address" => network.ipv6_address = Some(setting.string()?),
                    "link_local_ips" => network.link_local_ips = setting.strings()?,
                    "mac_address" => network.mac_address = Some(setting.string()?),
                    "driver_opts" => network.driver_opts = strings_map(&setting)?,
                    "priority" => network.priority = setting.integer()?,
                    "gw_priority" => network.gw_priority = setting.integer()?,
                    // `interface_name` needs Docker Engine 28.1 (API 1.49), as Compose says.
                    _ => return Err(setting.invalid("is not supported by stackhook")),
                }
            }
        }
        networks.insert(key, network);
    }
    Ok(networks)
}

fn healthcheck(node: &Node) -> Result<Healthcheck, Error> {
    let mut healthcheck = Healthcheck {
        test: Vec::new(),
        interval: None,
        timeout: None,
        retries: None,
        start_period: None,
        start_interval: None,
    };
    let mut disable = false;
    for (key, value) in node.entries()? {
        match key.as_str() {
            // A string is run by the container's shell ("healthcheck": test).
            "test" if value.items().is_ok() => healthcheck.test = value.strings()?,
            "test" => healthcheck.test = vec!["CMD-SHELL".to_owned(), value.string()?],
            "interval" => healthcheck.interval = Some(value.duration()?),
            "timeout" => healthcheck.timeout = Some(value.duration()?),
            "start_period" => healthcheck.start_period = Some(value.duration()?),
            "start_interval" => healthcheck.start_interval = Some(value.duration()?),
            "retries" => {
                healthcheck.retries = Some(
                    u32::try_from(value.integer()?)
                        .map_err(|_| value.invalid("must be a positive number"))?,
                );
            }
            "disable" => disable = value.bool()?,
            _ => return Err(value.invalid("is not supported by stackhook")),
        }
    }
    if disable {
        healthcheck.test = vec!["NONE".to_owned()];
    }
    Ok(healthcheck)
}

fn depends_on(node: &Node) -> Result<BTreeMap<String, Dependency>, Error> {
    let started = Dependency {
        condition: Condition::ServiceStarted,
        required: true,
        restart: false,
    };
    if node.items().is_ok() {
        return Ok(node
            .strings()?
            .into_iter()
            .map(|name| (name, started.clone()))
            .collect());
    }
    let mut dependencies = BTreeMap::new();
    for (name, value) in node.entries()? {
        let mut dependency = started.clone();
        if !value.is_null() {
            for (key, setting) in value.entries()? {
                match key.as_str() {
                    "condition" => dependency.condition = condition(&setting)?,
                    "required" => dependency.required = setting.bool()?,
                    "restart" => dependency.restart = setting.bool()?,
                    _ => return Err(setting.invalid("is not supported by stackhook")),
                }
            }
        }
        dependencies.insert(name, dependency);
    }
    Ok(dependencies)
}

/// The services a service uses through `links`, a `service:` namespace or `volumes_from` are
/// dependencies too, unless `depends_on` names them already (compose-go's normalisation):
/// started first, and restarted with them except for `volumes_from`.
fn implicit_dependencies(service: &mut Service) {
    let mut implicit = Vec::new();
    for link in &service.links {
        let name = link.split_once(':').map_or(link.as_str(), |(name, _)| name);
        implicit.push((name.to_owned(), true));
    }
    let namespaces = [
        &service.network_mode,
        &service.ipc,
        &service.pid,
        &service.uts,
        &service.cgroup,
    ];
    for mode in namespaces.into_iter().flatten() {
        if let Some(name) = mode.strip_prefix("service:") {
            implicit.push((name.to_owned(), true));
        }
    }
    for entry in &service.volumes_from {
        if !entry.starts_with("container:") {
            let name = entry.split(':').next().unwrap_or_default();
            implicit.push((name.to_owned(), false));
        }
    }
    for (name, restart) in implicit {
        service.depends_on.entry(name).or_insert(Dependency {
            condition: Condition::ServiceStarted,
            required: true,
            restart,
        });
    }
}

fn condition(node: &Node) -> Result<Condition, Error> {
    match node.string()?.as_str() {
        "service_started" => Ok(Condition::ServiceStarted),
        "service_healthy" => Ok(Condition::ServiceHealthy),
        "service_completed_successfully" => Ok(Condition::ServiceCompletedSuccessfully),
        other => Err(node.invalid(format!("unknown condition {other:?}"))),
    }
}

/// `host:ip` or `host=ip` in a list, or a `host: ip` mapping (whose value may list several
/// addresses), all as `host:ip`, the form the engine takes.
fn extra_hosts(node: &Node) -> Result<Vec<String>, Error> {
    if node.items().is_ok() {
        return node
            .strings()?
            .into_iter()
            .map(|entry| {
                let (host, ip) = entry
                    .split_once('=')
                    .or_else(|| entry.split_once(':'))
                    .ok_or_else(|| node.invalid(format!("{entry:?} is not host:ip")))?;
                Ok(format!("{host}:{ip}"))
            })
            .collect();
    }
    let mut hosts = Vec::new();
    for (host, value) in node.entries()? {
        for ip in value.string_or_strings()? {
            hosts.push(format!("{host}:{ip}"));
        }
    }
    Ok(hosts)
}

fn ulimits(node: &Node) -> Result<BTreeMap<String, Ulimit>, Error> {
    let mut ulimits = BTreeMap::new();
    for (name, value) in node.entries()? {
        let ulimit = match (value.get("soft"), value.get("hard")) {
            (Some(soft), Some(hard)) => Ulimit {
                soft: soft.integer()?,
                hard: hard.integer()?,
            },
            (None, None) => {
                let limit = value.integer()?;
                Ulimit {
                    soft: limit,
                    hard: limit,
                }
            }
            _ => return Err(value.invalid("needs both soft and hard")),
        };
        ulimits.insert(name, ulimit);
    }
    Ok(ulimits)
}

fn logging(node: &Node) -> Result<Logging, Error> {
    let mut logging = Logging {
        driver: None,
        options: BTreeMap::new(),
    };
    for (key, value) in node.entries()? {
        match key.as_str() {
            "driver" => logging.driver = Some(value.string()?),
            "options" if value.is_null() => {}
            "options" => logging.options = strings_map(&value)?,
            _ => return Err(value.invalid("is not supported by stackhook")),
        }
    }
    Ok(logging)
}

/// The parts of `deploy` that `docker compose up` applies outside Swarm: resource limits and
/// reservations, a restart policy and replicas. Swarm's scheduling (`mode`, `placement`,
/// `endpoint_mode`, `labels`) has no effect on `up`, as in Compose, and gets a note; update
/// settings are kept for their `order` and `monitor` only.
fn deploy(
    node: &Node,
    service: &mut Service,
    notes: &mut Vec<String>,
    unsupported: &dyn Fn(&str) -> Error,
) -> Result<(), Error> {
    for (key, value) in node.entries()? {
        match key.as_str() {
            "replicas" => {
                let replicas = replicas(&value)?;
                // compose-go's loader: "can't set distinct values on 'scale' and
                // 'deploy.replicas'".
                if service.scale.is_some_and(|scale| scale != replicas) {
                    return Err(
                        value.invalid("can't set distinct values on 'scale' and 'deploy.replicas'")
                    );
                }
                service.scale = Some(replicas);
            }
            "resources" => resources(&value, service, notes, unsupported)?,
            "restart_policy" => restart_policy(&value, service, notes, unsupported)?,
            // Compose reads no mode: `global` (and any other) runs the service's replicas, one
            // container unless it sets more, as `replicated` does (seen with `docker-compose up
            // -d` v2.40.3).
            "mode" => {
                let mode = value.string()?;
                if !["replicated", "global", "replicated-job", "global-job"].contains(&&*mode) {
                    return Err(value.invalid(format!(
                        "unknown mode {mode:?}; use replicated, global, replicated-job or global-job"
                    )));
                }
                if mode != "replicated" {
                    notes.push(format!(
                        "{}: {mode} only matters to Swarm; as docker compose up does, the service runs its replicas (one unless set)",
                        value.at
                    ));
                }
                service.swarm.mode = Some(mode);
            }
            "placement" => {
                service.swarm.placement = placement(&value)?;
                notes.push(swarm_only(&value));
            }
            "endpoint_mode" => {
                service.swarm.endpoint_mode = Some(value.string()?);
                notes.push(swarm_only(&value));
            }
            "labels" => {
                service.swarm.labels = super::project::strings_map(&value)?;
                notes.push(swarm_only(&value));
            }
            "update_config" => {
                let config = update_config(&value, notes)?;
                service.update_order = config.order;
                service.update_monitor = config.monitor;
                service.swarm.update_config = Some(config);
            }
            "rollback_config" => {
                service.swarm.rollback_config = Some(update_config(&value, &mut Vec::new())?);
                notes.push(swarm_only(&value));
            }
            _ => return Err(unsupported(&format!("deploy.{key}"))),
        }
    }
    Ok(())
}

/// `deploy.placement`.
fn placement(node: &Node) -> Result<Placement, Error> {
    let mut placement = Placement::default();
    for (key, value) in node.entries()? {
        match key.as_str() {
            "constraints" => {
                placement.constraints = value
                    .items()?
                    .iter()
                    .map(Node::string)
                    .collect::<Result<_, _>>()?;
            }
            "preferences" => {
                for preference in value.items()? {
                    for (kind, descriptor) in preference.entries()? {
                        if kind != "spread" {
                            return Err(descriptor
                                .invalid(format!("additional properties '{kind}' not allowed")));
                        }
                        placement.preferences.push(descriptor.string()?);
                    }
                }
            }
            "max_replicas_per_node" => {
                let count = value.integer()?;
                placement.max_replicas_per_node =
                    Some(u64::try_from(count).map_err(|_| {
                        value.invalid(format!("{count} is not a number of replicas"))
                    })?);
            }
            _ => return Err(value.invalid(format!("additional properties '{key}' not allowed"))),
        }
    }
    Ok(placement)
}

/// A number of containers: `scale` or `deploy.replicas`.
fn replicas(node: &Node) -> Result<u32, Error> {
    let count = node.integer()?;
    u32::try_from(count).map_err(|_| node.invalid(format!("{count} is not a number of containers")))
}

/// A note that the key at `node` only matters to Swarm.
fn swarm_only(node: &Node) -> String {
    format!(
        "{}: only Swarm uses it; docker compose up ignores it too",
        node.at
    )
}

/// `update_config` and `rollback_config` share their keys; `order` and `monitor` shape how
/// stackhook replaces a container (issue 9), the others only matter to Swarm.
fn update_config(node: &Node, notes: &mut Vec<String>) -> Result<UpdateConfig, Error> {
    let mut config = UpdateConfig::default();
    for (key, value) in node.entries()? {
        match key.as_str() {
            "order" => {
                config.order = Some(match value.string()?.as_str() {
                    "stop-first" => UpdateOrder::StopFirst,
                    "start-first" => UpdateOrder::StartFirst,
                    other => {
                        return Err(value
                            .invalid(format!("{other:?} must be one of start-first, stop-first")));
                    }
                });
            }
            "parallelism" => {
                let count = value.integer()?;
                config.parallelism = Some(
                    u64::try_from(count)
                        .map_err(|_| value.invalid(format!("{count} is not a number of tasks")))?,
                );
                notes.push(swarm_only(&value));
            }
            "monitor" => config.monitor = Some(value.duration()?),
            "delay" => {
                config.delay = Some(value.duration()?);
                notes.push(swarm_only(&value));
            }
            "failure_action" => {
                let action = value.string()?;
                if !["continue", "rollback", "pause"].contains(&&*action) {
                    return Err(value.invalid(format!(
                        "{action:?} must be one of continue, rollback, pause"
                    )));
                }
                config.failure_action = Some(action);
                notes.push(swarm_only(&value));
            }
            "max_failure_ratio" => {
                config.max_failure_ratio = Some(value.float()?);
                notes.push(swarm_only(&value));
            }
            _ => return Err(value.invalid(format!("additional properties '{key}' not allowed"))),
        }
    }
    Ok(config)
}

fn resources(
    node: &Node,
    service: &mut Service,
    notes: &mut Vec<String>,
    unsupported: &dyn Fn(&str) -> Error,
) -> Result<(), Error> {
    for (section, limits) in node.entries()? {
        let mut swarm = SwarmResources::default();
        for (key, value) in limits.entries()? {
            match (section.as_str(), key.as_str()) {
                ("limits", "cpus") => {
                    swarm.cpus = Some(value.float()?);
                    service.cpus = swarm.cpus;
                }
                ("limits", "memory") => {
                    swarm.memory = Some(value.bytes()?);
                    service.mem_limit = swarm.memory;
                }
                ("limits", "pids") => {
                    swarm.pids = Some(value.integer()?);
                    service.pids_limit = swarm.pids;
                }
                ("reservations", "memory") => {
                    swarm.memory = Some(value.bytes()?);
                    service.mem_reservation = swarm.memory;
                }
                // A CPU reservation is a Swarm scheduling hint; Compose leaves it out too.
                ("reservations", "cpus") => {
                    swarm.cpus = Some(value.float()?);
                    notes.push(swarm_only(&value));
                }
                ("reservations", "devices") => {
                    for item in value.items()? {
                        service.device_requests.push(device_request(&item)?);
                    }
                }
                ("reservations", "generic_resources") => {
                    for item in value.items()? {
                        swarm.generic.push(generic_resource(&item)?);
                    }
                    notes.push(swarm_only(&value));
                }
                _ => return Err(unsupported(&format!("deploy.resources.{section}.{key}"))),
            }
        }
        match section.as_str() {
            "limits" => service.swarm.limits = Some(swarm),
            _ => service.swarm.reservations = Some(swarm),
        }
    }
    Ok(())
}

/// A `generic_resources` entry: `{discrete_resource_spec: {kind, value}}`.
fn generic_resource(node: &Node) -> Result<(String, i64), Error> {
    let spec = node
        .get("discrete_resource_spec")
        .ok_or_else(|| node.invalid("a generic resource needs a discrete_resource_spec"))?;
    let kind = spec
        .get("kind")
        .ok_or_else(|| spec.invalid("needs a kind"))?
        .string()?;
    let value = spec
        .get("value")
        .ok_or_else(|| spec.invalid("needs a value"))?
        .integer()?;
    Ok((kind, value))
}

/// `restart:` as the engine takes it: `no`, `always`, `on-failure[:N]` or `unless-stopped`.
/// Compose maps the spellings of `deploy.restart_policy` here too (`none` → `no`, `any` →
/// `always`; docker/compose `mapRestartPolicyCondition`).
fn restart(node: &Node) -> Result<String, Error> {
    let text = node.string()?;
    let (condition, attempts) = match text.split_once(':') {
        Some((condition, attempts)) => (condition, Some(attempts)),
        None => (text.as_str(), None),
    };
    let name = restart_name(node, condition)?;
    Ok(match attempts {
        Some(attempts) => format!("{name}:{attempts}"),
        None => name.to_owned(),
    })
}

/// `deploy.restart_policy` replaces `restart:` where both are set, as in Compose (docker/compose
/// `getRestartPolicy`): `none` → `no`, `any` → `always`, `max_attempts` the retry count. Without
/// a `condition` the policy's name stays empty, which the engine treats as `no`.
fn restart_policy(
    node: &Node,
    service: &mut Service,
    notes: &mut Vec<String>,
    unsupported: &dyn Fn(&str) -> Error,
) -> Result<(), Error> {
    let mut name = "";
    let mut attempts = None;
    let mut swarm = RestartPolicy::default();
    for (key, value) in node.entries()? {
        match key.as_str() {
            "condition" => {
                let condition = value.string()?;
                name = restart_name(&value, &condition)?;
                swarm.condition = Some(condition);
            }
            "max_attempts" => {
                let count = value.integer()?;
                attempts = Some(count);
                swarm.max_attempts =
                    Some(u64::try_from(count).map_err(|_| {
                        value.invalid(format!("{count} is not a number of attempts"))
                    })?);
            }
            // Swarm's timing of restarts; the engine's restart policy has no such settings.
            "delay" => {
                swarm.delay = Some(value.duration()?);
                notes.push(swarm_only(&value));
            }
            "window" => {
                swarm.window = Some(value.duration()?);
                notes.push(swarm_only(&value));
            }
            _ => return Err(unsupported(&format!("deploy.restart_policy.{key}"))),
        }
    }
    service.swarm.restart_policy = Some(swarm);
    service.restart = Some(match attempts {
        Some(attempts) => format!("{name}:{attempts}"),
        None => name.to_owned(),
    });
    Ok(())
}

/// The engine's name of a restart condition. Compose hands an unknown one to the engine, which
/// refuses the container; stackhook refuses the file instead, before anything is touched.
fn restart_name(node: &Node, condition: &str) -> Result<&'static str, Error> {
    match condition {
        "no" | "none" => Ok("no"),
        "any" | "always" => Ok("always"),
        "on-failure" => Ok("on-failure"),
        "unless-stopped" => Ok("unless-stopped"),
        "" => Ok(""),
        other => Err(node.invalid(format!(
            "unknown restart condition {other:?}; use no, always, on-failure or unless-stopped"
        ))),
    }
}

/// A host path from the file made absolute: `~` is `HOME` from the given environment (this
/// module reads no process environment), a relative path is relative to the stack directory.
/// `.` and `..` components are folded as Compose does.
fn resolve(context: &Context, path: &str) -> PathBuf {
    let home = context.environment.get("HOME").map(PathBuf::from);
    let joined = match (path.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            home.join(rest.trim_start_matches('/'))
        }
        _ => context.dir.join(path),
    };
    super::normalise_path(&joined)
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn words_split_like_a_shell() {
        let cases = [
            r#"echo "a b" 'c d' e\ f"#,
            r#"sh -c "echo \"$$HOME\" \\ \n""#,
            "  spaced   out  ",
            r#"empty "" ''"#,
            "unclosed 'quote",
        ]
        .map(|text| format!("{text} => {:?}", split_words(text)));
        expect![[r#"
            echo "a b" 'c d' e\ f => Some(["echo", "a b", "c d", "e f"])
            sh -c "echo \"$$HOME\" \\ \n" => Some(["sh", "-c", "echo \"$$HOME\" \\ \\n"])
              spaced   out   => Some(["spaced", "out"])
            empty "" '' => Some(["empty", "", ""])
            unclosed 'quote => None"#]]
        .assert_eq(&cases.join("\n"));
    }

    #[test]
    fn short_port_syntax() {
        let cases = [
            "80",
            "8080:80",
            "127.0.0.1:8080:80/udp",
            "8000-8001:8000-8001",
            "9000-9010:80",
            "[::1]:80:80",
            "127.0.0.1::80",
            "8000-8002:80-81",
            "x:80",
        ]
        .map(|text| format!("{text} => {:?}", short_ports(text)));
        expect![[r#"
            80 => Some([Port { target: 80, published: None, host_ip: None, protocol: "tcp", mode: None }])
            8080:80 => Some([Port { target: 80, published: Some("8080"), host_ip: None, protocol: "tcp", mode: None }])
            127.0.0.1:8080:80/udp => Some([Port { target: 80, published: Some("8080"), host_ip: Some("127.0.0.1"), protocol: "udp", mode: None }])
            8000-8001:8000-8001 => Some([Port { target: 8000, published: Some("8000"), host_ip: None, protocol: "tcp", mode: None }, Port { target: 8001, published: Some("8001"), host_ip: None, protocol: "tcp", mode: None }])
            9000-9010:80 => Some([Port { target: 80, published: Some("9000-9010"), host_ip: None, protocol: "tcp", mode: None }])
            [::1]:80:80 => Some([Port { target: 80, published: Some("80"), host_ip: Some("::1"), protocol: "tcp", mode: None }])
            127.0.0.1::80 => Some([Port { target: 80, published: None, host_ip: Some("127.0.0.1"), protocol: "tcp", mode: None }])
            8000-8002:80-81 => None
            x:80 => None"#]].assert_eq(&cases.join("\n"));
    }
}
