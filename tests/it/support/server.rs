//! A stackhook server on 127.0.0.1:0 against a real engine and a throwaway repository, and the
//! signed requests a test sends it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use stackhook::config::{Config, Secret};
use stackhook::engine::docker;
use stackhook::engine::{Container, Engine};
use tokio::sync::oneshot;

use super::image::TestEngine;
use super::repo::EnvRepo;

pub const SECRET: &str = "test webhook secret";
pub const TOKEN: &str = "test api token";

/// One test's world: a repository, a state directory and an engine.
pub struct Harness {
    pub repo: EnvRepo,
    pub state_dir: tempfile::TempDir,
    pub engine: TestEngine,
    pub docker: Arc<dyn Engine>,
    /// Prefixes every stack name, so that tests running at once never share a project.
    pub prefix: String,
    pub settings: BTreeMap<String, String>,
}

impl Harness {
    pub async fn new(engine: TestEngine, test: &str) -> Harness {
        let docker = docker::connect(&[engine.host()])
            .await
            .unwrap_or_else(|error| panic!("{error:#}\nstart the engines with scripts/engines.sh"));
        let prefix = format!("t{}{test}", std::process::id() % 10_000);
        let repo = EnvRepo::new();
        let state_dir = tempfile::tempdir().unwrap();
        let settings = BTreeMap::from(
            [
                ("STACKHOOK_REPO", repo.url()),
                (
                    "STACKHOOK_STATE_DIR",
                    state_dir.path().display().to_string(),
                ),
                ("STACKHOOK_LISTEN", "127.0.0.1:0".to_owned()),
                ("STACKHOOK_WEBHOOK_SECRET", SECRET.to_owned()),
                ("STACKHOOK_API_TOKEN", TOKEN.to_owned()),
                ("DOCKER_HOST", engine.host()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        Harness {
            repo,
            state_dir,
            engine,
            docker: Arc::new(docker),
            prefix,
            settings,
        }
    }

    /// The stack name used for `name` in this test.
    pub fn stack(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Writes `services/<stack>/compose.yaml`.
    pub fn compose(&self, name: &str, yaml: &str) -> &Self {
        self.repo
            .write(&format!("services/{}/compose.yaml", self.stack(name)), yaml);
        self
    }

    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        self.settings.insert(name.to_owned(), value.to_owned());
        self
    }

    /// The `stackhook` binary with this test's settings as its whole environment.
    pub fn stackhook(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_stackhook"));
        command
            .args(args)
            .env_clear()
            .envs(&self.settings)
            .env("PATH", std::env::var("PATH").unwrap());
        command
    }

    pub fn config(&self) -> Config {
        Config::from_sources(None, &self.settings).expect("test config")
    }

    /// Containers of one stack's project, by service name.
    pub async fn containers(&self, name: &str) -> BTreeMap<String, Container> {
        self.docker
            .containers(Some(&self.stack(name)))
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.labels["com.docker.compose.service"].clone(), c))
            .collect()
    }

    /// Removes everything this test's projects made, volumes included.
    pub async fn cleanup(&self) {
        let mine = format!("{}-", self.prefix);
        let mut projects = std::collections::BTreeSet::new();
        for container in self.docker.containers(None).await.unwrap() {
            let project = container.label("com.docker.compose.project").unwrap_or("");
            if project.starts_with(&mine) {
                projects.insert(project.to_owned());
                let _ = self.docker.remove(&container.id).await;
            }
        }
        // Projects that never got a container can still have a network.
        if let Ok(entries) = std::fs::read_dir(self.repo.path().join("services")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&mine) {
                    projects.insert(name);
                }
            }
        }
        for project in projects {
            for network in self.docker.networks(&project).await.unwrap_or_default() {
                let _ = self.docker.remove_network(&network).await;
            }
        }
    }

    pub async fn start(&self) -> Server {
        Server::start(self.config(), Arc::clone(&self.docker)).await
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub async fn start(config: Config, engine: Arc<dyn Engine>) -> Server {
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, receiver) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = receiver.await;
        };
        let task = tokio::spawn(stackhook::cli::serve_on(
            Arc::new(config),
            engine,
            listener,
            shutdown,
        ));
        Server {
            addr,
            client: reqwest::Client::new(),
            shutdown: Some(sender),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        into_parts(response).await
    }

    /// A GET with the API token, as the read API wants it.
    pub async fn read(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        into_parts(response).await
    }

    /// Posts a GitHub delivery signed with the test secret.
    pub async fn github(&self, path: &str, event: &str, body: &str) -> (u16, Value) {
        let signature = stackhook::webhook::sign(&Secret::new(SECRET), body.as_bytes());
        self.post(
            path,
            body,
            &[
                ("X-GitHub-Event", event),
                ("X-Hub-Signature-256", &signature),
            ],
        )
        .await
    }

    /// A signed push of `branch`, waiting for the deployment to finish.
    pub async fn push(&self, branch: &str) -> (u16, Value) {
        let body = serde_json::json!({ "ref": format!("refs/heads/{branch}"), "after": "0" });
        self.github("/hooks/github?wait=true", "push", &body.to_string())
            .await
    }

    pub async fn post(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut request = self.client.post(self.url(path)).body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        into_parts(request.send().await.unwrap()).await
    }

    /// Waits for the first deployment (the one at start) to finish; returns `/health`'s view of it.
    pub async fn settled(&self) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let (_, health) = self.get("/health").await;
            if !health["last_deployment"].is_null() && health["deploying"] == false {
                return health;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no deployment finished: {health}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

async fn into_parts(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}
