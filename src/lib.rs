//! stackhook keeps a host's compose stacks in step with a git repository.
//!
//! Reading order, which is also the order a deployment flows through:
//!
//! - [`config`]: settings from a TOML file and the environment, validated once.
//! - [`webhook`]: GitHub's and the other forges' contracts: signature checks and event payloads,
//!   no IO.
//! - [`repo`]: git sync of the environment repository to the branch head.
//! - [`stack`]: what should run: stack discovery, the compose model, fingerprints.
//! - [`engine`]: the boundary to Docker or Podman.
//! - [`store`]: what was deployed, persisted atomically; the deploy lock.
//! - [`history`]: every deployment's record and log, kept across restarts.
//! - [`metrics`]: counters for Prometheus.
//! - [`slot`]: the A/B slots of a self-updating stackhook and which one is active.
//! - [`deploy`]: plan (pure), apply, and the worker with its per-stack lanes.
//! - [`notify`]: a message to Discord, Slack, ntfy or a JSON webhook when a deployment ends.
//! - [`http`]: the HTTP API, the only module that knows axum.
//! - [`cli`]: the command line, calling into the modules above.

pub mod config;
pub mod webhook;
pub mod repo;
pub mod stack;
pub mod engine;
pub mod store;
pub mod history;
pub mod metrics;
pub mod slot;
pub mod deploy;
pub mod notify;
pub mod http;
pub mod cli;
