//! Issue 12, "Swarm mode": stacks deployed as Swarm stacks on a single-node swarm of the Docker
//! engine, compared with what `docker stack deploy` makes of the same file.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::image::{TestEngine, cli_output, ensure_image};
use crate::support::server::{Harness, Server};

const IMAGE: &str = "stackhook-test/swarm:latest";

/// Makes the Docker engine a single-node swarm manager unless it is one.
fn ensure_swarm() {
    let state = cli_output(
        TestEngine::Docker,
        &["info", "--format", "{{.Swarm.LocalNodeState}}"],
    );
    if state.trim() == "active" {
        return;
    }
    // Two tests may ask at once; the second is told the node is in a swarm already.
    let _ = Command::new("docker")
        .args(["swarm", "init", "--advertise-addr", "127.0.0.1"])
        .output();
    let state = cli_output(
        TestEngine::Docker,
        &["info", "--format", "{{.Swarm.LocalNodeState}}"],
    );
    assert_eq!(state.trim(), "active", "docker swarm init did not take");
}

fn docker(args: &[&str]) -> String {
    cli_output(TestEngine::Docker, args)
}

/// A service's spec as the engine reports it.
fn service_spec(name: &str) -> Value {
    serde_json::from_str(&docker(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec}}",
        name,
    ]))
    .unwrap()
}

fn service_version(name: &str) -> u64 {
    docker(&["service", "inspect", "--format", "{{.Version.Index}}", name])
        .trim()
        .parse()
        .unwrap()
}

/// The names of a stack's services.
fn services(namespace: &str) -> Vec<String> {
    let label = format!("label=com.docker.stack.namespace={namespace}");
    let mut names: Vec<String> =
        docker(&["service", "ls", "--filter", &label, "--format", "{{.Name}}"])
            .lines()
            .map(str::to_owned)
            .collect();
    names.sort();
    names
}

