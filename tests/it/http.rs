//! The server's limits on slow and idle connections, over raw TCP on loopback (issue 9).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::image::TestEngine;
use crate::support::server::Harness;

const HEADER_READ_TIMEOUT: Duration = Duration::from_millis(500);
/// Generous, for a loaded machine; the server should close connections after half a second.
const DEADLINE: Duration = Duration::from_secs(10);

/// Reads until the server closes the connection; panics if it has not within `DEADLINE`.
async fn until_closed(stream: &mut TcpStream, what: &str) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut received))
        .await
        .unwrap_or_else(|_| panic!("{what}: still open after {DEADLINE:?}"))
        .unwrap_or_default();
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_and_capped() {
    let mut h = Harness::new(TestEngine::Docker, "slow").await;
    h.set("STACKHOOK_HEADER_READ_TIMEOUT", "500ms")
        .set("STACKHOOK_MAX_CONNECTIONS", "2");
    h.repo.write("README.md", "empty\n");
    h.repo.commit("empty");
    let server = h.start().await;

    // Two connections take both places: one sends half its headers, one nothing at all.
    let opened = Instant::now();
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial
        .write_all(b"POST /hooks/github HTTP/1.1\r\nHost: stackhook\r\nX-GitHub-Event: pu")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();

    // A third waits for a place, which frees only when the header timeout closes one of them.
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third
        .write_all(b"GET /ready HTTP/1.1\r\nHost: stackhook\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut third, "a request waiting for a place").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        opened.elapsed() >= HEADER_READ_TIMEOUT,
        "answered after {:?}, before a place was free",
        opened.elapsed()
    );
    until_closed(&mut partial, "a connection that sent half its headers").await;
    until_closed(&mut silent, "a connection that sent nothing").await;

    // A kept-alive connection that goes quiet after a request is closed too.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /ready HTTP/1.1\r\nHost: stackhook\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut idle, "an idle kept-alive connection").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    server.stop().await;
}
