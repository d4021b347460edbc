//! Issue 10: every forge's route deploys on a real engine: GitLab, Gitea (and Forgejo), Bitbucket
//! Cloud and the generic signed trigger, each with `?wait=true`, each recorded in the history as
//! what triggered its deployment.

use serde_json::{Value, json};
use stackhook::config::Secret;
use stackhook::webhook::Forge;

use crate::support::image::{TestEngine, ensure_image};
use crate::support::server::{Harness, SECRET, Server};

const IMAGE: &str = "stackhook-test/busybox:latest";

fn sleeper(marker: &str) -> String {
    format!(
        "services:\n  app:\n    image: {IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    environment:\n      MARKER: \"{marker}\"\n"
    )
}

/// A push of `commit` to main as `forge` delivers it (headers and a payload shaped as its
/// documentation shows), waiting for the deployment.
fn delivery(forge: Forge, commit: &str) -> (Vec<(&'static str, String)>, Value) {
    match forge {
        Forge::GitLab => (
            vec![
                ("X-Gitlab-Event", "Push Hook".into()),
                ("Idempotency-Key", "gitlab-1".into()),
            ],
            json!({
                "object_kind": "push",
                "event_name": "push",
                "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
                "after": commit,
                "ref": "refs/heads/main",
                "checkout_sha": commit,
                "user_name": "John Smith",
                "user_username": "jsmith",
                "project": { "id": 15, "path_with_namespace": "mike/diaspora" },
                "commits": [{ "id": commit, "message": "Deploy from GitLab\n", "title": "Deploy from GitLab" }],
                "total_commits_count": 1,
            }),
        ),
        Forge::Gitea => (
            vec![
                ("X-Forgejo-Event", "push".into()),
                ("X-Forgejo-Delivery", "forgejo-1".into()),
                ("X-Gitea-Event", "push".into()),
                ("X-Gitea-Delivery", "forgejo-1".into()),
            ],
            json!({
                "ref": "refs/heads/main",
                "before": "28e1879d029cb852e4844d9c718537df08844e03",
                "after": commit,
                "compare_url": "http://localhost:3000/forgejo/webhooks/compare/28e1879...",
                "commits": [{ "id": commit, "message": "Deploy from Forgejo\n" }],
                "head_commit": { "id": commit, "message": "Deploy from Forgejo\n" },
                "pusher": { "id": 1, "login": "forgejo", "full_name": "Forgejo", "username": "forgejo" },
                "sender": { "id": 1, "login": "forgejo", "username": "forgejo" },
            }),
        ),
        Forge::Bitbucket => (
            vec![
                ("X-Event-Key", "repo:push".into()),
                ("X-Request-UUID", "bitbucket-1".into()),
                ("X-Hook-UUID", "d4a7ad1f-0000-4000-8000-000000000000".into()),
                ("X-Attempt-Number", "1".into()),
            ],
            json!({
                "actor": { "type": "user", "display_name": "Emma", "nickname": "emma" },
                "repository": { "type": "repository", "full_name": "team_name/repo_name" },
                "push": { "changes": [{
                    "new": {
                        "type": "branch",
                        "name": "main",
                        "target": { "type": "commit", "hash": commit, "message": "Deploy from Bitbucket\n" },
                    },
                    "old": { "type": "branch", "name": "main", "target": { "type": "commit", "hash": "1e65c05c1d5171631d92438a13901ca7dae9618c" } },
                    "created": false,
                    "forced": false,
                    "closed": false,
                    "truncated": false,
                }] },
            }),
        ),
        Forge::Generic => (
            vec![("Idempotency-Key", "ci-1".into())],
            json!({ "ref": "main" }),
        ),
    }
}

async fn deliver(server: &Server, forge: Forge, commit: &str) -> (u16, Value) {
    let (mut headers, body) = delivery(forge, commit);
    let body = body.to_string();
    let credential = forge.sign(&Secret::new(SECRET), body.as_bytes());
    headers.push((forge.credential_headers()[0], credential));
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    server
        .post(&format!("/hooks/{forge}?wait=true"), &body, &headers)
        .await
}

async fn every_forge_deploys_through_its_route(engine: TestEngine) {
    ensure_image(engine, IMAGE);
    let h = Harness::new(engine, "forges").await;
    let app = h.stack("app");
    h.compose("app", &sleeper("0"));
    h.repo.commit("one stack");
    let server = h.start().await;
    server.settled().await;

    for (forge, event, delivery, pusher, message) in [
        (
            Forge::GitLab,
            json!("Push Hook"),
            json!("gitlab-1"),
            json!("jsmith"),
            json!("Deploy from GitLab\n"),
        ),
        (
            Forge::Gitea,
            json!("push"),
            json!("forgejo-1"),
            json!("forgejo"),
            json!("Deploy from Forgejo\n"),
        ),
        (
            Forge::Bitbucket,
            json!("repo:push"),
            json!("bitbucket-1"),
            json!("Emma"),
            json!("Deploy from Bitbucket\n"),
        ),
        (
            Forge::Generic,
            Value::Null,
            json!("ci-1"),
            Value::Null,
            Value::Null,
        ),
    ] {
        h.compose("app", &sleeper(forge.name()));
        let commit = h.repo.commit(&format!("deploy from {forge}"));
        let (status, report) = deliver(&server, forge, &commit).await;
        assert_eq!(status, 200, "{forge}: {report}");
        assert_eq!(report["commit"], json!(commit), "{forge}: {report}");
        let stacks = report["stacks"].as_array().unwrap();
        assert_eq!(stacks.len(), 1, "{forge}: {report}");
        assert_eq!(stacks[0]["stack"], json!(app), "{forge}: {report}");
        assert_eq!(stacks[0]["outcome"], "deployed", "{forge}: {report}");
        let container = &h.containers("app").await["app"];
        assert_eq!(
            container.label("io.stackhook.commit"),
            Some(commit.as_str()),
            "{forge}: {container:?}"
        );
        assert_eq!(container.state, stackhook::engine::State::Running);

        // The history says which delivery of which event, by whom, with which message.
        let (status, list) = server.read("/api/deployments?limit=1").await;
        assert_eq!(status, 200, "{list}");
        let trigger = &list[0]["triggers"][0];
        assert_eq!(trigger["kind"], "webhook", "{forge}: {list}");
        assert_eq!(trigger["event"], event, "{forge}: {list}");
        assert_eq!(trigger["delivery"], delivery, "{forge}: {list}");
        assert_eq!(trigger["pusher"], pusher, "{forge}: {list}");
        assert_eq!(trigger["message"], message, "{forge}: {list}");

        // The same delivery again is recognised and runs nothing.
        let (status, answer) = deliver(&server, forge, &commit).await;
        assert_eq!(status, 200, "{forge}: {answer}");
        assert_eq!(
            answer["ignored"],
            json!(format!("duplicate delivery {}", delivery.as_str().unwrap())),
            "{forge}: {answer}"
        );
    }

    server.stop().await;
    h.cleanup().await;
}

crate::engine_tests!(every_forge_deploys_through_its_route);
