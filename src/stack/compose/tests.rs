//! Tests of `compose::load` through files written into a temporary stack directory.
//!
//! Each test shows the parts of the `Project` it is about (or the error message), with the
//! temporary directory written as `/stack` so that snapshots are stable.

use std::collections::BTreeMap;
use std::fmt::Debug;

use expect_test::{Expect, expect};

use super::*;

/// A stack directory named `demo` holding `files`, loaded with `environment` as the process
/// environment; also returns the directory and its parent, to be hidden from snapshots.
fn load_stack(
    files: &[(&str, &str)],
    environment: &[(&str, &str)],
) -> (Result<Project, Error>, String, String) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("demo");
    std::fs::create_dir(&dir).unwrap();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let environment: BTreeMap<String, String> = environment
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    let host = Host {
        environment,
        ..Host::default()
    };
    let result = load(&dir, &host);
    (
        result,
        dir.to_string_lossy().into_owned(),
        root.path().to_string_lossy().into_owned(),
    )
}

/// Loads `compose.yaml` with only `HOME` set and shows `show(project)`, or the error message.
fn check<T: Debug>(compose: &str, show: impl Fn(&Project) -> T, expected: &Expect) {
    let environment = [("HOME", "/home/deploy")];
    check_files(&[("compose.yaml", compose)], &environment, show, expected);
}

fn check_files<T: Debug>(
    files: &[(&str, &str)],
    environment: &[(&str, &str)],
    show: impl Fn(&Project) -> T,
    expected: &Expect,
) {
    let (result, dir, root) = load_stack(files, environment);
    let actual = match result {
        Ok(project) => format!("{:#?}", show(&project)),
        Err(error) => format!("error: {error}"),
    };
    let actual = actual.replace(&dir, "/stack").replace(&root, "/parent");
    expected.assert_eq(&actual);
}

/// Loads `compose.yaml` and shows the service `web`.
fn check_web<T: Debug>(compose: &str, show: impl Fn(&Service) -> T, expected: &Expect) {
    check(
        compose,
        |project| project.services.get("web").map(&show),
        expected,
    );
}

/// Shows a text as it is, not quoted, in a snapshot.
struct Shown(String);

impl Debug for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn error(compose: &str, expected: &Expect) {
    check(compose, |_| (), expected);
}

/// A file that loads, but that containers cannot run (`Project::check_standalone`).
fn standalone_error(compose: &str, expected: &Expect) {
    check(
        compose,
        |project| match project.check_standalone() {
            Ok(()) => "loads, and containers can run it".to_owned(),
            Err(error) => format!("error: {error}"),
        },
        expected,
    );
}

