//! The webhook contracts, framework-free: GitHub's here, the other forges' and the generic
//! trigger's in `forge`; the signature checks and the events stackhook acts on.
//!
//! No IO and no HTTP framework: `http` hands in header values and the raw body. The signature is
//! checked over the raw bytes before any JSON is parsed, in constant time.

mod forge;
mod signature;

pub use forge::{Credential, CredentialError, Forge};
pub use signature::{SignatureError, sign, verify};

use serde::Deserialize;

/// What a delivery asks of stackhook, decided from its event name (`X-GitHub-Event`, …) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Ping,
    /// Deploy what changed, naming no branch: an empty signed body, or a generic trigger
    /// without a `ref`.
    Deploy,
    /// A push to `branch` (the `refs/heads/` prefix removed) whose head is `after`, by
    /// `pusher`, with the head commit's `message`.
    Push {
        branch: String,
        after: String,
        pusher: Option<String>,
        message: Option<String>,
    },
    /// A push of a tag or anything that is not a branch.
    OtherRef(String),
    /// An event stackhook does not act on, by name.
    Other(String),
}

/// Why a delivery's body could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid {event} payload: {source}")]
pub struct PayloadError {
    event: String,
    source: serde_json::Error,
}

/// Reads an event from its name (`X-GitHub-Event`) and raw JSON body. A missing event name is
/// treated as a push: the gitops-deploy-server paths take bodies without that header.
pub fn parse_event(name: Option<&str>, body: &[u8]) -> Result<Event, PayloadError> {
    let name = name.unwrap_or("push");
    match name {
        "ping" => Ok(Event::Ping),
        "push" => {
            #[derive(Deserialize)]
            struct Push {
                #[serde(rename = "ref")]
                reference: String,
                #[serde(default)]
                after: String,
                pusher: Option<Named>,
                head_commit: Option<HeadCommit>,
            }
            #[derive(Deserialize)]
            struct Named {
                name: Option<String>,
            }
            #[derive(Deserialize)]
            struct HeadCommit {
                message: Option<String>,
            }
            let push: Push = serde_json::from_slice(body).map_err(|source| PayloadError {
                event: name.to_owned(),
                source,
            })?;
            Ok(match push.reference.strip_prefix("refs/heads/") {
                Some(branch) => Event::Push {
                    branch: branch.to_owned(),
                    after: push.after,
                    pusher: push
                        .pusher
                        .and_then(|p| p.name)
                        .map(|name| bounded(name, 100)),
                    message: push
                        .head_commit
                        .and_then(|c| c.message)
                        .map(|message| bounded(message, 1000)),
                },
                None => Event::OtherRef(push.reference),
            })
        }
        other => Ok(Event::Other(other.to_owned())),
    }
}

/// `text` cut to at most `limit` characters: a payload's strings end up in the history.
fn bounded(mut text: String, limit: usize) -> String {
    if let Some((at, _)) = text.char_indices().nth(limit) {
        text.truncate(at);
    }
    text
}

/// The `action` of a delivery body (`release`, `registry_package`, ...), if it has one. The
/// single-stack endpoint acts only on `published` so that an app repository's release webhook
/// redeploys once per release, not on every draft or edit.
pub fn action(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct WithAction {
        action: Option<String>,
    }
    serde_json::from_slice::<WithAction>(body).ok()?.action
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: Option<&str>, body: &str, expected: expect_test::Expect) {
        let actual = match parse_event(name, body.as_bytes()) {
            Ok(event) => format!("{event:?}"),
            Err(error) => format!("error: {error}"),
        };
        expected.assert_eq(&actual);
    }

    #[test]
    fn events() {
        use expect_test::expect;
        check(Some("ping"), "{}", expect![[r#"Ping"#]]);
        check(
            Some("push"),
            r#"{"ref":"refs/heads/main","after":"abc"}"#,
            expect![[r#"Push { branch: "main", after: "abc", pusher: None, message: None }"#]],
        );
        check(
            Some("push"),
            r#"{"ref":"refs/heads/main","after":"abc","pusher":{"name":"alice","email":"a@x"},"head_commit":{"id":"abc","message":"Bump paperless to 2.3\n\nbody"}}"#,
            expect![[
                r#"Push { branch: "main", after: "abc", pusher: Some("alice"), message: Some("Bump paperless to 2.3\n\nbody") }"#
            ]],
        );
        check(
            None,
            r#"{"ref":"refs/heads/feature/x"}"#,
            expect![[r#"Push { branch: "feature/x", after: "", pusher: None, message: None }"#]],
        );
        check(
            Some("push"),
            r#"{"ref":"refs/tags/v1"}"#,
            expect![[r#"OtherRef("refs/tags/v1")"#]],
        );
        check(Some("issues"), "not json", expect![[r#"Other("issues")"#]]);
        check(
            Some("push"),
            "{",
            expect![[
                r#"error: invalid push payload: EOF while parsing an object at line 1 column 1"#
            ]],
        );
    }

    #[test]
    fn release_action() {
        assert_eq!(
            action(br#"{"action":"published"}"#).as_deref(),
            Some("published")
        );
        assert_eq!(action(b"{}"), None);
        assert_eq!(action(b""), None);
    }
}
