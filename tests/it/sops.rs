//! SOPS-encrypted files in stacks (issue 10), made by the real `sops` with a key from the real
//! `age-keygen`: their values reach the containers, never the records; encrypting them again
//! deploys nothing; a file that does not verify or open fails its stack alone. And host-local
//! values from `STACKHOOK_LOCAL_ENV_DIR`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::image::{TestEngine, cli_output, ensure_image};
use crate::support::server::{Harness, Server};
use crate::support::sops::AgeKey;

const IMAGE: &str = "stackhook-test/busybox:latest";

// The services need no network, and take none from the engine's few address pools.

const SEALED: &str = "services:
  app:
    image: stackhook-test/busybox:latest
    init: true
    command: [\"sleep\", \"3600\"]
    network_mode: none
    environment:
      PASSWORD: ${DB_PASSWORD}
    env_file: app.env
    secrets: [token]
secrets:
  token:
    file: ./token.json
";

const PLAIN: &str = "services:
  app:
    image: stackhook-test/busybox:latest
    init: true
    command: [\"sleep\", \"3600\"]
    network_mode: none
    environment:
      ROUND: \"1\"
";

/// Writes the sealed stack's three SOPS files, encrypted afresh.
fn seal(h: &Harness, key: &AgeKey, stack: &str, password: &str, token: &str) {
    let dir = format!("services/{}", h.stack(stack));
    let files = [
        (".env", format!("DB_PASSWORD={password}\n")),
        ("app.env", "API_KEY=k3y-7d41c\n".to_owned()),
        ("token.json", format!("{{\"token\": \"{token}\"}}")),
    ];
    for (name, plain) in files {
        h.repo
            .write(&format!("{dir}/{name}"), &key.encrypt(name, &plain));
    }
}

fn harness_settings(h: &mut Harness, key: &AgeKey) {
    h.set("STACKHOOK_AGE_KEY_FILE", key.file.to_str().unwrap());
}

/// The container of a stack's `app` service: its id, and what `command` prints in it.
async fn app(h: &Harness, stack: &str, command: &[&str]) -> (String, String) {
    let containers = h.containers(stack).await;
    let container = &containers["app"];
    let mut args = vec!["exec", container.name.as_str()];
    args.extend(command);
    (container.id.clone(), cli_output(h.engine, &args))
}

/// Every file under `dir` but the decrypted secret files, which must hold the values.
fn files_outside_secrets(dir: &Path, found: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name() != Some("secrets".as_ref()) {
                files_outside_secrets(&path, found);
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            found.push((path.display().to_string(), bytes));
        }
    }
}

/// Asserts that none of `values` is in the state directory (state, history records and logs,
/// the checkout) outside `secrets/`, or in what the API answers.
async fn nowhere_but_the_containers(h: &Harness, server: &Server, values: &[&str]) {
    let mut files = Vec::new();
    files_outside_secrets(h.state_dir.path(), &mut files);
    let (_, deployments) = server.read("/api/deployments").await;
    let mut answers = vec![
        deployments.to_string(),
        server.read("/api/stacks").await.1.to_string(),
    ];
    for deployment in deployments.as_array().into_iter().flatten() {
        let id = deployment["deployment"].as_str().unwrap_or_default();
        answers.push(
            server
                .read(&format!("/api/deployments/{id}"))
                .await
                .1
                .to_string(),
        );
        answers.push(
            server
                .read(&format!("/api/deployments/{id}/log"))
                .await
                .1
                .to_string(),
        );
    }
    for value in values {
        for (path, bytes) in &files {
            let text = String::from_utf8_lossy(bytes);
            assert!(!text.contains(value), "{value} is in {path}");
        }
        for answer in &answers {
            assert!(
                !answer.contains(value),
                "{value} is in an API answer: {answer}"
            );
        }
    }
    assert!(
        answers.len() > 2,
        "the API lists the deployments: {answers:?}"
    );
}

async fn sops_values_reach_the_container_and_nothing_else(engine: TestEngine) {
    ensure_image(engine, IMAGE);
    let mut h = Harness::new(engine, "sopsvalues").await;
    let key = AgeKey::new();
    harness_settings(&mut h, &key);
    h.compose("sealed", SEALED).compose("other", PLAIN);
    seal(&h, &key, "sealed", "pw-51f0e2", "tok-8c2a9b");
    h.repo.commit("sealed stack");
    let server = h.start().await;
    let health = server.settled().await;
    assert_eq!(health["last_deployment"]["succeeded"], true, "{health}");

    let (first, environment) = app(&h, "sealed", &["env"]).await;
    assert!(
        environment.contains("PASSWORD=pw-51f0e2\n"),
        "{environment}"
    );
    assert!(environment.contains("API_KEY=k3y-7d41c\n"), "{environment}");
    let (_, token) = app(&h, "sealed", &["cat", "/run/secrets/token"]).await;
    let token: serde_json::Value = serde_json::from_str(&token).unwrap();
    assert_eq!(token["token"], "tok-8c2a9b");
    let written = h
        .state_dir
        .path()
        .join("secrets")
        .join(h.stack("sealed"))
        .join("secret-token");
    let mode = std::fs::metadata(&written).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", written.display());
    nowhere_but_the_containers(&h, &server, &["pw-51f0e2", "tok-8c2a9b", "k3y-7d41c"]).await;

    // SOPS encrypts the same values again: new IVs, a new `lastmodified`, nothing to deploy.
    seal(&h, &key, "sealed", "pw-51f0e2", "tok-8c2a9b");
    h.repo.commit("sops rotated the same values");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    let sealed = h.stack("sealed");
    let outcome = |report: &serde_json::Value| {
        report["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|stack| stack["stack"] == sealed.as_str())
            .map(|stack| stack["outcome"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(outcome(&report).as_deref(), Some("unchanged"), "{report}");
    assert_eq!(app(&h, "sealed", &["true"]).await.0, first);

    // A value changes: the service is recreated with it.
    seal(&h, &key, "sealed", "pw-2b77aa", "tok-0d9e13");
    h.repo.commit("new password and token");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(outcome(&report).as_deref(), Some("deployed"), "{report}");
    let (second, environment) = app(&h, "sealed", &["env"]).await;
    assert_ne!(second, first);
    assert!(
        environment.contains("PASSWORD=pw-2b77aa\n"),
        "{environment}"
    );
    let (_, token) = app(&h, "sealed", &["cat", "/run/secrets/token"]).await;
    assert!(token.contains("tok-0d9e13"), "{token}");
    nowhere_but_the_containers(&h, &server, &["pw-2b77aa", "tok-0d9e13", "pw-51f0e2"]).await;

    // The stack goes: so does its decrypted file.
    h.repo.remove(&format!("services/{sealed}"));
    h.repo.commit("sealed stack gone");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(outcome(&report).as_deref(), Some("pruned"), "{report}");
    assert!(!written.parent().unwrap().exists(), "{}", written.display());

    server.stop().await;
    h.cleanup().await;
}

async fn a_sops_file_that_does_not_verify_or_open_fails_its_stack_alone(engine: TestEngine) {
    ensure_image(engine, IMAGE);
    let mut h = Harness::new(engine, "sopsbad").await;
    let key = AgeKey::new();
    harness_settings(&mut h, &key);
    h.compose("sealed", SEALED).compose("other", PLAIN);
    seal(&h, &key, "sealed", "pw-3e1f", "tok-3e1f");
    h.repo.commit("two stacks");
    let server = h.start().await;
    let health = server.settled().await;
    let deployments = server.read("/api/deployments").await.1;
    assert_eq!(
        health["last_deployment"]["succeeded"], true,
        "{deployments}"
    );
    let (running, _) = app(&h, "sealed", &["true"]).await;

    let sealed = h.stack("sealed");
    let dotenv = h.repo.path().join(format!("services/{sealed}/.env"));
    let stack_report = |report: &serde_json::Value, stack: &str| {
        report["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["stack"] == stack)
            .cloned()
            .unwrap_or_default()
    };
    for (case, expected) in [
        (
            "tampered",
            "its SOPS MAC does not verify: the value of DB_PASSWORD was changed after SOPS encrypted it",
        ),
        (
            "other key",
            "no configured age key opens it (it is encrypted to age1",
        ),
    ] {
        let text = std::fs::read_to_string(&dotenv).unwrap();
        let changed = match case {
            "tampered" => text.replacen(
                "DB_PASSWORD=ENC[AES256_GCM,data:",
                "DB_PASSWORD=ENC[AES256_GCM,data:AAAA",
                1,
            ),
            _ => AgeKey::new().encrypt(".env", "DB_PASSWORD=pw-3e1f\n"),
        };
        std::fs::write(&dotenv, changed).unwrap();
        h.compose(
            "other",
            &PLAIN.replace("ROUND: \"1\"", &format!("ROUND: {case:?}")),
        );
        h.repo.commit(case);
        let (status, answer) = server.push("main").await;
        assert_eq!(status, 500, "{answer}");
        let report = &answer["report"];
        let failed = stack_report(report, &sealed);
        assert_eq!(failed["outcome"], "failed", "{report}");
        let error = failed["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(".env: ") && error.contains(expected),
            "{case}: {error}"
        );
        let other = stack_report(report, &h.stack("other"));
        assert_eq!(other["outcome"], "deployed", "{case}: {report}");
        // What ran keeps running.
        let containers = h.containers("sealed").await;
        assert_eq!(containers["app"].id, running, "{case}");
        assert!(app(&h, "sealed", &["true"]).await.1.is_empty());
    }

    server.stop().await;
    h.cleanup().await;
}

async fn local_env_values_override_dotenv_and_redeploy_when_changed(engine: TestEngine) {
    ensure_image(engine, IMAGE);
    let mut h = Harness::new(engine, "localenv").await;
    let local = tempfile::tempdir().unwrap();
    h.set("STACKHOOK_LOCAL_ENV_DIR", local.path().to_str().unwrap());
    let stack = h.stack("app");
    h.compose(
        "app",
        &PLAIN.replace(
            "ROUND: \"1\"",
            "GREETING: ${GREETING}\n      OTHER: ${OTHER}",
        ),
    );
    h.repo.write(
        &format!("services/{stack}/.env"),
        "GREETING=from-git\nOTHER=kept\n",
    );
    h.repo.commit("greeting");
    let local_file = local.path().join(format!("{stack}.env"));
    std::fs::write(&local_file, "GREETING=from-host\n").unwrap();
    let server = h.start().await;
    let health = server.settled().await;
    assert_eq!(health["last_deployment"]["succeeded"], true, "{health}");
    let (first, environment) = app(&h, "app", &["env"]).await;
    assert!(
        environment.contains("GREETING=from-host\n"),
        "{environment}"
    );
    assert!(environment.contains("OTHER=kept\n"), "{environment}");

    // Nothing changed: nothing is deployed.
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["stacks"][0]["outcome"], "unchanged", "{report}");

    // The host's file changes, with no commit: the next pass redeploys the service.
    std::fs::write(&local_file, "GREETING=from-host-again\n").unwrap();
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["stacks"][0]["outcome"], "deployed", "{report}");
    let (second, environment) = app(&h, "app", &["env"]).await;
    assert_ne!(second, first);
    assert!(
        environment.contains("GREETING=from-host-again\n"),
        "{environment}"
    );

    // Without it, `.env` counts again.
    std::fs::remove_file(&local_file).unwrap();
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    let (_, environment) = app(&h, "app", &["env"]).await;
    assert!(environment.contains("GREETING=from-git\n"), "{environment}");

    server.stop().await;
    h.cleanup().await;
}

crate::engine_tests!(
    sops_values_reach_the_container_and_nothing_else,
    a_sops_file_that_does_not_verify_or_open_fails_its_stack_alone,
    local_env_values_override_dotenv_and_redeploy_when_changed,
);
