//! The accept loop: HTTP/1 connections from a `TcpListener`, with the limits `axum::serve` does
//! not offer (issue 9). It knows hyper, not the routes.
//!
//! Memory stays bounded whatever clients do: at most `config.max_connections` connections are
//! served at once (the rest wait in the kernel's listen backlog); a connection must send each
//! request's headers within `config.header_read_timeout`, whether it is new or kept alive
//! between requests, or it is closed; hyper buffers at most `MAX_BUFFER` of them. A deploy
//! route's body is then read within `config.request_timeout` (`caller`); what the handler does
//! afterwards, such as waiting for a `?wait=true` deploy, has no deadline here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Config;

/// hyper's read buffer per connection, which bounds a request's headers. GitHub's are a few KB.
const MAX_BUFFER: usize = 64 * 1024;

/// Serves `app` until `shutdown` completes, then waits for the connections' requests in flight.
pub async fn run(
    listener: TcpListener,
    app: Router,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(MAX_BUFFER);
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // Take a place before accepting, so that a full server leaves new connections queued.
        let place = tokio::select! {
            () = &mut shutdown => break,
            place = Arc::clone(&connections).acquire_owned() => place?,
        };
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a moment rather than spin (as `axum::serve` does).
                    tracing::warn!("accepting a connection: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!("connection closed: {error}");
            }
            drop(place);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
