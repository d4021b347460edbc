//! stackhook keeps a host's compose stacks in step with a git repository.
//!
//! Reading order, which is also the order a deployment flows through:
//!
//! - [`config`]: settings from a TOML file and the environment, validated once.
//! - [`webhook`]: GitHub's contract: signature check and event payloads, no IO.
//! - [`repo`]: git sync of the environment repository to the branch head.
//! - [`stack`]: what should run: stack discovery, the compose model, fingerprints.
//! - [`engine`]: the boundary to Docker or Podman.
//! - [`store`]: what was deployed, persisted atomically; the deploy lock.
//! - [`deploy`]: plan (pure), apply, and the single-flight worker.
//! - [`http`]: the HTTP API, the only module that knows axum.
//! - [`cli`]: the command line, calling into the modules above.

pub mod cli;
pub mod config;
pub mod deploy;
pub mod engine;
pub mod http;
pub mod repo;
pub mod stack;
pub mod store;
pub mod webhook;
