//! Tolerant reads: `GET` requests on the engine socket decoded into our own small structs.
//!
//! bollard's state enums have no catch-all, so one container in a state the API spec does not
//! list (Podman's `stopped`) fails a whole list or inspect call (FIELD-NOTES). The listing and
//! the state of containers are read here instead, where an unknown state is just a string.
//! Swarm's services, tasks, secrets and configs are read and written here too, in the API's own
//! JSON (`docker::swarm`). Everything else, and every other write, goes through bollard. Every exchange has a deadline, as
//! bollard's calls do: an engine that accepts a connection and never answers fails the call.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where the engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(String),
    /// `host:port`.
    Tcp(String),
}

/// One entry of `GET /containers/json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    pub id: String,
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub image: String,
    #[serde(rename = "ImageID", default)]
    pub image_id: String,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub state: String,
}

/// The part of `GET /containers/{id}/json` that says how a container is doing.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    pub id: String,
    pub state: ContainerState,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    #[serde(default)]
    pub status: String,
    pub exit_code: Option<i64>,
    pub health: Option<HealthState>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthState {
    #[serde(default)]
    pub status: String,
}

/// `GET path_and_query`, decoded as JSON, within `timeout`. `Ok(None)` on 404.
pub async fn get_json<T: DeserializeOwned>(
    endpoint: &Endpoint,
    path_and_query: &str,
    timeout: Duration,
) -> anyhow::Result<Option<T>> {
    let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let (status, body) = send(endpoint, request.as_bytes(), timeout)
        .await
        .with_context(|| format!("reading the answer to GET {path_and_query}"))?;
    match status {
        200 => serde_json::from_slice(&body)
            .map(Some)
            .with_context(|| format!("decoding the answer to GET {path_and_query}")),
        404 => Ok(None),
        _ => bail!(
            "GET {path_and_query}: status {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ),
    }
}

/// `POST path_and_query` with an empty body; the whole answer, once the engine has finished,
/// within `timeout`.
pub async fn post(
    endpoint: &Endpoint,
    path_and_query: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let request =
        format!("POST {path_and_query} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
    send(endpoint, request.as_bytes(), timeout)
        .await
        .with_context(|| format!("POST {path_and_query}"))
}

/// `method path_and_query` with a JSON body; the status and the answer's body, within `timeout`.
pub async fn send_json(
    endpoint: &Endpoint,
    method: &str,
    path_and_query: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let body = serde_json::to_vec(body)?;
    let mut request = format!(
        "{method} {path_and_query} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    send(endpoint, &request, timeout)
        .await
        .with_context(|| format!("{method} {path_and_query}"))
}

/// Connects, sends an HTTP/1.0 request, so that the engine (Go's net/http in both cases) answers
/// with the whole body and closes the connection, and reads the answer, all within `timeout`.
async fn send(
    endpoint: &Endpoint,
    request: &[u8],
    timeout: Duration,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let exchange = async {
        match endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .with_context(|| format!("connecting to {path}"))?;
                exchange(stream, request).await
            }
            Endpoint::Tcp(address) => {
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .with_context(|| format!("connecting to {address}"))?;
                exchange(stream, request).await
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(answer) => answer,
        Err(_) => bail!(
            "the engine did not answer within {}",
            humantime::format_duration(timeout)
        ),
    }
}

/// Percent-encodes a query value (the JSON of a filter).
pub fn encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    stream.write_all(request).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let body = &response[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status code")?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).context("invalid chunk size")?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).context("truncated chunk")?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_plain_bodies_decode() {
        let plain = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[1]";
        assert_eq!(parse_response(plain).unwrap(), (200, b"[1]".to_vec()));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[1\r\n1\r\n]\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (404, b"[1]".to_vec()));
    }

    #[test]
    fn unknown_state_decodes() {
        let summary: ContainerSummary = serde_json::from_str(
            r#"{"Id":"abc","Names":["/x"],"Image":"bb","ImageID":"sha256:1","Labels":null,"State":"stopped"}"#,
        )
        .unwrap();
        assert_eq!(summary.state, "stopped");
    }

    #[tokio::test]
    async fn an_engine_that_never_answers_fails_the_call() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("engine.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                held.push(connection);
            }
        });
        let endpoint = Endpoint::Unix(socket.display().to_string());
        let error = get_json::<ContainerInspect>(
            &endpoint,
            "/containers/x/json",
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "reading the answer to GET /containers/x/json: the engine did not answer within 200ms"
        );
        silent.abort();
    }

    #[test]
    fn filter_encoding() {
        assert_eq!(
            encode(r#"{"label":["a=b"]}"#),
            "%7B%22label%22%3A%5B%22a%3Db%22%5D%7D"
        );
    }
}