/// The environment of one running task's container of a service.
fn task_env(service: &str) -> Vec<String> {
    let filter = format!("label=com.docker.swarm.service.name={service}");
    let ids = docker(&["ps", "-q", "--filter", &filter]);
    let id = ids
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no running task of {service}"));
    docker(&[
        "inspect",
        "--format",
        "{{range .Config.Env}}{{println .}}{{end}}",
        id,
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Removes what a stack left: services, then secrets, configs and networks, once free.
async fn remove_stack(namespace: &str) {
    let label = format!("label=com.docker.stack.namespace={namespace}");
    for kind in ["service", "secret", "config", "network"] {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ids = docker(&[kind, "ls", "-q", "--filter", &label]);
            if ids.trim().is_empty() {
                break;
            }
            let mut args = vec![kind, "rm"];
            args.extend(ids.lines());
            let _ = Command::new("docker").args(&args).output();
            assert!(
                std::time::Instant::now() < deadline,
                "{kind}s of {namespace} stay"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Waits for the deployment at start, which must succeed.
async fn deployed(server: &Server) {
    let health = server.settled().await;
    let id = health["last_deployment"]["id"].as_str().unwrap().to_owned();
    let (_, report) = server.read(&format!("/api/deployments/{id}")).await;
    assert_eq!(health["last_deployment"]["succeeded"], true, "{report}");
}

fn stack_file(marker: &str, check: &str) -> String {
    format!(
        r#"services:
  web:
    image: {IMAGE}
    command: ["sleep", "3600"]
    networks: [back]
    deploy:
      labels:
        tier: front
  app:
    image: {IMAGE}
    command: ["sleep", "3600"]
    environment:
      MARKER: "{marker}"
    secrets: [token]
    configs:
      - source: settings
        target: /etc/settings.conf
    volumes:
      - data:/data
    networks: [back]
    healthcheck:
      test: ["CMD", "{check}"]
      interval: 1s
      timeout: 1s
      retries: 2
    deploy:
      replicas: 2
      placement:
        constraints: ["node.role == manager"]
      update_config:
        parallelism: 1
        order: start-first
        failure_action: rollback
        monitor: 3s
      rollback_config:
        parallelism: 2
      restart_policy:
        condition: on-failure
        delay: 1s
      resources:
        limits:
          memory: 64M
networks:
  back: {{}}
volumes:
  data: {{}}
secrets:
  token:
    file: ./token.txt
configs:
  settings:
    content: "level = 1"
"#
    )
}

#[tokio::test]
async fn a_stack_becomes_swarm_services_and_only_changed_ones_are_updated() {
    ensure_swarm();
    ensure_image(TestEngine::Docker, IMAGE);
    let mut h = Harness::new(TestEngine::Docker, "swarm").await;
    h.set("STACKHOOK_ENGINE_MODE", "swarm");
    h.set("STACKHOOK_SWARM_TIMEOUT", "90s");
    let stack = h.stack("app");
    h.compose("app", &stack_file("1", "true"));
    h.repo
        .write(&format!("services/{stack}/token.txt"), "s3cret");
    let other = h.stack("other");
    h.compose(
        "other",
        &format!("services:\n  job:\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n"),
    );
    h.repo.commit("one");
    let server = h.start().await;
    deployed(&server).await;
    assert_eq!(services(&other), vec![format!("{other}_job")]);
    let (web, app) = (format!("{stack}_web"), format!("{stack}_app"));
    assert_eq!(services(&stack), vec![app.clone(), web.clone()]);
    assert!(task_env(&app).contains(&"MARKER=1".to_owned()));
    let spec = service_spec(&app);
    assert_eq!(spec["Mode"]["Replicated"]["Replicas"], 2, "{spec}");
    assert_eq!(spec["UpdateConfig"]["FailureAction"], "rollback", "{spec}");
    assert_eq!(spec["Labels"]["com.docker.stack.namespace"], stack.as_str());
    assert_eq!(service_spec(&web)["Labels"]["tier"], "front");
    // The status reads Swarm's tasks as the stack's containers.
    let (_, status) = server.read(&format!("/api/stacks/{stack}")).await;
    assert_eq!(status["state"], "up_to_date", "{status}");
    let running = status["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|task| task["service"] == "app" && task["state"] == "running")
        .count();
    assert_eq!(running, 2, "{status}");
    // The secret reaches the task, from an object named by its content.
    let filter = format!("label=com.docker.swarm.service.name={app}");
    let task = docker(&["ps", "-q", "--filter", &filter]);
    let task = task.lines().next().unwrap();
    assert_eq!(
        docker(&["exec", task, "cat", "/run/secrets/token"]),
        "s3cret"
    );
    assert_eq!(
        docker(&["exec", task, "cat", "/etc/settings.conf"]),
        "level = 1"
    );

    // Only app changes: web sees no update call.
    let web_version = service_version(&web);
    let app_version = service_version(&app);
    h.compose("app", &stack_file("2", "true"));
    h.repo.commit("two");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(service_version(&web), web_version, "web was not touched");
    assert!(service_version(&app) > app_version);
    assert!(task_env(&app).contains(&"MARKER=2".to_owned()));

    // A spec whose tasks never get healthy: Swarm rolls it back, and the deploy says so.
    h.compose("app", &stack_file("3", "false"));
    h.repo.commit("three");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 500, "{report}");
    let error = report["report"]["stacks"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("rolled"), "{report}");
    let env = service_spec(&app)["TaskTemplate"]["ContainerSpec"]["Env"].clone();
    assert_eq!(
        env,
        serde_json::json!(["MARKER=2"]),
        "Swarm's rollback holds"
    );

    // A service gone from the file is removed; the secret no longer used goes with a change.
    h.compose(
        "app",
        &stack_file("4", "true").replace(
            &format!("  web:\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n    networks: [back]\n    deploy:\n      labels:\n        tier: front\n"),
            "",
        ),
    );
    h.repo.write(&format!("services/{stack}/token.txt"), "n3w");
    h.repo.commit("four");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(services(&stack), vec![app.clone()]);
    let label = format!("label=com.docker.stack.namespace={stack}");
    let secrets = docker(&["secret", "ls", "--filter", &label, "--format", "{{.Name}}"]);
    assert_eq!(
        secrets.lines().count(),
        1,
        "the old secret is pruned: {secrets}"
    );
    server.stop().await;
    remove_stack(&stack).await;
}

/// The fidelity oracle: `docker stack deploy` and stackhook deploy one file under one name, and
/// the service, network, secret and config specs they leave are compared field by field.
#[tokio::test]
async fn swarm_specs_match_docker_stack_deploy() {
    ensure_swarm();
    ensure_image(TestEngine::Docker, IMAGE);
    let mut h = Harness::new(TestEngine::Docker, "swarmfid").await;
    h.set("STACKHOOK_ENGINE_MODE", "swarm");
    let stack = h.stack("fid");
    let file = format!(
        r#"services:
  app:
    image: {IMAGE}
    command: ["sleep", "3600"]
    entrypoint: ["/bin/busybox"]
    environment:
      B: "2"
      A: "1"
    labels:
      role: app
    hostname: apphost
    working_dir: /tmp
    user: "0"
    stop_grace_period: 5s
    stop_signal: SIGTERM
    init: true
    extra_hosts: ["db.local:10.1.2.3"]
    dns: ["10.0.0.53"]
    dns_search: ["example.org"]
    cap_add: [NET_ADMIN]
    ulimits:
      nofile: {{soft: 1000, hard: 1000}}
    sysctls:
      net.core.somaxconn: "1024"
    read_only: false
    ports:
      - "18080:80"
      - target: 81
        published: 18081
        mode: host
    volumes:
      - data:/data
      - /tmp:/host-tmp:ro
      - type: tmpfs
        target: /scratch
        tmpfs:
          size: 1048576
    networks:
      back:
        aliases: [backend]
    secrets:
      - token
      - source: token
        target: other
        mode: 0400
    configs:
      - settings
    healthcheck:
      test: ["CMD", "true"]
      interval: 2s
      timeout: 1s
      retries: 3
      start_period: 1s
    logging:
      driver: json-file
      options:
        max-size: 1m
    deploy:
      mode: replicated
      replicas: 1
      endpoint_mode: vip
      labels:
        tier: back
      placement:
        constraints: ["node.role == manager"]
        preferences:
          - spread: node.id
        max_replicas_per_node: 2
      resources:
        limits:
          cpus: "0.5"
          memory: 64M
          pids: 100
        reservations:
          cpus: "0.1"
          memory: 16M
      restart_policy:
        condition: on-failure
        delay: 2s
        max_attempts: 3
        window: 10s
      update_config:
        parallelism: 2
        delay: 1s
        failure_action: rollback
        monitor: 2s
        max_failure_ratio: 0.5
        order: start-first
      rollback_config:
        parallelism: 1
        order: stop-first
  worker:
    image: {IMAGE}
    command: ["sleep", "3600"]
    restart: always
    deploy:
      mode: global
networks:
  back:
    driver: overlay
    attachable: true
    labels:
      purpose: test
    driver_opts:
      encrypted: ""
volumes:
  data:
    labels:
      keep: "yes"
secrets:
  token:
    file: ./token.txt
configs:
  settings:
    file: ./settings.conf
"#
    );
    h.compose("fid", &file);
    h.repo
        .write(&format!("services/{stack}/token.txt"), "t0ken");
    h.repo
        .write(&format!("services/{stack}/settings.conf"), "a = b");
    h.repo.commit("fidelity");
    let dir = h.repo.path().join("services").join(&stack);

    // The oracle first.
    let output = Command::new("docker")
        .current_dir(&dir)
        .args([
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "-c",
            "compose.yaml",
            &stack,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "docker stack deploy: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let oracle = snapshot(&stack);
    remove_stack(&stack).await;

    let server = h.start().await;
    deployed(&server).await;
    let ours = snapshot(&stack);
    server.stop().await;
    remove_stack(&stack).await;

    let differences = differences("", &oracle, &ours);
    assert!(
        differences.is_empty(),
        "stackhook differs from docker stack deploy:\n{}",
        differences.join("\n")
    );
}

/// A stack's services, networks, secrets and configs as `docker inspect` shows their specs,
/// by name, without what differs on every deploy (ids, versions, times) or is stackhook's own
/// (its labels, the content digest in secret and config names).
fn snapshot(namespace: &str) -> Value {
    let label = format!("label=com.docker.stack.namespace={namespace}");
    let mut all = serde_json::Map::new();
    for kind in ["service", "network", "secret", "config"] {
        let names = docker(&[kind, "ls", "--filter", &label, "--format", "{{.Name}}"]);
        for name in names.lines() {
            let inspected: Value = serde_json::from_str(&docker(&[kind, "inspect", name])).unwrap();
            let mut item = inspected[0].clone();
            let spec = match kind {
                "network" => {
                    let mut network = serde_json::Map::new();
                    for field in [
                        "Name",
                        "Driver",
                        "Scope",
                        "Attachable",
                        "Internal",
                        "Labels",
                        "Options",
                        "EnableIPv6",
                    ] {
                        network.insert(field.to_owned(), item[field].clone());
                    }
                    Value::Object(network)
                }
                _ => item["Spec"].take(),
            };
            let mut spec = spec;
            // The engine gives each overlay network its own VXLAN id.
            if let Some(options) = spec["Options"].as_object_mut() {
                options.remove("com.docker.network.driver.overlay.vxlanid_list");
            }
            // The CLI orders one secret's (or config's) references by way of a Go map: in no
            // order at all.
            for kind in ["Secrets", "Configs"] {
                if let Some(references) = spec["TaskTemplate"]["ContainerSpec"][kind].as_array_mut()
                {
                    references.sort_by_key(|reference| reference.to_string());
                }
            }
            // Services name their networks by id: by name they compare.
            if let Some(networks) = spec["TaskTemplate"]["Networks"].as_array_mut() {
                for network in networks {
                    let id = network["Target"].as_str().unwrap_or_default().to_owned();
                    let name = docker(&["network", "inspect", "--format", "{{.Name}}", &id]);
                    network["Target"] = Value::String(name.trim().to_owned());
                }
            }
            all.insert(format!("{kind} {}", strip_digest(name)), normalise(spec));
        }
    }
    Value::Object(all)
}

/// `<stack>_<key>_<digest>` → `<stack>_<key>`.
fn strip_digest(name: &str) -> String {
    match name.rsplit_once('_') {
        Some((base, digest))
            if digest.len() == 12 && digest.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            base.to_owned()
        }
        _ => name.to_owned(),
    }
}

fn normalise(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(key, _)| {
                    !key.starts_with("io.stackhook.") && key != "SecretID" && key != "ConfigID"
                })
                .map(|(key, value)| match (key.as_str(), value) {
                    ("SecretName" | "ConfigName" | "Name", Value::String(name)) => {
                        (key, Value::String(strip_digest(&name)))
                    }
                    (_, value) => (key, normalise(value)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(normalise).collect()),
        other => other,
    }
}

fn differences(path: &str, want: &Value, got: &Value) -> Vec<String> {
    match (want, got) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter()
                .flat_map(|key| {
                    differences(
                        &format!("{path}/{key}"),
                        a.get(key).unwrap_or(&Value::Null),
                        b.get(key).unwrap_or(&Value::Null),
                    )
                })
                .collect()
        }
        (a, b) if a == b => Vec::new(),
        (a, b) => vec![format!("{path}: docker stack deploy {a}, stackhook {b}")],
    }
}

/// The self stack on Swarm: stackhook's own service, bootstrapped by `stackhook deploy`.
const SELF_STACK: &str = r#"services:
  stackhook:
    image: ${SELF_IMAGE}
    command: ["serve"]
    init: true
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock
      - @STATE@:@STATE@
      - @REPO@:@REPO@:ro
    environment:
      STACKHOOK_REPO: @REPO@
      STACKHOOK_BRANCH: main
      STACKHOOK_STATE_DIR: @STATE@
      STACKHOOK_SELF_STACK: @STACK@
      STACKHOOK_WEBHOOK_SECRET: "@SECRET@"
      STACKHOOK_ENGINE_MODE: swarm
      STACKHOOK_LOG: info
    healthcheck:
      test: ["CMD", "/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:1337/ready"]
      interval: 500ms
      timeout: 2s
      retries: 3
      start_period: 5s
    deploy:
      update_config:
        order: start-first
        failure_action: rollback
        monitor: 2s
"#;

/// Issue 12: on Swarm, stackhook updates itself with Swarm's own start-first rolling update of
/// its service, gated by its health check: the new task runs before the old one stops, so some
/// task of it runs at every moment, and the new instance finishes the deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stackhook_updates_itself_with_a_start_first_rolling_update() {
    ensure_swarm();
    let images = crate::self_update::self_images();
    let repo = crate::support::repo::EnvRepo::new();
    let state = tempfile::tempdir().unwrap();
    let stack = format!("t{}selfswarm", std::process::id() % 10_000);
    let compose = SELF_STACK
        .replace("@STATE@", &state.path().display().to_string())
        .replace("@REPO@", &repo.path().display().to_string())
        .replace("@STACK@", &stack)
        .replace("@SECRET@", crate::support::server::SECRET);
    repo.write(&format!("services/{stack}/compose.yaml"), &compose);
    repo.write(
        &format!("services/{stack}/.env"),
        &format!("SELF_IMAGE={}\n", images[0]),
    );
    repo.commit("the self stack");

    // Bootstrapped once by hand, as the README says.
    let mut deploy = Command::new(env!("CARGO_BIN_EXE_stackhook"));
    deploy.arg("deploy");
    for (variable, _) in std::env::vars() {
        if variable.starts_with("STACKHOOK_") {
            deploy.env_remove(variable);
        }
    }
    let output = deploy
        .env("STACKHOOK_REPO", repo.path())
        .env("STACKHOOK_STATE_DIR", state.path())
        .env("STACKHOOK_SELF_STACK", &stack)
        .env("STACKHOOK_ENGINE_MODE", "swarm")
        .env("DOCKER_HOST", "unix:///var/run/docker.sock")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "bootstrapping the self stack: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let service = format!("{stack}_stackhook");

    // A new image for the self stack, pushed to the running instance.
    repo.write(
        &format!("services/{stack}/.env"),
        &format!("SELF_IMAGE={}\n", images[1]),
    );
    let commit = repo.commit("a new stackhook");
    let body = r#"{"ref":"refs/heads/main","after":"0"}"#;
    let signature = stackhook::webhook::sign(
        &stackhook::config::Secret::new(crate::support::server::SECRET.to_owned()),
        body.as_bytes(),
    );
    let filter = format!("label=com.docker.swarm.service.name={service}");
    let task = docker(&["ps", "-q", "--filter", &filter]);
    let old = task.lines().next().expect("the instance runs").to_owned();
    docker(&[
        "exec",
        &old,
        "/bin/busybox",
        "wget",
        "-q",
        "-O",
        "/dev/null",
        "--header",
        "X-GitHub-Event: push",
        "--header",
        &format!("X-Hub-Signature-256: {signature}"),
        "--header",
        "Content-Type: application/json",
        "--post-data",
        body,
        "http://127.0.0.1:1337/hooks/github",
    ]);

    // Until the new instance has recorded the new commit, some task runs at every look.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let state_file = state.path().join("state.json");
    loop {
        let running = docker(&["ps", "-q", "--filter", &filter]);
        assert!(
            !running.trim().is_empty(),
            "no task of {service} ran during its update"
        );
        let recorded = std::fs::read_to_string(&state_file)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|state| {
                state["stacks"][&stack]["commit"]
                    .as_str()
                    .map(str::to_owned)
            });
        let image = service_spec(&service)["TaskTemplate"]["ContainerSpec"]["Image"].clone();
        if recorded.as_deref() == Some(commit.as_str())
            && image == images[1].as_str()
            && running.lines().count() == 1
            && !running.contains(&old[..12])
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the self stack never settled on its new image: recorded {recorded:?}, image {image}, tasks {running}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    remove_stack(&stack).await;
}

/// `STACKHOOK_ENGINE_MODE=swarm` against an engine that is no Swarm manager (Podman has no
/// Swarm) fails each stack with what to do, and touches nothing.
#[tokio::test]
async fn swarm_mode_without_a_swarm_says_what_to_do() {
    let mut h = Harness::new(TestEngine::Podman, "noswarm").await;
    h.set("STACKHOOK_ENGINE_MODE", "swarm");
    h.compose("app", &format!("services:\n  app:\n    image: {IMAGE}\n"));
    h.repo.commit("one");
    let server = h.start().await;
    let health = server.settled().await;
    let id = health["last_deployment"]["id"].as_str().unwrap().to_owned();
    let (_, report) = server.read(&format!("/api/deployments/{id}")).await;
    let error = report["stacks"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no manager of an active swarm") && error.contains("docker swarm init"),
        "{report}"
    );
    assert!(h.containers("app").await.is_empty());
    server.stop().await;
    h.cleanup().await;
}
