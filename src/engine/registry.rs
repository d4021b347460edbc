//! The Docker Registry HTTP API v2, as far as the image check needs it: the digest a tag names
//! now, from a `HEAD` of its manifest. It serves the engines that cannot say (Podman 4.3 answers
//! `GET /distribution/{name}/json` with 404: it has no such route); Docker asks the registry
//! itself through that endpoint.
//!
//! Anonymous, as stackhook's pulls are: a registry that wants a token (Docker Hub, ghcr.io) gets
//! an anonymous one from the realm its `WWW-Authenticate` names. A registry on the host's loopback
//! is spoken to over plain HTTP, as both engines reach one; any other over HTTPS. It does not
//! read the engine's mirrors, insecure registries or credentials.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use sha2::{Digest, Sha256};

/// The manifest kinds a pull accepts, lists first: the digest a tag names is the list's where it
/// names one, as the engines record it in an image's `RepoDigests`.
const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
];

/// How long one exchange with a registry (or its token service) may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A tag reference taken apart: where its registry's API is, the repository in it, the tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    /// `host[:port]` of the registry's API (Docker Hub's is `registry-1.docker.io`).
    pub host: String,
    pub repository: String,
    pub tag: String,
}

impl Tagged {
    /// Takes apart a reference as the engines read it: `nginx` is `docker.io/library/nginx:latest`,
    /// a first part with a `.` or a `:`, or `localhost`, is a registry. A reference by digest
    /// (`name@sha256:…`) names no tag and is refused.
    pub fn parse(reference: &str) -> anyhow::Result<Tagged> {
        if reference.contains('@') {
            bail!("{reference} names a digest, not a tag");
        }
        let (name, tag) = match reference.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, tag),
            _ => (reference, "latest"),
        };
        let (host, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first, rest.to_owned())
            }
            Some(_) => ("docker.io", name.to_owned()),
            None => ("docker.io", format!("library/{name}")),
        };
        if repository.is_empty() || tag.is_empty() {
            bail!("{reference:?} is not an image reference");
        }
        let host = match host {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            other => other,
        };
        Ok(Tagged {
            host: host.to_owned(),
            repository,
            tag: tag.to_owned(),
        })
    }

    fn manifest_url(&self) -> String {
        let scheme = if loopback(&self.host) {
            "http"
        } else {
            "https"
        };
        format!(
            "{scheme}://{}/v2/{}/manifests/{}",
            self.host, self.repository, self.tag
        )
    }
}

/// The digest `reference` names in its registry now.
pub async fn digest(reference: &str) -> anyhow::Result<String> {
    let tagged = Tagged::parse(reference)?;
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .context("making an HTTP client")?;
    let url = tagged.manifest_url();
    let head = |token: Option<String>| {
        let mut request = client.head(&url).header(ACCEPT, MANIFEST_TYPES.join(", "));
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        request.send()
    };
    let asked = || format!("asking {} for {reference}", tagged.host);
    let mut response = head(None).await.with_context(asked)?;
    if response.status() == StatusCode::UNAUTHORIZED {
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .with_context(|| format!("{}: 401 without a WWW-Authenticate", tagged.host))?;
        let token = anonymous_token(&client, &challenge, &tagged)
            .await
            .with_context(|| format!("getting an anonymous token for {reference}"))?;
        response = head(Some(token)).await.with_context(asked)?;
    }
    match response.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => bail!("{reference}: the registry has no such tag"),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            bail!("{reference}: the registry wants credentials, which stackhook does not have")
        }
        status => bail!("{reference}: the registry answered {status}"),
    }
    if let Some(digest) = response
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|value| value.to_str().ok())
    {
        return Ok(digest.to_owned());
    }
    // A registry need not send the digest; the manifest's own bytes give it.
    let body = client
        .get(&url)
        .header(ACCEPT, MANIFEST_TYPES.join(", "))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(asked)?
        .bytes()
        .await
        .with_context(asked)?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(&body))))
}

