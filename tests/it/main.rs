//! stackhook's integration tests: one binary, against real engines.

/// Runs each named `async fn(TestEngine)` once against Docker and once against Podman, as
/// `<module>::docker::<name>` and `<module>::podman::<name>`.
#[macro_export]
macro_rules! engine_tests {
    ($($name:ident),* $(,)?) => {
        mod docker {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::support::image::TestEngine::Docker).await
                }
            )*
        }
        mod podman {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::support::image::TestEngine::Podman).await
                }
            )*
        }
    };
}

mod cli;
mod engine;
mod fidelity;
mod forges;
mod history;
mod hooks;
mod hosts;
mod http;
mod packaging;
mod page;
mod pipeline;
mod registry;
mod rollback;
mod safety;
mod scale;
mod self_update;
mod sops;
mod support;
mod swarm;
