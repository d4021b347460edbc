//! A minimal image registry on 127.0.0.1:0, speaking just enough of the Docker Registry HTTP
//! API v2 for an engine to pull from it: the version check, manifests by tag or digest, and
//! blobs by digest.
//!
//! It does not take pushes, authenticate, list tags or serve ranges. Images are made in the
//! test: uncompressed layers holding busybox and a release file, and a config whose `version` label tells the
//! releases apart. Engines treat `127.0.0.0/8` as
//! an insecure registry and pull from it over plain HTTP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

/// Manifest and blob media types of the image manifest v2, schema 2.
const MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// A running registry. Dropping it stops the server.
pub struct Registry {
    pub addr: SocketAddr,
    content: Arc<Mutex<Content>>,
    _shutdown: oneshot::Sender<()>,
}

/// What the registry serves: blobs and manifests by digest, and tags pointing at manifests.
#[derive(Default)]
struct Content {
    blobs: HashMap<String, Vec<u8>>,
    manifests: HashMap<String, Vec<u8>>,
    /// `(repository, tag)` → manifest digest.
    tags: HashMap<(String, String), String>,
    /// Every request as `METHOD path`, in order, so that a test can tell what an engine asked.
    requests: Vec<String>,
}

impl Registry {
    pub async fn start() -> Registry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let content = Arc::new(Mutex::new(Content::default()));
        let router = Router::new().fallback({
            let content = Arc::clone(&content);
            move |method: Method, uri: Uri| {
                let content = Arc::clone(&content);
                async move { serve(&content, &method, &uri) }
            }
        });
        let (sender, receiver) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = receiver.await;
                })
                .await
                .unwrap();
        });
        Registry {
            addr,
            content,
            _shutdown: sender,
        }
    }

    /// The full image reference for `repository:tag` on this registry.
    pub fn reference(&self, repository: &str, tag: &str) -> String {
        format!("{}/{repository}:{tag}", self.addr)
    }

    /// Publishes a busybox image under `repository:tag` whose config carries the label
    /// `version=<version>`; a tag published again points at the new image. Returns the image
    /// id an engine gives the image once pulled: the digest of its config.
    ///
    /// The image has two layers: busybox, the same in every image, and a small one holding
    /// `/etc/release`, new with every call. So an engine that pulled (or imported) busybox
    /// before still downloads one layer, and no two calls make the same image id, even across
    /// test runs.
    pub fn publish(&self, repository: &str, tag: &str, version: &str) -> String {
        let base = super::image::busybox_rootfs();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let release = release_layer(&format!("{repository} {version} {nanos}\n"));
        let layers = [base, release];
        // The layers are not compressed, so their diff ids are their digests.
        let digests: Vec<String> = layers.iter().map(|layer| digest(layer)).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Cmd": ["sleep", "3600"],
                "Env": ["PATH=/bin"],
                "Labels": { "version": version },
            },
            "rootfs": { "type": "layers", "diff_ids": digests },
            "history": [
                { "created_by": "busybox" },
                { "created_by": format!("release {version}") },
            ],
        }))
        .unwrap();
        let config_digest = digest(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": { "mediaType": CONFIG, "size": config.len(), "digest": config_digest },
            "layers": layers.iter().zip(&digests).map(|(layer, digest)| json!({
                "mediaType": LAYER,
                "size": layer.len(),
                "digest": digest,
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        let manifest_digest = digest(&manifest);
        let mut content = self.content.lock().unwrap();
        for (layer, digest) in layers.into_iter().zip(digests) {
            content.blobs.insert(digest, layer);
        }
        content.blobs.insert(config_digest.clone(), config);
        content.manifests.insert(manifest_digest.clone(), manifest);
        content
            .tags
            .insert((repository.to_owned(), tag.to_owned()), manifest_digest);
        config_digest
    }

    /// The digest of the manifest `repository:tag` names now, as a pull records it in the
    /// image's `RepoDigests`.
    pub fn digest(&self, repository: &str, tag: &str) -> String {
        let content = self.content.lock().unwrap();
        content.tags[&(repository.to_owned(), tag.to_owned())].clone()
    }

    /// The requests served so far, as `METHOD path`.
    pub fn requests(&self) -> Vec<String> {
        self.content.lock().unwrap().requests.clone()
    }
}

fn serve(content: &Mutex<Content>, method: &Method, uri: &Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let path = uri.path();
    let mut content = content.lock().unwrap();
    content.requests.push(format!("{method} {path}"));
    let found = if path == "/v2/" || path == "/v2" {
        Some((Vec::from(&b"{}"[..]), "application/json", None))
    } else if let Some((repository, reference)) = split(path, "/manifests/") {
        let digest = if reference.starts_with("sha256:") {
            Some(reference.to_owned())
        } else {
            content
                .tags
                .get(&(repository.to_owned(), reference.to_owned()))
                .cloned()
        };
        digest.and_then(|digest| {
            let manifest = content.manifests.get(&digest)?.clone();
            Some((manifest, MANIFEST, Some(digest)))
        })
    } else if let Some((_, digest)) = split(path, "/blobs/") {
        content.blobs.get(digest).map(|blob| {
            (
                blob.clone(),
                "application/octet-stream",
                Some(digest.to_owned()),
            )
        })
    } else {
        None
    };
    let Some((body, content_type, digest)) = found else {
        let error = json!({ "errors": [{ "code": "NOT_FOUND", "message": path }] });
        return (StatusCode::NOT_FOUND, axum::Json(error)).into_response();
    };
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    if let Some(digest) = digest {
        headers.insert(
            "Docker-Content-Digest",
            HeaderValue::from_str(&digest).unwrap(),
        );
    }
    if method == Method::GET {
        *response.body_mut() = Body::from(body);
    }
    response
}

/// Splits `/v2/<repository><separator><rest>`; repositories may hold slashes.
fn split<'a>(path: &'a str, separator: &str) -> Option<(&'a str, &'a str)> {
    let rest = path.strip_prefix("/v2/")?;
    let (repository, reference) = rest.rsplit_once(separator)?;
    Some((repository, reference))
}

/// A layer holding only `/etc/release` with `contents`.
fn release_layer(contents: &str) -> Vec<u8> {
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(contents.len() as u64);
    archive
        .append_data(&mut header, "etc/release", contents.as_bytes())
        .unwrap();
    archive.into_inner().unwrap()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