/// An anonymous pull token from the realm of a `Bearer` challenge (the registry token
/// protocol, as Docker Hub and ghcr.io speak it).
async fn anonymous_token(
    client: &reqwest::Client,
    challenge: &str,
    tagged: &Tagged,
) -> anyhow::Result<String> {
    let parameters = challenge_parameters(challenge)
        .with_context(|| format!("not a Bearer challenge: {challenge}"))?;
    let get = |key: &str| {
        parameters
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value.as_str())
    };
    let realm = get("realm").context("the challenge names no realm")?;
    let scope = get("scope")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("repository:{}:pull", tagged.repository));
    let mut query = vec![("scope", scope.as_str())];
    if let Some(service) = get("service") {
        query.push(("service", service));
    }
    let body = client
        .get(realm)
        .query(&query)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("asking {realm}"))?
        .bytes()
        .await?;
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(&body).context("reading the token")?;
    answer
        .token
        .or(answer.access_token)
        .context("the token service answered no token")
}

/// The parameters of a `Bearer` challenge: `Bearer realm="…",service="…",scope="…"`. Values
/// may be quoted, and a quoted value may hold commas (a scope of several actions).
fn challenge_parameters(challenge: &str) -> Option<Vec<(String, String)>> {
    let (scheme, rest) = challenge.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut parameters = Vec::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(',').unwrap_or((after, "")),
        };
        parameters.push((name.trim().to_owned(), value.to_owned()));
        rest = after.trim_start_matches([',', ' ']);
    }
    Some(parameters)
}

/// Whether a registry host (`host[:port]`) is this host's loopback (`localhost:5000`,
/// `127.0.0.1:5000`), which the engines reach over plain HTTP by default.
pub fn loopback(host: &str) -> bool {
    let host = match host.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => host,
    };
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(reference: &str, expected: &str) {
        let found = match Tagged::parse(reference) {
            Ok(t) => format!("{} {} {}", t.host, t.repository, t.tag),
            Err(error) => format!("error: {error:#}"),
        };
        assert_eq!(found, expected, "{reference}");
    }

    #[test]
    fn references_are_read_as_the_engines_read_them() {
        check("nginx", "registry-1.docker.io library/nginx latest");
        check("nginx:1.27", "registry-1.docker.io library/nginx 1.27");
        check("me/app:2", "registry-1.docker.io me/app 2");
        check(
            "docker.io/library/bb:latest",
            "registry-1.docker.io library/bb latest",
        );
        check("ghcr.io/acme/api:2.4", "ghcr.io acme/api 2.4");
        check("127.0.0.1:5000/a/b", "127.0.0.1:5000 a/b latest");
        check("localhost/app:1", "localhost app 1");
        check(
            "nginx@sha256:0123",
            "error: nginx@sha256:0123 names a digest, not a tag",
        );
        assert_eq!(
            Tagged::parse("127.0.0.1:5000/a:1").unwrap().manifest_url(),
            "http://127.0.0.1:5000/v2/a/manifests/1"
        );
        assert_eq!(
            Tagged::parse("ghcr.io/a/b:1").unwrap().manifest_url(),
            "https://ghcr.io/v2/a/b/manifests/1"
        );
    }

    #[test]
    fn bearer_challenges_are_taken_apart() {
        let challenge = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#;
        assert_eq!(
            challenge_parameters(challenge).unwrap(),
            [
                ("realm".into(), "https://auth.docker.io/token".into()),
                ("service".into(), "registry.docker.io".into()),
                ("scope".into(), "repository:library/nginx:pull,push".into()),
            ]
        );
        assert_eq!(challenge_parameters(r#"Basic realm="x""#), None);
    }

    #[test]
    fn loopback_registries() {
        for host in [
            "localhost:5000",
            "127.0.0.1:36053",
            "localhost",
            "[::1]:5000",
        ] {
            assert!(loopback(host), "{host}");
        }
        for host in ["registry-1.docker.io", "ghcr.io", "10.0.0.1:5000"] {
            assert!(!loopback(host), "{host}");
        }
    }
}