#[test]
fn minimal_project() {
    check(
        "services:\n  web:\n    image: nginx\n",
        |project| project.clone(),
        &expect![[r#"
            Project {
                name: "demo",
                working_dir: "/stack",
                config_files: [
                    "/stack/compose.yaml",
                ],
                services: {
                    "web": Service {
                        image: Some(
                            "nginx",
                        ),
                        build: None,
                        pull_policy: None,
                        command: None,
                        entrypoint: None,
                        environment: {},
                        user: None,
                        working_dir: None,
                        hostname: None,
                        domainname: None,
                        labels: {},
                        ports: [],
                        expose: [],
                        volumes: [],
                        tmpfs: [],
                        networks: {
                            "default": ServiceNetwork {
                                aliases: [],
                                ipv4_address: None,
                                ipv6_address: None,
                                link_local_ips: [],
                                mac_address: None,
                                driver_opts: {},
                                priority: 0,
                                gw_priority: 0,
                                configured: false,
                            },
                        },
                        network_mode: None,
                        restart: None,
                        healthcheck: None,
                        depends_on: {},
                        extra_hosts: [],
                        dns: [],
                        cap_add: [],
                        cap_drop: [],
                        privileged: false,
                        devices: [],
                        init: None,
                        read_only: false,
                        security_opt: [],
                        sysctls: {},
                        ulimits: {},
                        logging: None,
                        stop_signal: None,
                        stop_grace_period: None,
                        tty: false,
                        stdin_open: false,
                        mem_limit: None,
                        mem_reservation: None,
                        cpus: None,
                        shm_size: None,
                        pids_limit: None,
                        container_name: None,
                        scale: None,
                        platform: None,
                        pid: None,
                        ipc: None,
                        uts: None,
                        cgroup: None,
                        cgroup_parent: None,
                        userns_mode: None,
                        runtime: None,
                        isolation: None,
                        links: [],
                        external_links: [],
                        volumes_from: [],
                        group_add: [],
                        dns_search: [],
                        dns_opt: [],
                        mac_address: None,
                        cpu_shares: None,
                        cpu_quota: None,
                        cpu_period: None,
                        cpu_rt_runtime: None,
                        cpu_rt_period: None,
                        cpu_count: None,
                        cpu_percent: None,
                        cpuset: None,
                        memswap_limit: None,
                        mem_swappiness: None,
                        oom_score_adj: None,
                        oom_kill_disable: false,
                        device_cgroup_rules: [],
                        storage_opt: {},
                        annotations: {},
                        device_requests: [],
                        files: [],
                        update_order: None,
                        update_monitor: None,
                        blkio: None,
                        post_start: [],
                        pre_stop: [],
                        swarm: SwarmDeploy {
                            mode: None,
                            endpoint_mode: None,
                            labels: {},
                            placement: Placement {
                                constraints: [],
                                preferences: [],
                                max_replicas_per_node: None,
                            },
                            limits: None,
                            reservations: None,
                            restart_policy: None,
                            update_config: None,
                            rollback_config: None,
                        },
                    },
                },
                networks: {
                    "default": Network {
                        name: "demo_default",
                        external: false,
                        internal: false,
                        driver: None,
                        driver_opts: {},
                        labels: {},
                        attachable: false,
                        enable_ipv6: false,
                        ipam: None,
                    },
                },
                volumes: {},
                files_read: [],
                variables: {
                    "COMPOSE_PROJECT_NAME": None,
                },
                sealed: {},
                notes: [],
            }"#]],
    );
}

#[test]
fn file_names_take_precedence_in_order() {
    check_files(
        &[
            ("docker-compose.yml", "services: {old: {image: old}}"),
            ("compose.yml", "services: {new: {image: new}}"),
        ],
        &[],
        |project| {
            (
                project.services.keys().cloned().collect::<Vec<_>>(),
                project.config_files.clone(),
            )
        },
        &expect![[r#"
            (
                [
                    "new",
                ],
                [
                    "/stack/compose.yml",
                ],
            )"#]],
    );
    check_files(
        &[("other.yaml", "")],
        &[],
        |_| (),
        &expect![
            "error: no compose file in /stack (looked for compose.yaml, compose.yml, docker-compose.yaml, docker-compose.yml, podman-compose.yaml, podman-compose.yml)"
        ],
    );
}

#[test]
fn process_environment_wins_over_dotenv() {
    check_files(
        &[
            (
                ".env",
                "TAG=from-dotenv\nPORT=80\n# comment\nexport QUOTED=\"a b\"\n",
            ),
            (
                "compose.yaml",
                "services:\n  web:\n    image: \"nginx:${TAG}\"\n    labels: [\"port=$PORT\", \"quoted=${QUOTED}\"]\n",
            ),
        ],
        &[("TAG", "from-process")],
        |project| {
            let web = &project.services["web"];
            (
                web.image.clone(),
                web.labels.clone(),
                project.files_read.clone(),
                project.variables.clone(),
            )
        },
        &expect![[r#"
            (
                Some(
                    "nginx:from-process",
                ),
                {
                    "port": "80",
                    "quoted": "a b",
                },
                [
                    "/stack/.env",
                ],
                {
                    "COMPOSE_PROJECT_NAME": None,
                    "PORT": Some(
                        "80",
                    ),
                    "QUOTED": Some(
                        "a b",
                    ),
                    "TAG": Some(
                        "from-process",
                    ),
                },
            )"#]],
    );
}

#[test]
fn interpolation_forms() {
    check_files(
        &[(
            "compose.yaml",
            r#"
services:
  web:
    image: "${UNSET:-nginx}:${EMPTY-latest}"
    command: ["${SET:+alt}", "${UNSET+alt}", "$$literal", "${UNSET:-${SET}}", "${UNSET}"]
    environment:
      "$KEYS_ARE_NOT_INTERPOLATED": "x"
"#,
        )],
        &[("SET", "value"), ("EMPTY", "")],
        |project| {
            let web = &project.services["web"];
            (
                web.image.clone(),
                web.command.clone(),
                web.environment.clone(),
                project.variables.clone(),
            )
        },
        &expect![[r#"
            (
                Some(
                    "nginx:",
                ),
                Some(
                    [
                        "alt",
                        "",
                        "$literal",
                        "value",
                        "",
                    ],
                ),
                {
                    "$KEYS_ARE_NOT_INTERPOLATED": Some(
                        "x",
                    ),
                },
                {
                    "COMPOSE_PROJECT_NAME": None,
                    "EMPTY": Some(
                        "",
                    ),
                    "SET": Some(
                        "value",
                    ),
                    "UNSET": None,
                },
            )"#]],
    );
}

#[test]
fn anchors_merges_and_extensions() {
    check_web(
        r#"
version: "3.9"
x-common: &common
  restart: unless-stopped
  labels: {team: ops}
x-logging: &logging
  <<: *common
  logging: {driver: local, options: {max-size: 10m}}
services:
  web:
    <<: *logging
    x-note: ignored
    image: nginx
    restart: always
"#,
        |web| (web.restart.clone(), web.labels.clone(), web.logging.clone()),
        &expect![[r#"
            Some(
                (
                    Some(
                        "always",
                    ),
                    {
                        "team": "ops",
                    },
                    Some(
                        Logging {
                            driver: Some(
                                "local",
                            ),
                            options: {
                                "max-size": "10m",
                            },
                        },
                    ),
                ),
            )"#]],
    );
}

#[test]
fn profiles_leave_services_out() {
    check(
        "services:\n  web: {image: nginx, depends_on: {debug: {condition: service_started, required: false}}}\n  debug: {image: busybox, profiles: [debug]}\n",
        |project| {
            (
                project.services.keys().cloned().collect::<Vec<_>>(),
                project.services["web"].depends_on.clone(),
            )
        },
        &expect![[r#"
            (
                [
                    "web",
                ],
                {},
            )"#]],
    );
}

#[test]
fn build_short_and_long() {
    check(
        r#"
services:
  short: {build: ./app}
  long:
    build:
      context: ../shared
      dockerfile: Containerfile
      args: [VERSION=1, FROM_ENV, ABSENT]
      target: release
"#,
        |project| {
            project
                .services
                .iter()
                .map(|(name, service)| (name.clone(), service.build.clone(), service.image.clone()))
                .collect::<Vec<_>>()
        },
        &expect![[r#"
            [
                (
                    "long",
                    Some(
                        Build {
                            context: "/parent/shared",
                            dockerfile: "Containerfile",
                            args: {
                                "VERSION": "1",
                            },
                            target: Some(
                                "release",
                            ),
                            cache_from: [],
                            network: None,
                            extra_hosts: [],
                            labels: {},
                            shm_size: None,
                            no_cache: false,
                            pull: false,
                            platform: None,
                        },
                    ),
                    None,
                ),
                (
                    "short",
                    Some(
                        Build {
                            context: "/stack/app",
                            dockerfile: "Dockerfile",
                            args: {},
                            target: None,
                            cache_from: [],
                            network: None,
                            extra_hosts: [],
                            labels: {},
                            shm_size: None,
                            no_cache: false,
                            pull: false,
                            platform: None,
                        },
                    ),
                    None,
                ),
            ]"#]],
    );
}

#[test]
fn commands_and_entrypoints() {
    check(
        r#"
services:
  a: {image: x, command: echo "a b" 'c d' e\ f, entrypoint: [/bin/sh, -c]}
  b: {image: x, command: []}
"#,
        |project| {
            project
                .services
                .iter()
                .map(|(name, service)| {
                    (
                        name.clone(),
                        service.command.clone(),
                        service.entrypoint.clone(),
                    )
                })
                .collect::<Vec<_>>()
        },
        &expect![[r#"
            [
                (
                    "a",
                    Some(
                        [
                            "echo",
                            "a b",
                            "c d",
                            "e f",
                        ],
                    ),
                    Some(
                        [
                            "/bin/sh",
                            "-c",
                        ],
                    ),
                ),
                (
                    "b",
                    Some(
                        [],
                    ),
                    None,
                ),
            ]"#]],
    );
}

#[test]
fn environment_and_env_files() {
    check_files(
        &[
            ("base.env", "SHARED=from-base\nBASE_ONLY=${TAG}\n"),
            ("override.env", "SHARED=from-override\n"),
            (
                "compose.yaml",
                r#"
services:
  web:
    image: nginx
    env_file: [base.env, {path: ./override.env}, {path: missing.env, required: false}]
    environment:
      NUMBER: 1
      BOOLEAN: true
      FROM_PROCESS:
      ABSENT:
      SHARED: from-environment
  list:
    image: nginx
    env_file: base.env
    environment: [A=1, "B=", FROM_PROCESS, ABSENT]
"#,
            ),
        ],
        &[("FROM_PROCESS", "process"), ("TAG", "v1")],
        |project| {
            (
                project.services["web"].environment.clone(),
                project.services["list"].environment.clone(),
                project.files_read.clone(),
            )
        },
        &expect![[r#"
            (
                {
                    "ABSENT": None,
                    "BASE_ONLY": Some(
                        "v1",
                    ),
                    "BOOLEAN": Some(
                        "true",
                    ),
                    "FROM_PROCESS": Some(
                        "process",
                    ),
                    "NUMBER": Some(
                        "1",
                    ),
                    "SHARED": Some(
                        "from-environment",
                    ),
                },
                {
                    "A": Some(
                        "1",
                    ),
                    "ABSENT": None,
                    "B": Some(
                        "",
                    ),
                    "BASE_ONLY": Some(
                        "v1",
                    ),
                    "FROM_PROCESS": Some(
                        "process",
                    ),
                    "SHARED": Some(
                        "from-base",
                    ),
                },
                [
                    "/stack/base.env",
                    "/stack/override.env",
                ],
            )"#]],
    );
    check_files(
        &[(
            "compose.yaml",
            "services: {web: {image: nginx, env_file: missing.env}}",
        )],
        &[],
        |_| (),
        &expect!["error: /stack/missing.env: No such file or directory (os error 2)"],
    );
}

#[test]
fn ports_short_and_long() {
    check_web(
        r#"
services:
  web:
    image: nginx
    ports:
      - 80
      - "8080:80"
      - "127.0.0.1:5353:53/udp"
      - "8000-8001:8000-8001"
      - "[::1]:9000:90"
      - {target: 443, published: 8443, host_ip: 0.0.0.0, protocol: tcp}
      - {target: "53", published: "5300", protocol: udp, mode: host}
    expose: [3000, "4000/udp"]
"#,
        |web| {
            (
                web.ports
                    .iter()
                    .map(|port| format!("{port:?}"))
                    .collect::<Vec<_>>(),
                web.expose.clone(),
            )
        },
        &expect![[r#"
            Some(
                (
                    [
                        "Port { target: 80, published: None, host_ip: None, protocol: \"tcp\", mode: None }",
                        "Port { target: 80, published: Some(\"8080\"), host_ip: None, protocol: \"tcp\", mode: None }",
                        "Port { target: 53, published: Some(\"5353\"), host_ip: Some(\"127.0.0.1\"), protocol: \"udp\", mode: None }",
                        "Port { target: 8000, published: Some(\"8000\"), host_ip: None, protocol: \"tcp\", mode: None }",
                        "Port { target: 8001, published: Some(\"8001\"), host_ip: None, protocol: \"tcp\", mode: None }",
                        "Port { target: 90, published: Some(\"9000\"), host_ip: Some(\"::1\"), protocol: \"tcp\", mode: None }",
                        "Port { target: 443, published: Some(\"8443\"), host_ip: Some(\"0.0.0.0\"), protocol: \"tcp\", mode: None }",
                        "Port { target: 53, published: Some(\"5300\"), host_ip: None, protocol: \"udp\", mode: Some(\"host\") }",
                    ],
                    [
                        "3000",
                        "4000/udp",
                    ],
                ),
            )"#]],
    );
}

#[test]
fn volumes_short_and_long() {
    check(
        r#"
services:
  web:
    image: nginx
    volumes:
      - data:/var/lib/data
      - ./conf:/etc/nginx:ro
      - /srv/static:/static:rw,z
      - ~/cache:/cache
      - /anonymous
      - type: bind
        source: ./site
        target: /site
        read_only: true
        bind: {create_host_path: false}
      - type: volume
        source: data
        target: /copy
        volume: {nocopy: true}
      - {type: tmpfs, target: /scratch, tmpfs: {size: 64m}}
    tmpfs: /run
volumes:
  data:
  shared: {external: true}
  legacy: {external: {name: old-name}}
  named: {name: exact}
"#,
        |project| {
            let web = &project.services["web"];
            let mounts: Vec<String> = web
                .volumes
                .iter()
                .map(|mount| format!("{mount:?}"))
                .collect();
            (mounts, web.tmpfs.clone(), project.volumes.clone())
        },
        &expect![[r#"
            (
                [
                    "Mount { kind: Volume, source: Some(\"data\"), target: \"/var/lib/data\", read_only: false, options: [], nocopy: false, tmpfs_size: None, create_host_path: false }",
                    "Mount { kind: Bind, source: Some(\"/stack/conf\"), target: \"/etc/nginx\", read_only: true, options: [], nocopy: false, tmpfs_size: None, create_host_path: true }",
                    "Mount { kind: Bind, source: Some(\"/srv/static\"), target: \"/static\", read_only: false, options: [\"z\"], nocopy: false, tmpfs_size: None, create_host_path: true }",
                    "Mount { kind: Bind, source: Some(\"/home/deploy/cache\"), target: \"/cache\", read_only: false, options: [], nocopy: false, tmpfs_size: None, create_host_path: true }",
                    "Mount { kind: Volume, source: None, target: \"/anonymous\", read_only: false, options: [], nocopy: false, tmpfs_size: None, create_host_path: false }",
                    "Mount { kind: Bind, source: Some(\"/stack/site\"), target: \"/site\", read_only: true, options: [], nocopy: false, tmpfs_size: None, create_host_path: false }",
                    "Mount { kind: Volume, source: Some(\"data\"), target: \"/copy\", read_only: false, options: [], nocopy: true, tmpfs_size: None, create_host_path: false }",
                    "Mount { kind: Tmpfs, source: None, target: \"/scratch\", read_only: false, options: [], nocopy: false, tmpfs_size: Some(67108864), create_host_path: false }",
                ],
                [
                    "/run",
                ],
                {
                    "data": Volume {
                        name: "demo_data",
                        external: false,
                        driver: None,
                        driver_opts: {},
                        labels: {},
                    },
                    "legacy": Volume {
                        name: "old-name",
                        external: true,
                        driver: None,
                        driver_opts: {},
                        labels: {},
                    },
                    "named": Volume {
                        name: "exact",
                        external: false,
                        driver: None,
                        driver_opts: {},
                        labels: {},
                    },
                    "shared": Volume {
                        name: "shared",
                        external: true,
                        driver: None,
                        driver_opts: {},
                        labels: {},
                    },
                },
            )"#]],
    );
    error(
        "services: {web: {image: nginx, volumes: ['undeclared:/data']}}",
        &expect![
            "error: /stack/compose.yaml: services.web.volumes: service refers to undefined volume undeclared"
        ],
    );
}

#[test]
fn networks_and_default_network() {
    check(
        r#"
name: My_App
services:
  web:
    image: nginx
    networks:
      front:
        aliases: [www]
        ipv4_address: 172.20.0.5
      back:
  worker: {image: worker, networks: [back, default]}
  host: {image: agent, network_mode: host}
networks:
  front: {driver: bridge, internal: true, labels: [tier=front], attachable: true, enable_ipv6: false}
  back: {name: shared-back, driver_opts: {mtu: 1400}}
  outside: {external: true}
"#,
        |project| {
            let networks: BTreeMap<String, BTreeMap<String, ServiceNetwork>> = project
                .services
                .iter()
                .map(|(name, service)| (name.clone(), service.networks.clone()))
                .collect();
            (project.name.clone(), networks, project.networks.clone())
        },
        &expect![[r#"
            (
                "my_app",
                {
                    "host": {},
                    "web": {
                        "back": ServiceNetwork {
                            aliases: [],
                            ipv4_address: None,
                            ipv6_address: None,
                            link_local_ips: [],
                            mac_address: None,
                            driver_opts: {},
                            priority: 0,
                            gw_priority: 0,
                            configured: false,
                        },
                        "front": ServiceNetwork {
                            aliases: [
                                "www",
                            ],
                            ipv4_address: Some(
                                "172.20.0.5",
                            ),
                            ipv6_address: None,
                            link_local_ips: [],
                            mac_address: None,
                            driver_opts: {},
                            priority: 0,
                            gw_priority: 0,
                            configured: true,
                        },
                    },
                    "worker": {
                        "back": ServiceNetwork {
                            aliases: [],
                            ipv4_address: None,
                            ipv6_address: None,
                            link_local_ips: [],
                            mac_address: None,
                            driver_opts: {},
                            priority: 0,
                            gw_priority: 0,
                            configured: false,
                        },
                        "default": ServiceNetwork {
                            aliases: [],
                            ipv4_address: None,
                            ipv6_address: None,
                            link_local_ips: [],
                            mac_address: None,
                            driver_opts: {},
                            priority: 0,
                            gw_priority: 0,
                            configured: false,
                        },
                    },
                },
                {
                    "back": Network {
                        name: "shared-back",
                        external: false,
                        internal: false,
                        driver: None,
                        driver_opts: {
                            "mtu": "1400",
                        },
                        labels: {},
                        attachable: false,
                        enable_ipv6: false,
                        ipam: None,
                    },
                    "default": Network {
                        name: "my_app_default",
                        external: false,
                        internal: false,
                        driver: None,
                        driver_opts: {},
                        labels: {},
                        attachable: false,
                        enable_ipv6: false,
                        ipam: None,
                    },
                    "front": Network {
                        name: "my_app_front",
                        external: false,
                        internal: true,
                        driver: Some(
                            "bridge",
                        ),
                        driver_opts: {},
                        labels: {
                            "tier": "front",
                        },
                        attachable: true,
                        enable_ipv6: false,
                        ipam: None,
                    },
                    "outside": Network {
                        name: "outside",
                        external: true,
                        internal: false,
                        driver: None,
                        driver_opts: {},
                        labels: {},
                        attachable: false,
                        enable_ipv6: false,
                        ipam: None,
                    },
                },
            )"#]],
    );
    error(
        "services: {web: {image: nginx, networks: [nowhere]}}",
        &expect![
            "error: /stack/compose.yaml: services.web.networks: service refers to undefined network nowhere"
        ],
    );
}

#[test]
fn healthchecks_and_dependencies() {
    check(
        r#"
services:
  web:
    image: nginx
    healthcheck: {test: curl -f http://localhost, interval: 1m30s, timeout: 500ms, retries: 3, start_period: 10s}
    depends_on: [db]
  db:
    image: postgres
    healthcheck: {test: [CMD, pg_isready], start_interval: 1s}
    depends_on:
      cache: {condition: service_healthy, restart: true}
  cache: {image: redis, healthcheck: {disable: true}}
"#,
        |project| {
            project
                .services
                .iter()
                .map(|(name, service)| {
                    (
                        name.clone(),
                        service.healthcheck.clone(),
                        service.depends_on.clone(),
                    )
                })
                .collect::<Vec<_>>()
        },
        &expect![[r#"
            [
                (
                    "cache",
                    Some(
                        Healthcheck {
                            test: [
                                "NONE",
                            ],
                            interval: None,
                            timeout: None,
                            retries: None,
                            start_period: None,
                            start_interval: None,
                        },
                    ),
                    {},
                ),
                (
                    "db",
                    Some(
                        Healthcheck {
                            test: [
                                "CMD",
                                "pg_isready",
                            ],
                            interval: None,
                            timeout: None,
                            retries: None,
                            start_period: None,
                            start_interval: Some(
                                1s,
                            ),
                        },
                    ),
                    {
                        "cache": Dependency {
                            condition: ServiceHealthy,
                            required: true,
                            restart: true,
                        },
                    },
                ),
                (
                    "web",
                    Some(
                        Healthcheck {
                            test: [
                                "CMD-SHELL",
                                "curl -f http://localhost",
                            ],
                            interval: Some(
                                90s,
                            ),
                            timeout: Some(
                                500ms,
                            ),
                            retries: Some(
                                3,
                            ),
                            start_period: Some(
                                10s,
                            ),
                            start_interval: None,
                        },
                    ),
                    {
                        "db": Dependency {
                            condition: ServiceStarted,
                            required: true,
                            restart: false,
                        },
                    },
                ),
            ]"#]],
    );
    error(
        "services: {web: {image: nginx, depends_on: [ghost]}}",
        &expect![[
            r#"error: /stack/compose.yaml: services.web.depends_on: depends on service "ghost" which is not defined"#
        ]],
    );
}

#[test]
fn runtime_options() {
    check_web(
        r#"
services:
  web:
    image: nginx
    user: "1000:1000"
    working_dir: /app
    hostname: web
    domainname: example.org
    pull_policy: if_not_present
    restart: on-failure:3
    extra_hosts: ["db:10.0.0.2", "cache=10.0.0.3"]
    dns: 1.1.1.1
    cap_add: [NET_ADMIN]
    cap_drop: [ALL]
    privileged: "true"
    devices: ["/dev/fuse:/dev/fuse"]
    init: true
    read_only: true
    security_opt: [no-new-privileges:true]
    sysctls: [net.core.somaxconn=1024]
    ulimits: {nproc: 65535, nofile: {soft: 1024, hard: 2048}}
    stop_signal: SIGQUIT
    stop_grace_period: 1m
    tty: true
    stdin_open: true
    mem_limit: 512m
    mem_reservation: 1.5gb
    shm_size: 67108864
    cpus: "0.5"
    pids_limit: 100
    container_name: the-web
"#,
        |web| web.clone(),
        &expect![[r#"
            Some(
                Service {
                    image: Some(
                        "nginx",
                    ),
                    build: None,
                    pull_policy: Some(
                        Missing,
                    ),
                    command: None,
                    entrypoint: None,
                    environment: {},
                    user: Some(
                        "1000:1000",
                    ),
                    working_dir: Some(
                        "/app",
                    ),
                    hostname: Some(
                        "web",
                    ),
                    domainname: Some(
                        "example.org",
                    ),
                    labels: {},
                    ports: [],
                    expose: [],
                    volumes: [],
                    tmpfs: [],
                    networks: {
                        "default": ServiceNetwork {
                            aliases: [],
                            ipv4_address: None,
                            ipv6_address: None,
                            link_local_ips: [],
                            mac_address: None,
                            driver_opts: {},
                            priority: 0,
                            gw_priority: 0,
                            configured: false,
                        },
                    },
                    network_mode: None,
                    restart: Some(
                        "on-failure:3",
                    ),
                    healthcheck: None,
                    depends_on: {},
                    extra_hosts: [
                        "db:10.0.0.2",
                        "cache:10.0.0.3",
                    ],
                    dns: [
                        "1.1.1.1",
                    ],
                    cap_add: [
                        "NET_ADMIN",
                    ],
                    cap_drop: [
                        "ALL",
                    ],
                    privileged: true,
                    devices: [
                        "/dev/fuse:/dev/fuse",
                    ],
                    init: Some(
                        true,
                    ),
                    read_only: true,
                    security_opt: [
                        "no-new-privileges:true",
                    ],
                    sysctls: {
                        "net.core.somaxconn": "1024",
                    },
                    ulimits: {
                        "nofile": Ulimit {
                            soft: 1024,
                            hard: 2048,
                        },
                        "nproc": Ulimit {
                            soft: 65535,
                            hard: 65535,
                        },
                    },
                    logging: None,
                    stop_signal: Some(
                        "SIGQUIT",
                    ),
                    stop_grace_period: Some(
                        60s,
                    ),
                    tty: true,
                    stdin_open: true,
                    mem_limit: Some(
                        536870912,
                    ),
                    mem_reservation: Some(
                        1610612736,
                    ),
                    cpus: Some(
                        0.5,
                    ),
                    shm_size: Some(
                        67108864,
                    ),
                    pids_limit: Some(
                        100,
                    ),
                    container_name: Some(
                        "the-web",
                    ),
                    scale: None,
                    platform: None,
                    pid: None,
                    ipc: None,
                    uts: None,
                    cgroup: None,
                    cgroup_parent: None,
                    userns_mode: None,
                    runtime: None,
                    isolation: None,
                    links: [],
                    external_links: [],
                    volumes_from: [],
                    group_add: [],
                    dns_search: [],
                    dns_opt: [],
                    mac_address: None,
                    cpu_shares: None,
                    cpu_quota: None,
                    cpu_period: None,
                    cpu_rt_runtime: None,
                    cpu_rt_period: None,
                    cpu_count: None,
                    cpu_percent: None,
                    cpuset: None,
                    memswap_limit: None,
                    mem_swappiness: None,
                    oom_score_adj: None,
                    oom_kill_disable: false,
                    device_cgroup_rules: [],
                    storage_opt: {},
                    annotations: {},
                    device_requests: [],
                    files: [],
                    update_order: None,
                    update_monitor: None,
                    blkio: None,
                    post_start: [],
                    pre_stop: [],
                    swarm: SwarmDeploy {
                        mode: None,
                        endpoint_mode: None,
                        labels: {},
                        placement: Placement {
                            constraints: [],
                            preferences: [],
                            max_replicas_per_node: None,
                        },
                        limits: None,
                        reservations: None,
                        restart_policy: None,
                        update_config: None,
                        rollback_config: None,
                    },
                },
            )"#]],
    );
}

/// Where both are set, `deploy.restart_policy` replaces `restart:` (docker/compose
/// `getRestartPolicy`); measured with `docker-compose up -d` v2.40.3 on Docker 20.10: `both`
/// ran as `{"Name":"on-failure","MaximumRetryCount":3}`, `no_condition` as
/// `{"Name":"","MaximumRetryCount":2}`, `any` as `always`.
#[test]
fn deploy_restart_policy_wins_over_restart() {
    check(
        r#"
services:
  both:
    image: nginx
    restart: unless-stopped
    deploy: {restart_policy: {condition: on-failure, max_attempts: 3}}
  no_condition:
    image: nginx
    restart: always
    deploy: {restart_policy: {max_attempts: 2}}
  any: {image: nginx, deploy: {restart_policy: {condition: any}}}
  none: {image: nginx, restart: always, deploy: {restart_policy: {condition: none}}}
  restart_only: {image: nginx, restart: "on-failure:4"}
  restart_any: {image: nginx, restart: any}
"#,
        |project| {
            project
                .services
                .iter()
                .map(|(name, service)| format!("{name}: {:?}", service.restart))
                .collect::<Vec<_>>()
        },
        &expect![[r#"
            [
                "any: Some(\"always\")",
                "both: Some(\"on-failure:3\")",
                "no_condition: Some(\":2\")",
                "none: Some(\"no\")",
                "restart_any: Some(\"always\")",
                "restart_only: Some(\"on-failure:4\")",
            ]"#]],
    );
    error(
        "services: {web: {image: nginx, restart: sometimes}}",
        &expect![[
            r#"error: /stack/compose.yaml: services.web.restart: unknown restart condition "sometimes"; use no, always, on-failure or unless-stopped"#
        ]],
    );
}

#[test]
fn blkio_config() {
    check_web(
        r#"
services:
  web:
    image: nginx
    blkio_config:
      weight: "300"
      weight_device: [{path: /dev/sda, weight: 400}]
      device_read_bps: [{path: /dev/sda, rate: 12mb}]
      device_read_iops: [{path: /dev/sda, rate: 120}]
      device_write_bps: [{path: /dev/sda, rate: 1024k}, {path: /dev/sdb, rate: 4096}]
"#,
        |web| web.blkio.clone(),
        &expect![[r#"
            Some(
                Some(
                    Blkio {
                        weight: Some(
                            300,
                        ),
                        weight_device: [
                            DeviceWeight {
                                path: "/dev/sda",
                                weight: 400,
                            },
                        ],
                        device_read_bps: [
                            DeviceRate {
                                path: "/dev/sda",
                                rate: 12582912,
                            },
                        ],
                        device_read_iops: [
                            DeviceRate {
                                path: "/dev/sda",
                                rate: 120,
                            },
                        ],
                        device_write_bps: [
                            DeviceRate {
                                path: "/dev/sda",
                                rate: 1048576,
                            },
                            DeviceRate {
                                path: "/dev/sdb",
                                rate: 4096,
                            },
                        ],
                        device_write_iops: [],
                    },
                ),
            )"#]],
    );
    check_web(
        "services: {web: {image: nginx, blkio_config: {weight: 0}}}",
        |web| web.blkio.clone(),
        &expect![[r#"
            Some(
                Some(
                    Blkio {
                        weight: None,
                        weight_device: [],
                        device_read_bps: [],
                        device_read_iops: [],
                        device_write_bps: [],
                        device_write_iops: [],
                    },
                ),
            )"#]],
    );
    error(
        "services: {web: {image: nginx, blkio_config: {weight: 70000}}}",
        &expect![
            "error: /stack/compose.yaml: services.web.blkio_config.weight: 70000 is not a weight"
        ],
    );
    error(
        "services: {web: {image: nginx, blkio_config: {device_read_bps: [{path: /dev/sda}]}}}",
        &expect![
            "error: /stack/compose.yaml: services.web.blkio_config.device_read_bps[0]: needs both path and rate"
        ],
    );
    error(
        "services: {web: {image: nginx, blkio_config: {device_read_bps: [{path: /dev/sda, rate: 1, weight: 2}]}}}",
        &expect![
            "error: /stack/compose.yaml: services.web.blkio_config.device_read_bps[0].weight: additional properties 'weight' not allowed"
        ],
    );
}

#[test]
fn lifecycle_hooks() {
    check_web(
        r#"
services:
  web:
    image: nginx
    post_start:
      - command: ./init.sh --fast
        user: root
        privileged: "true"
        working_dir: /app
        environment: [MODE=fast, BARE]
      - command: ["touch", "/ready"]
    pre_stop:
      - command: nginx -s quit
        environment: {GRACE: 5}
"#,
        |web| (web.post_start.clone(), web.pre_stop.clone()),
        &expect![[r#"
            Some(
                (
                    [
                        Hook {
                            command: [
                                "./init.sh",
                                "--fast",
                            ],
                            user: Some(
                                "root",
                            ),
                            privileged: true,
                            working_dir: Some(
                                "/app",
                            ),
                            environment: {
                                "BARE": None,
                                "MODE": Some(
                                    "fast",
                                ),
                            },
                        },
                        Hook {
                            command: [
                                "touch",
                                "/ready",
                            ],
                            user: None,
                            privileged: false,
                            working_dir: None,
                            environment: {},
                        },
                    ],
                    [
                        Hook {
                            command: [
                                "nginx",
                                "-s",
                                "quit",
                            ],
                            user: None,
                            privileged: false,
                            working_dir: None,
                            environment: {
                                "GRACE": Some(
                                    "5",
                                ),
                            },
                        },
                    ],
                ),
            )"#]],
    );
    error(
        "services: {web: {image: nginx, post_start: [{user: root}]}}",
        &expect!["error: /stack/compose.yaml: services.web.post_start[0]: command is required"],
    );
    error(
        "services: {web: {image: nginx, pre_stop: [{command: x, timeout: 3}]}}",
        &expect![
            "error: /stack/compose.yaml: services.web.pre_stop[0].timeout: additional properties 'timeout' not allowed"
        ],
    );
}

#[test]
fn deploy_resources_map_onto_service_limits() {
    check_web(
        r#"
services:
  web:
    image: nginx
    extra_hosts: {db: 10.0.0.2}
    deploy:
      replicas: 1
      resources:
        limits: {cpus: "1.5", memory: 1g, pids: 50}
        reservations: {memory: 256m}
      restart_policy: {condition: on-failure, max_attempts: 5}
"#,
        |web| {
            (
                web.cpus,
                web.mem_limit,
                web.pids_limit,
                web.mem_reservation,
                web.restart.clone(),
                web.extra_hosts.clone(),
            )
        },
        &expect![[r#"
            Some(
                (
                    Some(
                        1.5,
                    ),
                    Some(
                        1073741824,
                    ),
                    Some(
                        50,
                    ),
                    Some(
                        268435456,
                    ),
                    Some(
                        "on-failure:5",
                    ),
                    [
                        "db:10.0.0.2",
                    ],
                ),
            )"#]],
    );
}

/// Compose reads no `deploy.mode` and none of Swarm's scheduling; `up -d` v2.40.3 ran one
/// container for `mode: global`, two with `replicas: 2` beside it. stackhook does the same and
/// says what it ignored.
#[test]
fn swarm_only_deploy_keys_are_noted() {
    check(
        r#"
services:
  web:
    image: nginx
    deploy:
      mode: global
      placement: {constraints: [node.role == manager]}
      endpoint_mode: dnsrr
      labels: {a: b}
      resources: {reservations: {cpus: "0.5"}}
      restart_policy: {condition: on-failure, delay: 5s, window: 1m}
      update_config: {order: start-first, parallelism: 2, delay: 1s}
      rollback_config: {parallelism: 1}
  two: {image: nginx, deploy: {mode: global, replicas: 2}}
  plain: {image: nginx, deploy: {mode: replicated}}
"#,
        |project| {
            let scales: Vec<String> = project
                .services
                .iter()
                .map(|(name, service)| format!("{name}: {:?}", service.scale))
                .collect();
            (scales, project.notes.clone())
        },
        &expect![[r#"
            (
                [
                    "plain: None",
                    "two: Some(2)",
                    "web: None",
                ],
                [
                    "services.web.deploy.mode: global only matters to Swarm; as docker compose up does, the service runs its replicas (one unless set)",
                    "services.web.deploy.placement: only Swarm uses it; docker compose up ignores it too",
                    "services.web.deploy.endpoint_mode: only Swarm uses it; docker compose up ignores it too",
                    "services.web.deploy.labels: only Swarm uses it; docker compose up ignores it too",
                    "services.web.deploy.resources.reservations.cpus: only Swarm uses it; docker compose up ignores it too",
                    "services.web.deploy.restart_policy.delay: only Swarm uses it; docker compose up ignores it too",
                    "services.web.deploy.restart_policy.window: only Swarm uses it; docker compose up ignores it too",
                    "services.web.deploy.update_config.parallelism: only Swarm uses it; docker compose up ignores it too",
                    "services.web.deploy.update_config.delay: only Swarm uses it; docker compose up ignores it too",
                    "services.web.deploy.rollback_config: only Swarm uses it; docker compose up ignores it too",
                    "services.two.deploy.mode: global only matters to Swarm; as docker compose up does, the service runs its replicas (one unless set)",
                ],
            )"#]],
    );
}

/// The keys Docker Compose 2.40.3 accepts and does nothing with on Linux load, noted in the
/// plan; `isolation` goes to the engine as Compose sends it; the keys stackhook cannot do as
/// Compose does are refused with why. Compose's own `up -d` on these: `credential_spec` and
/// `pull_refresh_after` change nothing in the container, `isolation: default` shows in
/// `HostConfig.Isolation`, `models` fails without the Docker Model plugin, `provider` runs the
/// plugin program, `use_api_socket` mounts the socket and writes credentials.
#[test]
fn windows_and_plugin_keys() {
    check(
        r#"
services:
  web:
    image: busybox
    credential_spec: {file: spec.json}
    pull_refresh_after: 1h
    isolation: default
"#,
        |project| (project.services["web"].isolation, project.notes.clone()),
        &expect![[r#"
            (
                Some(
                    Default,
                ),
                [
                    "services.web.credential_spec: only Windows containers use it, and docker compose up sends the engine none",
                    "services.web.pull_refresh_after: docker compose 2.40 reads no such setting, and ignores it too",
                ],
            )"#]],
    );
    let refused = [
        "  web: {image: busybox, isolation: sandbox}\n",
        "  web: {image: busybox, models: [llm]}\n",
        "  web: {provider: {type: awesomecloud, options: {type: mysql}}}\n",
        "  web: {image: busybox, use_api_socket: true}\n",
    ];
    let errors: Vec<String> = refused
        .iter()
        .map(|service| {
            let (result, dir, _) =
                load_stack(&[("compose.yaml", &format!("services:\n{service}"))], &[]);
            let error = result
                .err()
                .map(|error| error.to_string())
                .unwrap_or_default();
            error.replace(&dir, "/stack")
        })
        .collect();
    let (top_level, dir, _) = load_stack(
        &[(
            "compose.yaml",
            "services: {}\nmodels:\n  llm: {model: ai/smollm2}\n",
        )],
        &[],
    );
    let top_level = top_level
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    expect![[r#"
        (
            [
                "/stack/compose.yaml: services.web.isolation: isolation \"sandbox\" is none of default, process, hyperv",
                "/stack/compose.yaml: service web: key models is not supported by stackhook: it needs Docker Model Runner, which Compose drives through the `docker model` CLI plugin, not the engine API",
                "/stack/compose.yaml: service web: key provider is not supported by stackhook: Compose hands the service to a provider plugin, a program it runs on the host; stackhook runs no program a repository names",
                "/stack/compose.yaml: service web: key use_api_socket is not supported by stackhook: with the engine socket, Compose copies the Docker CLI credentials of whoever runs it into the container; stackhook has none to copy (mount /var/run/docker.sock as a volume instead)",
            ],
            "/stack/compose.yaml: models: is not supported by stackhook: it needs Docker Model Runner, which Compose drives through the `docker model` CLI plugin, not the engine API",
        )
    "#]].assert_debug_eq(&(errors, top_level.replace(&dir, "/stack")));
}

#[test]
fn namespaces_links_and_resources() {
    check_files(
        &[
            (
                "compose.yaml",
                r#"
services:
  db:
    image: db
  web:
    image: nginx
    platform: linux/amd64
    pid: "service:db"
    ipc: shareable
    uts: host
    cgroup: private
    cgroup_parent: mygroup
    userns_mode: host
    runtime: runc
    links: [db, "db:database"]
    external_links: ["other:alias"]
    volumes_from: ["db:ro", "container:data"]
    group_add: ["1234", audio]
    dns_search: example.org
    dns_opt: ["ndots:2"]
    mac_address: "02:42:ac:11:00:99"
    cpu_shares: 512
    cpu_quota: 50000
    cpu_period: 100000
    cpu_rt_runtime: 950000
    cpu_rt_period: 1000000
    cpu_count: 2
    cpu_percent: 50
    cpuset: "0-1"
    memswap_limit: -1
    mem_swappiness: 10
    oom_score_adj: 100
    oom_kill_disable: true
    device_cgroup_rules: ["c 1:3 mr"]
    storage_opt: {size: 1G}
    annotations: {com.example.a: b}
    label_file: ./web.labels
    labels: {com.example.over: labels}
    attach: false
    develop: {watch: [{path: ., action: rebuild}]}
    gpus: all
    deploy:
      mode: replicated
      placement: {constraints: ["node.role==manager"]}
      update_config: {order: start-first, parallelism: 2, delay: 10s}
      rollback_config: {order: stop-first}
      resources:
        reservations:
          cpus: "0.5"
          devices:
            - capabilities: [gpu]
            - {driver: nvidia, count: 2, capabilities: [gpu, utility], options: {a: b}}
            - {device_ids: ["0", "3"], capabilities: [gpu]}
"#,
            ),
            (
                "web.labels",
                "com.example.fromfile=yes\ncom.example.over=file\n",
            ),
        ],
        &[("HOME", "/home/deploy")],
        |project| {
            let web = &project.services["web"];
            let mut shown = format!("{web:#?}");
            // Only what this test sets; the rest is `minimal_project`'s.
            shown = shown
                .lines()
                .filter(|line| {
                    !(line.ends_with(": None,")
                        || line.ends_with(": [],")
                        || line.ends_with(": {},")
                        || line.ends_with(": 0,")
                        || line.ends_with(": false,"))
                })
                .collect::<Vec<_>>()
                .join("\n");
            Shown(format!("{shown}\nfiles read: {:?}", project.files_read))
        },
        &expect![[r#"
            Service {
                image: Some(
                    "nginx",
                ),
                labels: {
                    "com.example.fromfile": "yes",
                    "com.example.over": "labels",
                },
                networks: {
                    "default": ServiceNetwork {
                    },
                },
                depends_on: {
                    "db": Dependency {
                        condition: ServiceStarted,
                        required: true,
                        restart: true,
                    },
                },
                platform: Some(
                    "linux/amd64",
                ),
                pid: Some(
                    "service:db",
                ),
                ipc: Some(
                    "shareable",
                ),
                uts: Some(
                    "host",
                ),
                cgroup: Some(
                    "private",
                ),
                cgroup_parent: Some(
                    "mygroup",
                ),
                userns_mode: Some(
                    "host",
                ),
                runtime: Some(
                    "runc",
                ),
                links: [
                    "db",
                    "db:database",
                ],
                external_links: [
                    "other:alias",
                ],
                volumes_from: [
                    "db:ro",
                    "container:data",
                ],
                group_add: [
                    "1234",
                    "audio",
                ],
                dns_search: [
                    "example.org",
                ],
                dns_opt: [
                    "ndots:2",
                ],
                mac_address: Some(
                    "02:42:ac:11:00:99",
                ),
                cpu_shares: Some(
                    512,
                ),
                cpu_quota: Some(
                    50000,
                ),
                cpu_period: Some(
                    100000,
                ),
                cpu_rt_runtime: Some(
                    950000,
                ),
                cpu_rt_period: Some(
                    1000000,
                ),
                cpu_count: Some(
                    2,
                ),
                cpu_percent: Some(
                    50.0,
                ),
                cpuset: Some(
                    "0-1",
                ),
                memswap_limit: Some(
                    -1,
                ),
                mem_swappiness: Some(
                    10,
                ),
                oom_score_adj: Some(
                    100,
                ),
                oom_kill_disable: true,
                device_cgroup_rules: [
                    "c 1:3 mr",
                ],
                storage_opt: {
                    "size": "1G",
                },
                annotations: {
                    "com.example.a": "b",
                },
                device_requests: [
                    DeviceRequest {
                        count: Some(
                            -1,
                        ),
                        capabilities: [
                            "gpu",
                        ],
                    },
                    DeviceRequest {
                        driver: Some(
                            "nvidia",
                        ),
                        count: Some(
                            2,
                        ),
                        capabilities: [
                            "gpu",
                            "utility",
                        ],
                        options: {
                            "a": "b",
                        },
                    },
                    DeviceRequest {
                        device_ids: [
                            "0",
                            "3",
                        ],
                        capabilities: [
                            "gpu",
                        ],
                    },
                    DeviceRequest {
                        count: Some(
                            -1,
                        ),
                        capabilities: [
                            "gpu",
                        ],
                    },
                ],
                update_order: Some(
                    StartFirst,
                ),
                swarm: SwarmDeploy {
                    mode: Some(
                        "replicated",
                    ),
                    placement: Placement {
                        constraints: [
                            "node.role==manager",
                        ],
                    },
                    reservations: Some(
                        SwarmResources {
                            cpus: Some(
                                0.5,
                            ),
                        },
                    ),
                    update_config: Some(
                        UpdateConfig {
                            parallelism: Some(
                                2,
                            ),
                            delay: Some(
                                10s,
                            ),
                            order: Some(
                                StartFirst,
                            ),
                        },
                    ),
                    rollback_config: Some(
                        UpdateConfig {
                            order: Some(
                                StopFirst,
                            ),
                        },
                    ),
                },
            }
            files read: ["/stack/web.labels"]"#]],
    );
    error(
        "services: {web: {image: nginx, cgroup: shared}}",
        &expect![[
            r#"error: /stack/compose.yaml: services.web.cgroup: "shared" must be one of host, private"#
        ]],
    );
    error(
        "services: {web: {image: nginx, deploy: {update_config: {order: sideways}}}}",
        &expect![[
            r#"error: /stack/compose.yaml: services.web.deploy.update_config.order: "sideways" must be one of start-first, stop-first"#
        ]],
    );
    error(
        "services: {web: {image: nginx, cpu_rt_runtime: 400ms}}",
        &expect![[
            r#"error: /stack/compose.yaml: services.web.cpu_rt_runtime: "400ms" is not an integer"#
        ]],
    );
    error(
        "services: {web: {image: nginx, links: [db]}}",
        &expect![[
            r#"error: /stack/compose.yaml: services.web.depends_on: depends on service "db" which is not defined"#
        ]],
    );
    error(
        "services: {web: {image: nginx, no_such_key: 2}}",
        &expect![
            "error: /stack/compose.yaml: services.web: additional properties 'no_such_key' not allowed"
        ],
    );
}

#[test]
fn network_endpoints_and_ipam() {
    check(
        r#"
services:
  web:
    image: nginx
    networks:
      front:
        ipv4_address: 172.28.0.5
        ipv6_address: "2001:db8::5"
        link_local_ips: [169.254.8.8]
        mac_address: "02:42:ac:11:00:02"
        driver_opts: {com.example.opt: "1"}
        priority: 10
        gw_priority: 1
      back: {}
networks:
  front:
    enable_ipv6: true
    ipam:
      driver: default
      config:
        - subnet: 172.28.0.0/16
          ip_range: 172.28.5.0/24
          gateway: 172.28.0.1
          aux_addresses: {host1: 172.28.1.5}
        - subnet: "2001:db8::/64"
      options: {foo: bar}
  back:
"#,
        |project| {
            (
                project.services["web"].networks.clone(),
                project.networks["front"].ipam.clone(),
            )
        },
        &expect![[r#"
            (
                {
                    "back": ServiceNetwork {
                        aliases: [],
                        ipv4_address: None,
                        ipv6_address: None,
                        link_local_ips: [],
                        mac_address: None,
                        driver_opts: {},
                        priority: 0,
                        gw_priority: 0,
                        configured: true,
                    },
                    "front": ServiceNetwork {
                        aliases: [],
                        ipv4_address: Some(
                            "172.28.0.5",
                        ),
                        ipv6_address: Some(
                            "2001:db8::5",
                        ),
                        link_local_ips: [
                            "169.254.8.8",
                        ],
                        mac_address: Some(
                            "02:42:ac:11:00:02",
                        ),
                        driver_opts: {
                            "com.example.opt": "1",
                        },
                        priority: 10,
                        gw_priority: 1,
                        configured: true,
                    },
                },
                Some(
                    Ipam {
                        driver: Some(
                            "default",
                        ),
                        config: [
                            IpamPool {
                                subnet: Some(
                                    "172.28.0.0/16",
                                ),
                                ip_range: Some(
                                    "172.28.5.0/24",
                                ),
                                gateway: Some(
                                    "172.28.0.1",
                                ),
                                aux_addresses: {
                                    "host1": "172.28.1.5",
                                },
                            },
                            IpamPool {
                                subnet: Some(
                                    "2001:db8::/64",
                                ),
                                ip_range: None,
                                gateway: None,
                                aux_addresses: {},
                            },
                        ],
                        options: {
                            "foo": "bar",
                        },
                    },
                ),
            )"#]],
    );
}

#[test]
fn build_keys() {
    check_web(
        r#"
services:
  web:
    platform: linux/arm64
    build:
      context: ./app
      cache_from: [app:previous]
      network: host
      extra_hosts: ["mirror=10.0.0.9"]
      labels: [com.example.built=yes]
      shm_size: 64m
      no_cache: true
      pull: true
"#,
        |web| web.build.clone(),
        &expect![[r#"
            Some(
                Some(
                    Build {
                        context: "/stack/app",
                        dockerfile: "Dockerfile",
                        args: {},
                        target: None,
                        cache_from: [
                            "app:previous",
                        ],
                        network: Some(
                            "host",
                        ),
                        extra_hosts: [
                            "mirror:10.0.0.9",
                        ],
                        labels: {
                            "com.example.built": "yes",
                        },
                        shm_size: Some(
                            67108864,
                        ),
                        no_cache: true,
                        pull: true,
                        platform: Some(
                            "linux/arm64",
                        ),
                    },
                ),
            )"#]],
    );
    error(
        "services: {web: {build: {context: ., ssh: [default]}}}",
        &expect![
            "error: /stack/compose.yaml: services.web.build.ssh: is not supported by stackhook"
        ],
    );
}

#[test]
fn secrets_and_configs() {
    check_files(
        &[
            (
                "compose.yaml",
                r#"
services:
  web:
    image: nginx
    secrets:
      - token
      - source: token
        target: tok
      - source: inline
        target: /etc/inline
        uid: "103"
        gid: "104"
        mode: 0440
      - from_env
    configs:
      - app
      - source: app
        target: etc/app.conf
secrets:
  token:
    file: ./secrets/../token.txt
  inline:
    environment: INLINE
  from_env:
    environment: TOKEN
configs:
  app:
    file: ./app.conf
"#,
            ),
            ("token.txt", "s3cret\n"),
            ("app.conf", "conf\n"),
        ],
        &[
            ("HOME", "/home/deploy"),
            ("TOKEN", "from the environment"),
            ("INLINE", "t0ken"),
        ],
        |project| project.services["web"].files.clone(),
        &expect![[r#"
            [
                ServiceFile {
                    kind: Secret,
                    name: "token",
                    target: "/run/secrets/token",
                    source: File(
                        "/stack/token.txt",
                    ),
                    uid: None,
                    gid: None,
                    mode: None,
                },
                ServiceFile {
                    kind: Secret,
                    name: "token",
                    target: "/run/secrets/tok",
                    source: File(
                        "/stack/token.txt",
                    ),
                    uid: None,
                    gid: None,
                    mode: None,
                },
                ServiceFile {
                    kind: Secret,
                    name: "inline",
                    target: "/etc/inline",
                    source: Content(
                        "t0ken",
                    ),
                    uid: Some(
                        103,
                    ),
                    gid: Some(
                        104,
                    ),
                    mode: Some(
                        288,
                    ),
                },
                ServiceFile {
                    kind: Secret,
                    name: "from_env",
                    target: "/run/secrets/from_env",
                    source: Content(
                        "from the environment",
                    ),
                    uid: None,
                    gid: None,
                    mode: None,
                },
                ServiceFile {
                    kind: Config,
                    name: "app",
                    target: "/app",
                    source: File(
                        "/stack/app.conf",
                    ),
                    uid: None,
                    gid: None,
                    mode: None,
                },
                ServiceFile {
                    kind: Config,
                    name: "app",
                    target: "/etc/app.conf",
                    source: File(
                        "/stack/app.conf",
                    ),
                    uid: None,
                    gid: None,
                    mode: None,
                },
            ]"#]],
    );
    error(
        "services: {web: {image: nginx, secrets: [token]}}\nsecrets: {token: {external: true}}\n",
        &expect![
            "error: /stack/compose.yaml: service web: key secrets.token.external is not supported by stackhook"
        ],
    );
    error(
        "services: {web: {image: nginx, secrets: [token]}}\nsecrets: {token: {environment: NOT_SET}}\n",
        &expect![[
            r#"error: /stack/compose.yaml: secrets.token.environment: environment variable "NOT_SET" is not set"#
        ]],
    );
    error(
        "services: {web: {image: nginx, read_only: true, configs: [c]}}\nconfigs: {c: {content: x}}\n",
        &expect![[
            r#"error: /stack/compose.yaml: services.web: cannot create "c" in read-only service web: `file` is the sole supported option"#
        ]],
    );
    error(
        "services: {web: {image: nginx, secrets: [s]}}\nsecrets: {s: {content: x}}\n",
        &expect![
            "error: /stack/compose.yaml: secrets.s: additional properties 'content' not allowed"
        ],
    );
    error(
        "services: {web: {image: nginx, secrets: [nope]}}\n",
        &expect!["error: /stack/compose.yaml: services.web.secrets[0]: refers to undefined nope"],
    );
}

/// The README's list of service keys is `SERVICE_KEYS`, written out.
#[test]
fn readme_lists_the_service_keys() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let begin = "<!-- service keys: generated from compose::SERVICE_KEYS -->\n";
    let end = "<!-- end of service keys -->";
    let listed = readme
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(listed, _)| listed)
        .expect("README.md has the service keys between their markers");
    // Each key of one kind, with its reason where it has one.
    let keys = |kind: fn(&Support) -> Option<Option<&str>>| {
        SERVICE_KEYS
            .iter()
            .filter_map(|(key, support)| match kind(support)? {
                Some(reason) => Some(format!("`{key}` ({reason})")),
                None => Some(format!("`{key}`")),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let expected = format!(
        "- Supported: {}.\n- Accepted and ignored, as `up -d` ignores them: {}.\n\
         - Accepted and ignored as Compose ignores them, with a note in the plan: {}.\n\
         - Refused: {}.\n",
        keys(|support| matches!(support, Support::Applied).then_some(None)),
        keys(|support| matches!(support, Support::Ignored).then_some(None)),
        keys(|support| match support {
            Support::Noted(reason) => Some(Some(reason)),
            _ => None,
        }),
        keys(|support| match support {
            Support::Refused(reason) => Some(Some(reason)),
            _ => None,
        }),
    );
    assert!(
        listed == expected,
        "README.md's list of service keys is out of date; put this between its markers:\n{expected}"
    );
}

#[test]
fn scale_and_replicas() {
    for (compose, expected) in [
        (
            "    scale: 3\n",
            expect![[r#"
            Some(
                Some(
                    3,
                ),
            )"#]],
        ),
        (
            "    deploy: {replicas: 0}\n",
            expect![[r#"
            Some(
                Some(
                    0,
                ),
            )"#]],
        ),
        (
            "    scale: 2\n    deploy: {replicas: 2}\n",
            expect![[r#"
                Some(
                    Some(
                        2,
                    ),
                )"#]],
        ),
        (
            "",
            expect![[r#"
            Some(
                None,
            )"#]],
        ),
    ] {
        check_web(
            &format!("services:\n  web:\n    image: app\n{compose}"),
            |web| web.scale,
            &expected,
        );
    }
    error(
        "services:\n  web:\n    image: app\n    scale: 2\n    deploy: {replicas: 3}\n",
        &expect![[
            r#"error: /stack/compose.yaml: services.web.deploy.replicas: can't set distinct values on 'scale' and 'deploy.replicas'"#
        ]],
    );
    error(
        "services:\n  web:\n    image: app\n    container_name: web\n    scale: 2\n",
        &expect![[
            r#"error: /stack/compose.yaml: services.web: can't set container_name and scale or replicas above 1, as container name web must be unique"#
        ]],
    );
    error(
        "services:\n  web:\n    image: app\n    scale: -1\n",
        &expect![[
            r#"error: /stack/compose.yaml: services.web.scale: -1 is not a number of containers"#
        ]],
    );
}

#[test]
fn start_first_needs_a_service_that_can_run_twice() {
    let start_first = "    deploy: {update_config: {order: start-first, monitor: 5s}}\n";
    check_web(
        &format!("services:\n  web:\n    image: app\n{start_first}"),
        |web| (web.update_order, web.update_monitor),
        &expect![[r#"
            Some(
                (
                    Some(
                        StartFirst,
                    ),
                    Some(
                        5s,
                    ),
                ),
            )"#]],
    );
    standalone_error(
        &format!("services:\n  web:\n    image: app\n    container_name: web\n{start_first}"),
        &expect![[
            r#""error: /stack/compose.yaml: services.web: deploy.update_config.order: start-first runs the old and the new container at once, which its fixed container_name web does not allow; use stop-first""#
        ]],
    );
    standalone_error(
        &format!("services:\n  web:\n    image: app\n    ports: [\"8080:80\"]\n{start_first}"),
        &expect![[
            r#""error: /stack/compose.yaml: services.web: deploy.update_config.order: start-first runs the old and the new container at once, which its published host port 8080 does not allow; use stop-first""#
        ]],
    );
}

/// "Limits on compose input" (issue 9): each gives a clear error, never an out-of-memory or a
/// stack overflow.
#[test]
fn hostile_input_is_refused_with_a_clear_error() {
    let mut laughs = String::from("x-a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for (name, previous) in ["b", "c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
    {
        let items = vec![format!("*{previous}"); 10].join(", ");
        laughs.push_str(&format!("x-{name}: &{name} [{items}]\n"));
    }
    laughs
        .push_str("services:\n  web:\n    image: app\n    labels: {x: \"1\"}\n    x-laughs: *i\n");
    error(
        &laughs,
        &expect!["error: /stack/compose.yaml: invalid YAML: repetition limit exceeded"],
    );

    let deep = format!(
        "services:\n  web:\n    image: \"{}x{}\"\n",
        "${A:-".repeat(10_000),
        "}".repeat(10_000)
    );
    error(
        &deep,
        &expect![
            "error: /stack/compose.yaml: services.web.image: variables nest deeper than 32 levels"
        ],
    );

    let big = format!(
        "services:\n  web:\n    image: app\n{}",
        "# padding\n".repeat(200_000)
    );
    error(
        &big,
        &expect![
            "error: /stack/compose.yaml: larger than 1 MiB, the most stackhook reads from one file"
        ],
    );

    let mut many = String::from("x-a: &a [");
    many.push_str(&vec!["1"; 2_000].join(", "));
    many.push_str("]\nx-b: [");
    many.push_str(&vec!["*a"; 60].join(", "));
    many.push_str("]\nservices:\n  web:\n    image: app\n");
    error(
        &many,
        &expect![
            "error: /stack/compose.yaml: (root): more than 100000 YAML nodes once its aliases are expanded"
        ],
    );
}

#[test]
fn error_messages() {
    error(
        "services:\n  web:\n    image: [unclosed\n",
        &expect![
            "error: /stack/compose.yaml: invalid YAML: did not find expected ',' or ']' at line 4 column 1, while parsing a flow sequence at line 3 column 12"
        ],
    );
    error(
        "services: {web: {image: \"${TAG:?set TAG in .env}\"}}",
        &expect![
            "error: /stack/compose.yaml: required variable TAG is missing a value: set TAG in .env"
        ],
    );
    error(
        "services: {web: {image: \"nginx:${\"}}",
        &expect![[
            r#"error: /stack/compose.yaml: invalid interpolation format for services.web.image: "nginx:${""#
        ]],
    );
    error(
        "services: {}\nextra: true\n",
        &expect!["error: /stack/compose.yaml: additional properties 'extra' not allowed"],
    );
    error(
        "services: {web: {command: echo}}",
        &expect![
            "error: /stack/compose.yaml: service web has neither an image nor a build context specified"
        ],
    );
    error(
        "services: {web: {image: nginx, privileged: maybe}}",
        &expect![[
            r#"error: /stack/compose.yaml: services.web.privileged: "maybe" is not a boolean"#
        ]],
    );
    error(
        "name: \"!!!\"\nservices: {}\n",
        &expect![[
            r#"error: /stack/compose.yaml: name: "!!!" gives an empty project name once normalised; set name:"#
        ]],
    );
}

/// `extends` in one file merges as `docker compose config` shows it: mappings key by key, lists
/// appended with duplicates dropped, `command` and `healthcheck.test` replaced, `ulimits`
/// entries replaced, `logging` options merged for the same driver, `depends_on` inherited.
#[test]
fn extends_in_the_same_file() {
    let compose = r#"
services:
  base:
    image: busybox
    command: ["sleep", "1"]
    environment: {A: "1", B: "2"}
    labels: [x=1]
    ports: ["8080:80", "9090:90"]
    expose: ["81"]
    dns: [8.8.8.8]
    cap_add: [NET_ADMIN]
    volumes: ["./data:/data", "named:/v"]
    depends_on: [db]
    healthcheck: {test: ["CMD", "true"], interval: 5s}
    networks: [front]
    logging: {driver: json-file, options: {max-size: 1m}}
    ulimits: {nofile: {soft: 10, hard: 20}}
    extra_hosts: ["a:1.1.1.1"]
    tmpfs: /run
  middle:
    extends: base
    environment: [C]
  db:
    image: busybox
  web:
    extends: {service: middle}
    command: echo hi
    environment: [B=3]
    labels: {y: "2"}
    ports: ["8080:80", "7070:70"]
    expose: ["81", "82"]
    dns: 1.1.1.1
    cap_add: [NET_ADMIN, SYS_TIME]
    volumes: ["./other:/data"]
    healthcheck: {test: ["CMD", "false"]}
    networks: {back: {aliases: [w]}}
    logging: {options: {max-file: "2"}}
    ulimits: {nofile: 30}
    extra_hosts: {b: 2.2.2.2}
    tmpfs: [/tmp]
networks: {front: {}, back: {}}
volumes: {named: {}}
"#;
    check_web(
        compose,
        |web| {
            let ports: Vec<String> = web
                .ports
                .iter()
                .map(|port| {
                    format!(
                        "{}:{}",
                        port.published.as_deref().unwrap_or("-"),
                        port.target
                    )
                })
                .collect();
            let volumes: Vec<String> = web
                .volumes
                .iter()
                .map(|mount| {
                    format!(
                        "{}:{}",
                        mount.source.as_deref().unwrap_or("-"),
                        mount.target
                    )
                })
                .collect();
            Shown(format!(
                "command: {:?}\nenvironment: {:?}\nlabels: {:?}\nports: {ports:?}\nexpose: {:?}\n\
                 dns: {:?}\ncap_add: {:?}\nvolumes: {volumes:?}\ndepends_on: {:?}\n\
                 healthcheck: {:?}\nnetworks: {:?}\nlogging: {:?}\nulimits: {:?}\n\
                 extra_hosts: {:?}\ntmpfs: {:?}",
                web.command,
                web.environment,
                web.labels,
                web.expose,
                web.dns,
                web.cap_add,
                web.depends_on.keys().collect::<Vec<_>>(),
                web.healthcheck.as_ref().map(|h| (&h.test, h.interval)),
                web.networks
                    .iter()
                    .map(|(key, network)| (key, &network.aliases))
                    .collect::<Vec<_>>(),
                web.logging,
                web.ulimits,
                web.extra_hosts,
                web.tmpfs,
            ))
        },
        &expect![[r#"
            Some(
                command: Some(["echo", "hi"])
                environment: {"A": Some("1"), "B": Some("3"), "C": None}
                labels: {"x": "1", "y": "2"}
                ports: ["8080:80", "9090:90", "7070:70"]
                expose: ["81", "82"]
                dns: ["8.8.8.8", "1.1.1.1"]
                cap_add: ["NET_ADMIN", "SYS_TIME"]
                volumes: ["/stack/other:/data", "named:/v"]
                depends_on: ["db"]
                healthcheck: Some((["CMD", "false"], Some(5s)))
                networks: [("back", ["w"]), ("front", [])]
                logging: Some(Logging { driver: Some("json-file"), options: {"max-file": "2", "max-size": "1m"} })
                ulimits: {"nofile": Ulimit { soft: 30, hard: 30 }}
                extra_hosts: ["a:1.1.1.1", "b:2.2.2.2"]
                tmpfs: ["/run", "/tmp"],
            )"#]],
    );
}

/// `extends: {file: ...}` reads the other file with the same variables and resolves its relative
/// paths against its own directory; a chain may continue in that file. Only the service comes
/// along, and the file counts as read.
#[test]
fn extends_another_file() {
    let files = [
        (
            "compose.yaml",
            "services:\n  web:\n    extends: {file: ../common/base.yaml, service: app}\n    environment: {OWN: mine}\n",
        ),
        (
            "../common/base.yaml",
            r#"
services:
  app:
    extends: root
    image: "busybox:${TAG:-latest}"
    env_file: app.env
    volumes: ["./data:/data", {type: bind, source: ../common/conf, target: /conf}]
  root:
    build: {context: ./ctx, args: [A=1]}
    labels: {origin: root}
"#,
        ),
        ("../common/app.env", "FROM_FILE=1\n"),
    ];
    check_files(
        &files,
        &[("TAG", "1.36")],
        |project| {
            let web = &project.services["web"];
            Shown(format!(
                "image: {:?}\nbuild: {:?}\nenvironment: {:?}\nlabels: {:?}\nvolumes: {:?}\n\
                 services: {:?}\nfiles_read: {:?}\nvariables: {:?}",
                web.image,
                web.build
                    .as_ref()
                    .map(|build| (&build.context, &build.args)),
                web.environment,
                web.labels,
                web.volumes
                    .iter()
                    .map(|mount| (&mount.source, &mount.target))
                    .collect::<Vec<_>>(),
                project.services.keys().collect::<Vec<_>>(),
                project.files_read,
                project.variables,
            ))
        },
        &expect![[r#"
            image: Some("busybox:1.36")
            build: Some(("/parent/common/ctx", {"A": "1"}))
            environment: {"FROM_FILE": Some("1"), "OWN": Some("mine")}
            labels: {"origin": "root"}
            volumes: [(Some("/parent/common/data"), "/data"), (Some("/parent/common/conf"), "/conf")]
            services: ["web"]
            files_read: ["/parent/common/base.yaml", "/parent/common/app.env"]
            variables: {"COMPOSE_PROJECT_NAME": None, "TAG": Some("1.36")}"#]],
    );
}

/// `include` joins another file's resources, each file read as a project of its own: its paths
/// relative to its directory (or `project_directory`), its `.env` (or `env_file`) for variables
/// the including project leaves unset.
#[test]
fn include_short_and_long() {
    let files = [
        (
            "compose.yaml",
            r#"
include:
  - sub/inc.yaml
  - path: sub/inc2.yaml
    project_directory: pd
    env_file: sub/inc.env
services:
  web:
    image: busybox
    depends_on: [api]
"#,
        ),
        (
            "sub/inc.yaml",
            r#"
name: ignored
services:
  api:
    image: "busybox:${TAG:-x}"
    env_file: a.env
    volumes: ["./data:/data"]
    networks: [inner]
    secrets: [s]
networks:
  inner: {}
secrets:
  s: {file: ./s.txt}
"#,
        ),
        (
            "sub/inc2.yaml",
            "services:\n  other:\n    image: \"busybox:${TAG2}\"\n    volumes: [\"./d2:/d2\"]\n    build: {dockerfile: X}\n",
        ),
        ("sub/a.env", "A=1\n"),
        ("sub/inc.env", "TAG2=from-env-file\n"),
        ("sub/.env", "TAG=from-dotenv\n"),
        ("sub/s.txt", "secret\n"),
    ];
    check_files(
        &files,
        &[],
        |project| {
            let services: Vec<String> = project
                .services
                .iter()
                .map(|(name, service)| {
                    format!(
                        "{name}: image {:?}, build {:?}, environment {:?}, volumes {:?}, \
                         networks {:?}, files {:?}, depends_on {:?}",
                        service.image,
                        service.build.as_ref().map(|build| &build.context),
                        service.environment,
                        service
                            .volumes
                            .iter()
                            .map(|mount| &mount.source)
                            .collect::<Vec<_>>(),
                        service.networks.keys().collect::<Vec<_>>(),
                        service
                            .files
                            .iter()
                            .map(|file| &file.source)
                            .collect::<Vec<_>>(),
                        service.depends_on.keys().collect::<Vec<_>>(),
                    )
                })
                .collect();
            Shown(format!(
                "name: {}\n{}\nnetworks: {:?}\nconfig_files: {:?}\nfiles_read: {:?}",
                project.name,
                services.join("\n"),
                project
                    .networks
                    .values()
                    .map(|network| &network.name)
                    .collect::<Vec<_>>(),
                project.config_files,
                project.files_read,
            ))
        },
        &expect![[r#"
            name: demo
            api: image Some("busybox:from-dotenv"), build None, environment {"A": Some("1")}, volumes [Some("/stack/sub/data")], networks ["inner"], files [File("/stack/sub/s.txt")], depends_on []
            other: image Some("busybox:from-env-file"), build Some("/stack/pd"), environment {}, volumes [Some("/stack/pd/d2")], networks ["default"], files [], depends_on []
            web: image Some("busybox"), build None, environment {}, volumes [], networks ["default"], files [], depends_on ["api"]
            networks: ["demo_default", "demo_inner"]
            config_files: ["/stack/compose.yaml"]
            files_read: ["/stack/sub/.env", "/stack/sub/inc.yaml", "/stack/sub/inc.env", "/stack/sub/inc2.yaml", "/stack/sub/a.env"]"#]],
    );
}

/// An `include` entry with several paths merges them as `-f` files merge: the later ones over the
/// first, each with its own `extends`, and their relative paths resolved from the first file's
/// directory. `docker compose config` (v2.40.3) shows the same for these files.
#[test]
fn include_with_several_paths_merges_them() {
    let files = [
        (
            "compose.yaml",
            "include:\n  - path: [sub/base.yaml, other/over.yaml]\nservices:\n  web: {image: busybox}\n",
        ),
        (
            "sub/base.yaml",
            r#"
services:
  api:
    image: busybox:1
    command: ["a", "b"]
    environment: {A: "1", B: "2"}
    volumes: ["./data:/data"]
    ports: ["8080:80"]
    labels: [x=1]
    build: ./ctx
    env_file: a.env
  keep:
    image: busybox
networks:
  n: {labels: {a: "1"}, ipam: {config: [{subnet: 10.1.0.0/16}]}}
"#,
        ),
        (
            "other/over.yaml",
            r#"
services:
  api:
    image: busybox:2
    command: c
    environment: [B=3, C]
    volumes: ["./more:/more"]
    ports: ["9090:90"]
    labels: {y: "2"}
    build: {dockerfile: Other}
    env_file: b.env
  new:
    extends: keep2
    networks: [n]
    volumes: ["./x:/x"]
  keep2:
    image: busybox
networks:
  n: {labels: [b=2], ipam: {config: [{subnet: 10.2.0.0/16}]}}
"#,
        ),
        ("sub/a.env", ""),
        ("sub/b.env", "FROM=sub\n"),
        ("other/b.env", "FROM=other\n"),
    ];
    check_files(
        &files,
        &[],
        |project| {
            let api = &project.services["api"];
            let network = &project.networks["n"];
            Shown(format!(
                "services: {:?}\nimage: {:?}\nbuild: {:?}\ncommand: {:?}\nenvironment: {:?}\n\
                 labels: {:?}\nports: {:?}\nvolumes: {:?}\nnew: {:?}\n\
                 network n: {:?} {:?}\nfiles_read: {:?}",
                project.services.keys().collect::<Vec<_>>(),
                api.image,
                api.build
                    .as_ref()
                    .map(|build| (&build.context, &build.dockerfile)),
                api.command,
                api.environment,
                api.labels,
                api.ports
                    .iter()
                    .map(|port| (port.published.as_deref(), port.target))
                    .collect::<Vec<_>>(),
                api.volumes
                    .iter()
                    .map(|mount| &mount.source)
                    .collect::<Vec<_>>(),
                project.services["new"]
                    .volumes
                    .iter()
                    .map(|mount| &mount.source)
                    .collect::<Vec<_>>(),
                network.labels,
                network.ipam.as_ref().map(|ipam| ipam
                    .config
                    .iter()
                    .map(|pool| &pool.subnet)
                    .collect::<Vec<_>>()),
                project.files_read,
            ))
        },
        &expect![[r#"
            services: ["api", "keep", "keep2", "new", "web"]
            image: Some("busybox:2")
            build: Some(("/stack/sub/ctx", "Other"))
            command: Some(["c"])
            environment: {"A": Some("1"), "B": Some("3"), "C": None, "FROM": Some("sub")}
            labels: {"x": "1", "y": "2"}
            ports: [(Some("8080"), 80), (Some("9090"), 90)]
            volumes: [Some("/stack/sub/data"), Some("/stack/sub/more")]
            new: [Some("/stack/sub/x")]
            network n: {"a": "1", "b": "2"} Some([Some("10.2.0.0/16")])
            files_read: ["/stack/sub/base.yaml", "/stack/other/over.yaml", "/stack/sub/a.env", "/stack/sub/b.env"]"#]],
    );
}

/// Each service's keys that the tag tests look at, one line a service.
fn tagged_keys(project: &Project) -> Shown {
    let lines: Vec<String> = project
        .services
        .iter()
        .map(|(name, service)| {
            format!(
                "{name}: command {:?}, environment {:?}, labels {:?}, ports {:?}, dns {:?}, \
                 user {:?}, hostname {:?}, working_dir {:?}, sysctls {:?}",
                service.command,
                service.environment,
                service.labels,
                service
                    .ports
                    .iter()
                    .map(|port| (port.published.as_deref(), port.target))
                    .collect::<Vec<_>>(),
                service.dns,
                service.user,
                service.hostname,
                service.working_dir,
                service.sysctls,
            )
        })
        .collect();
    Shown(lines.join("\n"))
}

/// `!reset` drops a value and `!override` replaces, rather than merges with, what a service
/// extends or what an include's earlier path defines; where nothing is merged, a `!reset` value
/// is simply gone (a whole service, a key, a list entry) and an `!override` one stays.
/// `docker compose config` (v2.40.3) shows the same for these files.
#[test]
fn reset_and_override_tags() {
    let extends_and_include = [
        (
            "compose.yaml",
            r#"
include:
  - path: [base.yaml, over.yaml]
services:
  base:
    image: busybox
    environment: {A: "1", B: "2"}
    ports: ["8080:80"]
    labels: {l: "1"}
    command: ["x"]
  web:
    extends: base
    environment: !reset {}
    ports: !override ["9090:90"]
    labels: !reset
    user: !reset root
    hostname: !override h
"#,
        ),
        (
            "base.yaml",
            r#"
services:
  api:
    image: busybox
    environment: {A: "1", B: "2"}
    ports: ["8080:80"]
    dns: [1.1.1.1]
    command: ["x"]
  gone:
    image: busybox
"#,
        ),
        (
            "over.yaml",
            r#"
services:
  api:
    environment: !override {C: "3"}
    ports: !reset []
    dns: !reset
    command: !reset
  gone: !reset
"#,
        ),
    ];
    check_files(
        &extends_and_include,
        &[],
        tagged_keys,
        &expect![[r#"
        api: command None, environment {"C": Some("3")}, labels {}, ports [], dns [], user None, hostname None, working_dir None, sysctls {}
        base: command Some(["x"]), environment {"A": Some("1"), "B": Some("2")}, labels {"l": "1"}, ports [(Some("8080"), 80)], dns [], user None, hostname None, working_dir None, sysctls {}
        web: command Some(["x"]), environment {}, labels {}, ports [(Some("9090"), 90)], dns [], user None, hostname Some("h"), working_dir None, sysctls {}"#]],
    );
    let another_file = [
        (
            "compose.yaml",
            r#"
services:
  web:
    extends: {file: lib/common.yaml, service: mid}
    dns: [9.9.9.9, !reset 8.8.8.8]
    environment: {X: !reset "1", Y: "2"}
  solo: !reset {image: busybox}
  other:
    image: busybox
    sysctls: !override {a: "1"}
"#,
        ),
        (
            "lib/common.yaml",
            r#"
services:
  root:
    image: busybox
    labels: {r: "1"}
    dns: [1.1.1.1]
    working_dir: /r
  mid:
    extends: root
    labels: !reset
    dns: !override [2.2.2.2]
"#,
        ),
    ];
    check_files(
        &another_file,
        &[],
        tagged_keys,
        &expect![[r#"
        other: command None, environment {}, labels {}, ports [], dns [], user None, hostname None, working_dir None, sysctls {"a": "1"}
        web: command None, environment {"Y": Some("2")}, labels {}, ports [], dns ["2.2.2.2", "9.9.9.9"], user None, hostname None, working_dir Some("/r"), sysctls {}"#]],
    );

    // A `!reset` value is dropped before interpolation, so a required variable in it is not
    // needed. Along a chain, `b`'s tag clears `a`'s labels for `c` too (`docker compose config`
    // shows this on some runs and not on others, see `extends::extended`).
    let chain = r#"
services:
  a:
    image: busybox
    labels: {a: "1"}
    user: !reset ${NOPE:?must be set}
  b:
    extends: a
    labels: !reset {}
  c:
    extends: b
"#;
    check(
        chain,
        tagged_keys,
        &expect![[r#"
        a: command None, environment {}, labels {"a": "1"}, ports [], dns [], user None, hostname None, working_dir None, sysctls {}
        b: command None, environment {}, labels {}, ports [], dns [], user None, hostname None, working_dir None, sysctls {}
        c: command None, environment {}, labels {}, ports [], dns [], user None, hostname None, working_dir None, sysctls {}"#]],
    );
}

/// Compose keeps one entry per port, mount, device, secret or DNS server, the last in the place
/// of the first, in any service.
#[test]
fn duplicate_list_entries_are_kept_once() {
    let compose = r#"
services:
  web:
    image: busybox
    ports: ["8080:80", {target: 80, published: "8080"}, "9000-9001:90-91", "9001:91"]
    volumes: ["./a:/x", {type: bind, source: ./c, target: /x}, "named:/y", "/h:/y:ro"]
    expose: ["81", 81]
    cap_add: [A, A]
    tmpfs: ["/run:size=1m", "/run:size=2m"]
    devices: ["/dev/a:/dev/x", "/dev/b:/dev/x"]
    secrets: [s, {source: s, target: /run/secrets/s, mode: 0400}]
    networks: {default: {aliases: [a, a]}}
    links: [db, "db:alias"]
    security_opt: [a=1, a=2]
    dns_opt: ["ndots:1", "ndots:1"]
  db: {image: busybox}
secrets: {s: {file: ./f}}
volumes: {named: {}}
"#;
    check_web(
        compose,
        |web| {
            Shown(format!(
                "ports: {:?}\nvolumes: {:?}\nexpose: {:?}\ncap_add: {:?}\ntmpfs: {:?}\n\
                 devices: {:?}\nsecrets: {:?}\naliases: {:?}\nlinks: {:?}\nsecurity_opt: {:?}\n\
                 dns_opt: {:?}",
                web.ports
                    .iter()
                    .map(|port| format!(
                        "{}:{}",
                        port.published.as_deref().unwrap_or("-"),
                        port.target
                    ))
                    .collect::<Vec<_>>(),
                web.volumes
                    .iter()
                    .map(|mount| {
                        let source = mount.source.as_deref().unwrap_or("-");
                        format!("{source}:{}:{}", mount.target, mount.read_only)
                    })
                    .collect::<Vec<_>>(),
                web.expose,
                web.cap_add,
                web.tmpfs,
                web.devices,
                web.files
                    .iter()
                    .map(|file| (&file.target, file.mode))
                    .collect::<Vec<_>>(),
                web.networks["default"].aliases,
                web.links,
                web.security_opt,
                web.dns_opt,
            ))
        },
        &expect![[r#"
            Some(
                ports: ["8080:80", "9000:90", "9001:91"]
                volumes: ["/stack/c:/x:false", "/h:/y:true"]
                expose: ["81"]
                cap_add: ["A"]
                tmpfs: ["/run:size=2m"]
                devices: ["/dev/b:/dev/x"]
                secrets: [("/run/secrets/s", Some(256))]
                aliases: ["a"]
                links: ["db", "db:alias"]
                security_opt: ["a=1", "a=2"]
                dns_opt: ["ndots:1"],
            )"#]],
    );
}

#[test]
fn extends_and_include_errors() {
    let show = |_: &Project| ();
    let environment = [];
    for (files, expected) in [
        (
            vec![(
                "compose.yaml",
                "services:\n  web: {image: busybox, extends: nope}\n",
            )],
            expect![[
                r#"error: /stack/compose.yaml: services.web.extends: cannot extend service "web": service "nope" not found"#
            ]],
        ),
        (
            vec![
                (
                    "compose.yaml",
                    "services:\n  web: {image: busybox, extends: {file: c/b.yaml, service: nope}}\n",
                ),
                ("c/b.yaml", "services:\n  x: {image: busybox}\n"),
            ],
            expect![[
                r#"error: /stack/compose.yaml: services.web.extends: cannot extend service "web": service "nope" not found in c/b.yaml"#
            ]],
        ),
        (
            vec![(
                "compose.yaml",
                "services:\n  web: {image: busybox, extends: {file: c/missing.yaml, service: x}}\n",
            )],
            expect![
                "error: /stack/compose.yaml: services.web.extends: /stack/c/missing.yaml: No such file or directory (os error 2)"
            ],
        ),
        (
            vec![
                (
                    "compose.yaml",
                    "services:\n  web: {image: busybox, extends: {file: c/b.yaml, service: x}}\n",
                ),
                ("c/b.yaml", "networks: {}\n"),
            ],
            expect![
                "error: /stack/compose.yaml: services.web.extends: cannot extend from /stack/c/b.yaml: it has no services section"
            ],
        ),
        (
            vec![(
                "compose.yaml",
                "services:\n  web: {image: busybox, extends: a}\n  a: {extends: b}\n  b: {extends: web}\n",
            )],
            expect![
                "error: /stack/compose.yaml: services.b.extends: circular reference: web in /stack/compose.yaml extends a in /stack/compose.yaml extends b in /stack/compose.yaml extends web in /stack/compose.yaml"
            ],
        ),
        (
            vec![
                (
                    "compose.yaml",
                    "services:\n  web: {image: busybox, extends: {file: c/b.yaml, service: x}}\n",
                ),
                (
                    "c/b.yaml",
                    "services:\n  x: {extends: {file: ../compose.yaml, service: web}}\n",
                ),
            ],
            expect![
                "error: /stack/c/b.yaml: services.x.extends: circular reference: web in /stack/compose.yaml extends x in /stack/c/b.yaml extends web in /stack/compose.yaml"
            ],
        ),
        (
            vec![(
                "compose.yaml",
                "services:\n  web: {image: busybox, extends: {file: c.yaml}}\n",
            )],
            expect!["error: /stack/compose.yaml: services.web.extends: needs a service"],
        ),
        (
            vec![(
                "compose.yaml",
                "include: [missing.yaml]\nservices:\n  api: {image: busybox}\n",
            )],
            expect!["error: /stack/compose.yaml: include[0]: /stack/missing.yaml is not a file"],
        ),
        (
            vec![
                (
                    "compose.yaml",
                    "include: [inc.yaml]\nservices:\n  api: {image: busybox}\n",
                ),
                ("inc.yaml", "services:\n  api: {image: \"busybox:2\"}\n"),
            ],
            expect![
                "error: /stack/compose.yaml: include[0]: services.api conflicts with imported resource from /stack/inc.yaml"
            ],
        ),
        (
            vec![
                (
                    "compose.yaml",
                    "include: [inc.yaml]\nservices:\n  api: {image: busybox}\n",
                ),
                ("inc.yaml", "services:\n  api: {image: busybox}\n"),
            ],
            expect!["()"],
        ),
        (
            vec![
                (
                    "compose.yaml",
                    "include: [inc.yaml]\nnetworks:\n  n: {driver: bridge}\nservices: {}\n",
                ),
                ("inc.yaml", "networks:\n  n: {}\n"),
            ],
            expect![
                "error: /stack/compose.yaml: include[0]: networks.n conflicts with imported resource from /stack/inc.yaml"
            ],
        ),
        (
            vec![
                ("compose.yaml", "include: [inc.yaml]\nservices: {}\n"),
                ("inc.yaml", "include: [compose.yaml]\n"),
            ],
            expect![
                "error: /stack/inc.yaml: include[0]: include cycle detected: /stack/compose.yaml include /stack/inc.yaml include /stack/compose.yaml"
            ],
        ),
        (
            vec![
                (
                    "compose.yaml",
                    "include: [{path: [a.yaml, missing.yaml]}]\nservices: {}\n",
                ),
                ("a.yaml", "services: {}\n"),
            ],
            expect!["error: /stack/compose.yaml: include[0]: /stack/missing.yaml is not a file"],
        ),
        (
            vec![
                (
                    "compose.yaml",
                    "include: [{path: [a.yaml, b.yaml]}]\nservices:\n  api: {image: busybox}\n",
                ),
                ("a.yaml", "services:\n  api: {image: busybox}\n"),
                ("b.yaml", "services:\n  api: {command: x}\n"),
            ],
            expect![
                "error: /stack/compose.yaml: include[0]: services.api conflicts with imported resource from /stack/a.yaml, /stack/b.yaml"
            ],
        ),
    ] {
        check_files(&files, &environment, show, &expected);
    }
}

/// A stack whose `.env`, env file and secret SOPS encrypted, with a host-local env file.
fn sops_stack(world: &crate::stack::sops::tests::World) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("demo");
    std::fs::create_dir(&dir).unwrap();
    let compose = "services:\n  web:\n    image: nginx:${TAG}\n    environment:\n      PASSWORD: ${DB_PASSWORD}\n    env_file: app.env\n    secrets: [token]\nsecrets:\n  token:\n    file: ./token.json\n";
    std::fs::write(dir.join("compose.yaml"), compose).unwrap();
    let files = [
        (".env", "DB_PASSWORD=\"hunter 2\"\nTAG=1\n"),
        ("app.env", "API_KEY=k3y\n"),
        ("token.json", "{\"token\": \"t0k\"}"),
    ];
    for (name, plain) in files {
        std::fs::write(dir.join(name), world.encrypt(name, plain, &[])).unwrap();
    }
    std::fs::write(root.path().join("demo.env"), "TAG=2\n").unwrap();
    (root, dir)
}

#[test]
fn sops_files_open_in_memory_and_the_local_env_file_overrides_dotenv() {
    let world = crate::stack::sops::tests::World::new();
    let (root, dir) = sops_stack(&world);
    let mut host = Host {
        environment: BTreeMap::new(),
        local_env: Some(root.path().join("demo.env")),
        age_keys: world.keys(),
    };
    let project = load(&dir, &host).unwrap();
    let web = &project.services["web"];
    assert_eq!(web.image.as_deref(), Some("nginx:2"));
    assert_eq!(web.environment["PASSWORD"].as_deref(), Some("hunter 2"));
    assert_eq!(web.environment["API_KEY"].as_deref(), Some("k3y"));
    assert_eq!(
        web.files[0].source,
        FileSource::File(dir.join("token.json"))
    );
    let sealed: Vec<_> = project.sealed.keys().cloned().collect();
    assert_eq!(
        sealed,
        [".env", "app.env", "token.json"].map(|name| dir.join(name))
    );
    let token = &project.sealed[&dir.join("token.json")];
    let token: serde_json::Value = serde_json::from_slice(token.as_bytes()).unwrap();
    assert_eq!(token["token"], "t0k");
    // The process environment wins over both files, as over `.env` in Compose.
    host.environment.insert("TAG".into(), "3".into());
    let project = load(&dir, &host).unwrap();
    assert_eq!(project.services["web"].image.as_deref(), Some("nginx:3"));
    // Nothing decrypted shows in the project's debug output but where services use it.
    let debug = format!("{:?}", project.sealed);
    assert!(
        !debug.contains("t0k") && !debug.contains("hunter"),
        "{debug}"
    );
}

#[test]
fn a_sops_file_that_does_not_open_fails_the_load_naming_it_and_why() {
    let world = crate::stack::sops::tests::World::new();
    let (_root, dir) = sops_stack(&world);
    let error = |keys: crate::stack::sops::Keys| {
        let host = Host {
            age_keys: keys,
            ..Host::default()
        };
        load(&dir, &host).unwrap_err().to_string()
    };
    let dotenv = dir.join(".env").display().to_string();
    assert_eq!(
        error(crate::stack::sops::Keys::default()),
        format!(
            "{dotenv}: it is encrypted with SOPS, and no age key is configured: set STACKHOOK_AGE_KEY_FILE, SOPS_AGE_KEY_FILE or SOPS_AGE_KEY"
        )
    );
    let other = crate::stack::sops::tests::World::new();
    assert!(
        error(other.keys()).starts_with(&format!(
            "{dotenv}: no configured age key opens it (it is encrypted to age1"
        )),
        "{}",
        error(other.keys())
    );
    let token = dir.join("token.json");
    let text = std::fs::read_to_string(&token).unwrap();
    std::fs::write(
        &token,
        text.replace(
            "\"mac\": \"ENC[AES256_GCM,data:",
            "\"mac\": \"ENC[AES256_GCM,data:AA",
        ),
    )
    .unwrap();
    assert_eq!(
        error(world.keys()),
        format!(
            "{}: its SOPS MAC does not verify: the file was changed after SOPS encrypted it",
            token.display()
        )
    );
}
