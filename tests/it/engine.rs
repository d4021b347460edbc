//! The Docker engine implementation against real engines, Docker and Podman alike: networks,
//! volumes, a container's lifecycle, health, logs and image builds.
//!
//! Needs both engines (`scripts/engines.sh`); a missing engine fails the test, it never skips.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use stackhook::engine::{Attachment, ContainerSpec, Engine, Health, State};
use stackhook::stack::compose;

use crate::support::image::{self, TestEngine, cli_output};

const IMAGE: &str = "stackhook-test-busybox:1";
const PROJECT_LABEL: &str = "com.docker.compose.project";

#[tokio::test(flavor = "multi_thread")]
async fn docker_container_lifecycle() {
    container_lifecycle(TestEngine::Docker, "docker_container_lifecycle").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_container_lifecycle() {
    container_lifecycle(TestEngine::Podman, "podman_container_lifecycle").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_builds_from_a_local_image() {
    builds_from_a_local_image(TestEngine::Docker, "docker_builds").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_builds_from_a_local_image() {
    builds_from_a_local_image(TestEngine::Podman, "podman_builds").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_reports_its_kind() {
    let docker = image::connect(TestEngine::Docker).await;
    let info = docker.info().await.unwrap();
    assert_eq!(info.kind, stackhook::engine::EngineKind::Docker);
    assert!(!info.api_version.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_reports_its_kind() {
    let podman = image::connect(TestEngine::Podman).await;
    let info = podman.info().await.unwrap();
    assert_eq!(info.kind, stackhook::engine::EngineKind::Podman);
}

#[tokio::test]
async fn connect_names_what_it_tried() {
    let candidates = [
        "unix:///nonexistent/engine.sock".to_owned(),
        "relative.sock".to_owned(),
    ];
    let error = stackhook::engine::docker::connect(&candidates)
        .await
        .unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("unix:///nonexistent/engine.sock"),
        "{message}"
    );
    assert!(message.contains("relative.sock"), "{message}");
    assert!(message.contains("scripts/engines.sh"), "{message}");
}

async fn container_lifecycle(engine: TestEngine, test: &str) {
    let docker = image::connect(engine).await;
    image::ensure_image(engine, IMAGE);
    let project = unique(test);
    let cleanup = Cleanup {
        engine,
        project: project.clone(),
    };

    let labels = BTreeMap::from([(PROJECT_LABEL.to_owned(), project.clone())]);
    let front = compose::Network {
        name: format!("{project}_front"),
        labels: labels.clone(),
        ..Default::default()
    };
    let back = compose::Network {
        name: format!("{project}_back"),
        internal: true,
        labels: labels.clone(),
        ..Default::default()
    };
    let volume = compose::Volume {
        name: format!("{project}_data"),
        labels: labels.clone(),
        ..Default::default()
    };
    for network in [&front, &back] {
        docker.ensure_network(network).await.unwrap();
        // A second call finds it and leaves it alone.
        docker.ensure_network(network).await.unwrap();
    }
    docker.ensure_volume(&volume).await.unwrap();
    docker.ensure_volume(&volume).await.unwrap();
    let mut networks = docker.networks(&project).await.unwrap();
    networks.sort();
    assert_eq!(networks, [back.name.clone(), front.name.clone()]);

    let external = compose::Network {
        name: format!("{project}_missing"),
        external: true,
        ..Default::default()
    };
    let error = docker.ensure_network(&external).await.unwrap_err();
    assert!(format!("{error:#}").contains("external"), "{error:#}");

    let check = compose::Healthcheck {
        test: vec![
            "CMD-SHELL".to_owned(),
            "wget -q -O /dev/null http://127.0.0.1:8080/index.html || exit 1".to_owned(),
        ],
        interval: Some(Duration::from_secs(1)),
        timeout: Some(Duration::from_secs(5)),
        retries: Some(3),
        start_period: None,
        start_interval: None,
    };
    let name = format!("{project}-web-1");
    let spec = ContainerSpec {
        name: name.clone(),
        service: compose::Service {
            image: Some(IMAGE.to_owned()),
            command: Some(vec![
                "sh".to_owned(),
                "-c".to_owned(),
                "echo hello > /www/index.html && echo started && exec httpd -f -p 8080 -h /www"
                    .to_owned(),
            ]),
            environment: BTreeMap::from([("GREETING".to_owned(), Some("hello".to_owned()))]),
            volumes: vec![compose::Mount {
                kind: compose::MountKind::Volume,
                source: Some("data".to_owned()),
                target: "/data".to_owned(),
                read_only: false,
                options: vec![],
                nocopy: false,
                tmpfs_size: None,
                create_host_path: true,
            }],
            healthcheck: Some(check.clone()),
            stop_grace_period: Some(Duration::from_secs(2)),
            ..Default::default()
        },
        labels: labels.clone(),
        networks: vec![
            Attachment {
                network: back.name.clone(),
                aliases: vec![name.clone(), "web".to_owned()],
                ipv4_address: None,
                ..Default::default()
            },
            Attachment {
                network: front.name.clone(),
                aliases: vec![name.clone(), "web".to_owned(), "www".to_owned()],
                ipv4_address: None,
                ..Default::default()
            },
        ],
        volume_names: BTreeMap::from([("data".to_owned(), volume.name.clone())]),
        ..Default::default()
    };

    let id = docker.create(&spec).await.unwrap();
    let attached = cli_output(
        engine,
        &[
            "inspect",
            "--format",
            "{{json .NetworkSettings.Networks}}",
            &id,
        ],
    );
    assert!(
        attached.contains(&front.name) && attached.contains(&back.name),
        "{attached}"
    );
    assert!(
        attached.contains("\"www\""),
        "the second network lacks its alias: {attached}"
    );

    docker.start(&id).await.unwrap();
    let listed = docker.containers(Some(&project)).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].name, name);
    assert_eq!(listed[0].label(PROJECT_LABEL), Some(project.as_str()));
    assert_eq!(listed[0].state, State::Running);
    let everything = docker.containers(None).await.unwrap();
    assert!(everything.iter().any(|c| c.id == id));
    assert_eq!(docker.inspect(&id).await.unwrap().state, State::Running);

    poll(
        "the container to become healthy",
        Duration::from_secs(60),
        || async { docker.health(&id, &check).await.unwrap() == Health::Healthy },
    )
    .await;
    poll(
        "the container's output",
        Duration::from_secs(10),
        || async { docker.logs(&id, 10).await.unwrap().contains("started") },
    )
    .await;

    let renamed = format!("{project}-web-renamed");
    docker.rename(&id, &renamed).await.unwrap();
    let listed = docker.containers(Some(&project)).await.unwrap();
    assert_eq!(listed[0].name, renamed);

    docker
        .stop(&id, Some(Duration::from_secs(2)))
        .await
        .unwrap();
    let status = docker.inspect(&id).await.unwrap();
    assert_ne!(status.state, State::Running, "{status:?}");
    assert_eq!(docker.health(&id, &check).await.unwrap(), Health::Unhealthy);

    docker.remove(&id).await.unwrap();
    assert!(docker.containers(Some(&project)).await.unwrap().is_empty());
    // Removing again is not an error: the container is gone either way.
    docker.remove(&id).await.unwrap();
    for network in [&front, &back] {
        docker.remove_network(&network.name).await.unwrap();
    }
    assert!(docker.networks(&project).await.unwrap().is_empty());

    assert!(docker.image_id(IMAGE).await.unwrap().is_some());
    let absent = format!("stackhook-absent-{}:none", std::process::id());
    assert_eq!(docker.image_id(&absent).await.unwrap(), None);
    drop(cleanup);
}

async fn builds_from_a_local_image(engine: TestEngine, test: &str) {
    let docker = image::connect(engine).await;
    image::ensure_image(engine, IMAGE);
    let project = unique(test);
    let _cleanup = Cleanup {
        engine,
        project: project.clone(),
    };
    let context = tempfile::tempdir().unwrap();
    std::fs::write(context.path().join("greeting.txt"), "hello\n").unwrap();
    std::fs::create_dir(context.path().join("docker")).unwrap();
    std::fs::write(
        context.path().join("docker/app.Dockerfile"),
        format!(
            "FROM {IMAGE} AS base\nARG WHO=nobody\nCOPY greeting.txt /greeting.txt\n\
             RUN echo \"$WHO\" > /who.txt\nFROM base AS final\nRUN echo final > /stage.txt\n"
        ),
    )
    .unwrap();
    let tag = format!("{project}-app:latest");
    let build = compose::Build {
        context: context.path().to_owned(),
        dockerfile: "docker/app.Dockerfile".to_owned(),
        args: BTreeMap::from([("WHO".to_owned(), "stackhook".to_owned())]),
        target: Some("base".to_owned()),
        ..Default::default()
    };
    let lines = std::sync::Mutex::new(Vec::new());
    docker
        .build(&tag, &build, &|line: &str| {
            lines.lock().unwrap().push(line.to_owned())
        })
        .await
        .unwrap();
    assert!(!lines.lock().unwrap().is_empty());
    assert!(docker.image_id(&tag).await.unwrap().is_some());
    let who = cli_output(
        engine,
        &["run", "--rm", &tag, "cat", "/who.txt", "/greeting.txt"],
    );
    assert_eq!(who, "stackhook\nhello\n");
    // `target: base` stops before the final stage.
    let stage = cli_status(engine, &["run", "--rm", &tag, "cat", "/stage.txt"]);
    assert!(!stage, "the build went past its target stage");

    let broken = compose::Build {
        dockerfile: "Missing.Dockerfile".to_owned(),
        ..build.clone()
    };
    let error = docker.build(&tag, &broken, &|_| {}).await.unwrap_err();
    assert!(
        format!("{error:#}").starts_with("building image"),
        "{error:#}"
    );
}

/// A name no other test or run uses.
fn unique(test: &str) -> String {
    format!("shk-{}-{}", test.replace('_', "-"), std::process::id())
}

/// Waits until `condition` holds, failing the test after `deadline`.
async fn poll<F, Fut>(what: &str, deadline: Duration, condition: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < deadline,
            "gave up waiting for {what} after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn cli_status(engine: TestEngine, args: &[&str]) -> bool {
    engine.cli().args(args).output().unwrap().status.success()
}

/// Removes what a test made, also when it fails half-way.
struct Cleanup {
    engine: TestEngine,
    project: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={PROJECT_LABEL}={}", self.project);
        let ids = |kind: &[&str]| {
            let mut args: Vec<&str> = kind.to_vec();
            args.extend(["--filter", &filter, "-q"]);
            let output = self.engine.cli().args(&args).output();
            output
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_else(|_| Vec::<String>::new())
        };
        let containers = ids(&["ps", "-a"]);
        if !containers.is_empty() {
            let _ = self
                .engine
                .cli()
                .args(["rm", "-f", "-v"])
                .args(&containers)
                .output();
        }
        let networks = ids(&["network", "ls"]);
        if !networks.is_empty() {
            let _ = self
                .engine
                .cli()
                .args(["network", "rm"])
                .args(&networks)
                .output();
        }
        let volumes = ids(&["volume", "ls"]);
        if !volumes.is_empty() {
            let _ = self
                .engine
                .cli()
                .args(["volume", "rm", "-f"])
                .args(&volumes)
                .output();
        }
        let images = self
            .engine
            .cli()
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for image in images.lines().filter(|i| i.contains(&self.project)) {
            let _ = self.engine.cli().args(["rmi", "-f", image]).output();
        }
    }
}

/// The promise of the engine layer: a container made from a spec is the one `docker compose
/// up -d` makes from the same service. Compose makes one, we make a twin on its networks and
/// volume, and the two `docker inspect` outputs must agree field by field.
#[tokio::test(flavor = "multi_thread")]
async fn docker_container_matches_docker_compose() {
    let engine = TestEngine::Docker;
    let docker = image::connect(engine).await;
    image::ensure_image(engine, IMAGE);
    let project = unique("compose_twin");
    let _cleanup = Cleanup {
        engine,
        project: project.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    std::fs::write(
        dir.path().join("compose.yaml"),
        format!(
            r#"services:
  web:
    image: {IMAGE}
    command: ["httpd", "-f", "-p", "8080"]
    environment: {{ZED: "1", ALPHA: "x y"}}
    labels: {{my.label: v}}
    ports: ["8080", "127.0.0.1::9000/udp"]
    expose: ["7000"]
    volumes:
      - data:/data
      - ./conf:/conf:ro
      - /anon
      - type: tmpfs
        target: /scratch
        tmpfs: {{size: 1000000}}
    tmpfs: ["/run2"]
    networks:
      front: {{aliases: [www]}}
      back: {{}}
    restart: on-failure:3
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O- localhost:8080 || exit 1"]
      interval: 2s
      timeout: 1s
      retries: 3
      start_period: 5s
    stop_grace_period: 20s
    stop_signal: SIGTERM
    init: true
    cap_add: [NET_ADMIN]
    extra_hosts: ["foo:1.2.3.4"]
    dns: [8.8.8.8]
    ulimits: {{nofile: {{soft: 1024, hard: 2048}}}}
    sysctls: {{net.core.somaxconn: "1024"}}
    mem_limit: 64m
    cpus: 0.5
    shm_size: 8m
    pids_limit: 100
    user: "0:0"
    working_dir: /tmp
    hostname: webhost
    logging: {{driver: json-file, options: {{max-size: 1m}}}}
networks:
  front: {{}}
  back: {{internal: true}}
volumes:
  data: {{}}
"#
        ),
    )
    .unwrap();
    let up = std::process::Command::new("docker-compose")
        .args(["-p", &project, "up", "-d", "--no-start"])
        .current_dir(dir.path())
        .env("DOCKER_HOST", format!("unix://{}", engine.socket()))
        .output()
        .expect("running docker-compose, the oracle (scripts/engines.sh installs it)");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let theirs = inspect(engine, &format!("{project}-web-1"));

    let conf = dir.path().join("conf").to_str().unwrap().to_owned();
    let mount = |kind, source: Option<&str>, target: &str| compose::Mount {
        kind,
        source: source.map(str::to_owned),
        target: target.to_owned(),
        read_only: false,
        options: vec![],
        nocopy: false,
        tmpfs_size: None,
        create_host_path: true,
    };
    let port = |target, host_ip: Option<&str>, protocol: &str| compose::Port {
        target,
        published: None,
        host_ip: host_ip.map(str::to_owned),
        protocol: protocol.to_owned(),
        mode: None,
    };
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let name = format!("{project}-web-twin");
    let spec = ContainerSpec {
        name: name.clone(),
        service: compose::Service {
            image: Some(IMAGE.to_owned()),
            command: Some(strings(&["httpd", "-f", "-p", "8080"])),
            environment: BTreeMap::from([
                ("ZED".to_owned(), Some("1".to_owned())),
                ("ALPHA".to_owned(), Some("x y".to_owned())),
            ]),
            ports: vec![
                port(8080, None, "tcp"),
                port(9000, Some("127.0.0.1"), "udp"),
            ],
            expose: strings(&["7000"]),
            volumes: vec![
                mount(compose::MountKind::Volume, Some("data"), "/data"),
                compose::Mount {
                    read_only: true,
                    ..mount(compose::MountKind::Bind, Some(&conf), "/conf")
                },
                mount(compose::MountKind::Volume, None, "/anon"),
                compose::Mount {
                    tmpfs_size: Some(1_000_000),
                    ..mount(compose::MountKind::Tmpfs, None, "/scratch")
                },
            ],
            tmpfs: strings(&["/run2"]),
            restart: Some("on-failure:3".to_owned()),
            healthcheck: Some(compose::Healthcheck {
                test: strings(&["CMD-SHELL", "wget -q -O- localhost:8080 || exit 1"]),
                interval: Some(Duration::from_secs(2)),
                timeout: Some(Duration::from_secs(1)),
                retries: Some(3),
                start_period: Some(Duration::from_secs(5)),
                start_interval: None,
            }),
            stop_grace_period: Some(Duration::from_secs(20)),
            stop_signal: Some("SIGTERM".to_owned()),
            init: Some(true),
            cap_add: strings(&["NET_ADMIN"]),
            extra_hosts: strings(&["foo:1.2.3.4"]),
            dns: strings(&["8.8.8.8"]),
            ulimits: BTreeMap::from([(
                "nofile".to_owned(),
                compose::Ulimit {
                    soft: 1024,
                    hard: 2048,
                },
            )]),
            sysctls: BTreeMap::from([("net.core.somaxconn".to_owned(), "1024".to_owned())]),
            mem_limit: Some(64 * 1024 * 1024),
            cpus: Some(0.5),
            shm_size: Some(8 * 1024 * 1024),
            pids_limit: Some(100),
            user: Some("0:0".to_owned()),
            working_dir: Some("/tmp".to_owned()),
            hostname: Some("webhost".to_owned()),
            logging: Some(compose::Logging {
                driver: Some("json-file".to_owned()),
                options: BTreeMap::from([("max-size".to_owned(), "1m".to_owned())]),
            }),
            ..Default::default()
        },
        // Labels are `deploy`'s to build; here they are copied so that the rest compares.
        labels: serde_json::from_value(theirs["Config"]["Labels"].clone()).unwrap(),
        networks: vec![
            Attachment {
                network: format!("{project}_back"),
                aliases: vec![name.clone(), "web".to_owned()],
                ipv4_address: None,
                ..Default::default()
            },
            Attachment {
                network: format!("{project}_front"),
                aliases: vec![name.clone(), "web".to_owned(), "www".to_owned()],
                ipv4_address: None,
                ..Default::default()
            },
        ],
        volume_names: BTreeMap::from([("data".to_owned(), format!("{project}_data"))]),
        ..Default::default()
    };
    let id = docker.create(&spec).await.unwrap();
    let ours = inspect(engine, &id);

    // Compose sends the environment in Go map order, which varies from run to run; we sort it.
    let env = |inspected: &serde_json::Value| {
        let mut env: Vec<String> =
            serde_json::from_value(inspected["Config"]["Env"].clone()).unwrap();
        env.sort();
        env
    };
    assert_eq!(env(&ours), env(&theirs), "Config.Env");
    for field in [
        "Cmd",
        "Entrypoint",
        "ExposedPorts",
        "Healthcheck",
        "Hostname",
        "Domainname",
        "Labels",
        "StopSignal",
        "StopTimeout",
        "User",
        "WorkingDir",
        "Tty",
        "OpenStdin",
        "AttachStdin",
        "AttachStdout",
        "AttachStderr",
        "Image",
        "Volumes",
    ] {
        assert_eq!(
            ours["Config"][field], theirs["Config"][field],
            "Config.{field}"
        );
    }
    let host_fields = [
        "Binds",
        "Mounts",
        "Tmpfs",
        "PortBindings",
        "NetworkMode",
        "RestartPolicy",
        "Init",
        "CapAdd",
        "CapDrop",
        "ExtraHosts",
        "Dns",
        "Ulimits",
        "Sysctls",
        "Memory",
        "MemoryReservation",
        "NanoCpus",
        "ShmSize",
        "PidsLimit",
        "LogConfig",
        "Privileged",
        "ReadonlyRootfs",
        "SecurityOpt",
        "Devices",
    ];
    // Compose builds these lists from Go maps too, so their order varies from run to run.
    let unordered = ["Binds", "Mounts", "Ulimits", "ExtraHosts"];
    let normalised = |inspected: &serde_json::Value, field: &str| {
        let mut value = inspected["HostConfig"][field].clone();
        if let (true, Some(items)) = (unordered.contains(&field), value.as_array_mut()) {
            items.sort_by_key(|item| item.to_string());
        }
        value
    };
    for field in host_fields {
        assert_eq!(
            normalised(&ours, field),
            normalised(&theirs, field),
            "HostConfig.{field}"
        );
    }
    // Compose's aliases start with its container's name, ours with ours, and the engine adds
    // each container's short id.
    for network in ["back", "front"] {
        let aliases = |inspected: &serde_json::Value| {
            let key = format!("{project}_{network}");
            let all = inspected["NetworkSettings"]["Networks"][&key]["Aliases"].clone();
            let short_id = &inspected["Id"].as_str().unwrap()[..12];
            let mut all = serde_json::from_value::<Vec<String>>(all)
                .unwrap()
                .split_off(1);
            all.retain(|alias| alias != short_id);
            all
        };
        assert_eq!(aliases(&ours), aliases(&theirs), "aliases on {network}");
    }
}

fn inspect(engine: TestEngine, id: &str) -> serde_json::Value {
    let text = cli_output(engine, &["inspect", id]);
    let mut all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    all.remove(0)
}
