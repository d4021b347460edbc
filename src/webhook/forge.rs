//! The other forges' webhook contracts (GitLab, Gitea and Forgejo, Bitbucket Cloud) and a generic
//! signed trigger for CI jobs: which headers carry the credential, the event name and the delivery
//! id; how the credential is checked; and how a push payload becomes an `Event`.
//!
//! Like GitHub's contract beside it, no IO and no HTTP framework: `http` hands in header values and
//! the raw body. A signature is checked over the raw bytes before any JSON is parsed, and every
//! comparison is made in constant time. Sources, one per forge:
//! - GitLab: <https://docs.gitlab.com/user/project/integrations/webhooks/> (the secret token in
//!   `X-Gitlab-Token`; `Idempotency-Key`, the same on every retry of one delivery, since GitLab
//!   17.4) and <https://docs.gitlab.com/user/project/integrations/webhook_events/> (`Push Hook`,
//!   `Tag Push Hook` and their payloads).
//! - Gitea: <https://docs.gitea.com/usage/webhooks>; Forgejo:
//!   <https://forgejo.org/docs/latest/user/webhooks/> (Forgejo sends its `X-Forgejo-*` headers and
//!   Gitea's alike).
//! - Bitbucket Cloud: <https://support.atlassian.com/bitbucket-cloud/docs/event-payloads/> (headers
//!   and `repo:push`) and <https://support.atlassian.com/bitbucket-cloud/docs/manage-webhooks/> (the
//!   secret, `X-Hub-Signature: sha256=<hex>`); `diagnostics:ping` is the event Bitbucket's "Test
//!   connection" sends (documented for Bitbucket Data Center, whose payloads are otherwise not
//!   read here).

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Event, PayloadError, bounded, signature};
use crate::config::Secret;

/// A sender other than GitHub, each with its own route (`/hooks/<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    /// `X-Gitlab-Token` carries the secret token itself; there is no signature.
    GitLab,
    /// Gitea and Forgejo: the bare hex HMAC-SHA256 of the body.
    Gitea,
    /// Bitbucket Cloud: `X-Hub-Signature: sha256=<hex>`.
    Bitbucket,
    /// A CI job or a script: `X-Hub-Signature-256` as GitHub signs, over an empty body or a JSON
    /// object with an optional `ref`.
    Generic,
}

/// A credential as it arrived: the header that carried it and its value.
#[derive(Debug, Clone, Copy)]
pub struct Credential<'a> {
    pub header: &'static str,
    pub value: &'a [u8],
}

/// Why a forge's request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("{header} is not of the form {form}")]
    Malformed {
        header: &'static str,
        form: &'static str,
    },
    #[error("{0} does not match the body")]
    Mismatch(&'static str),
    #[error("X-Gitlab-Token is not the GitLab token")]
    WrongToken,
}

impl Forge {
    pub const ALL: [Forge; 4] = [
        Forge::GitLab,
        Forge::Gitea,
        Forge::Bitbucket,
        Forge::Generic,
    ];

    /// The last part of its route, and its name in the log.
    pub fn name(self) -> &'static str {
        match self {
            Forge::GitLab => "gitlab",
            Forge::Gitea => "gitea",
            Forge::Bitbucket => "bitbucket",
            Forge::Generic => "generic",
        }
    }

    /// The headers that may carry the credential; the first one present is the one checked, so
    /// a wrong `X-Forgejo-Signature` is not rescued by a right `X-Gitea-Signature`.
    pub fn credential_headers(self) -> &'static [&'static str] {
        match self {
            Forge::GitLab => &["X-Gitlab-Token"],
            Forge::Gitea => &["X-Forgejo-Signature", "X-Gitea-Signature"],
            Forge::Bitbucket => &["X-Hub-Signature"],
            Forge::Generic => &["X-Hub-Signature-256"],
        }
    }

    /// The headers that name the event, the first present one read.
    pub fn event_headers(self) -> &'static [&'static str] {
        match self {
            Forge::GitLab => &["X-Gitlab-Event"],
            Forge::Gitea => &["X-Forgejo-Event", "X-Gitea-Event"],
            Forge::Bitbucket => &["X-Event-Key"],
            Forge::Generic => &[],
        }
    }

    /// The headers that carry a delivery id, the same on a retry of one delivery; the first
    /// present one read. GitLab's `X-Gitlab-Event-UUID` and `X-Gitlab-Webhook-UUID` change on a
    /// retry, so only `Idempotency-Key` serves; a generic caller may send one too (IETF's
    /// draft-ietf-httpapi-idempotency-key-header).
    pub fn delivery_headers(self) -> &'static [&'static str] {
        match self {
            Forge::GitLab | Forge::Generic => &["Idempotency-Key"],
            Forge::Gitea => &["X-Forgejo-Delivery", "X-Gitea-Delivery"],
            Forge::Bitbucket => &["X-Request-UUID"],
        }
    }

    /// Every header `http` reads for this forge.
    pub fn headers(self) -> impl Iterator<Item = &'static str> {
        let credential = self.credential_headers().iter();
        let event = self.event_headers().iter();
        credential
            .chain(event)
            .chain(self.delivery_headers())
            .copied()
    }

    /// Checks what the headers alone can prove, before the body is read: GitLab's token whole,
    /// a signature's form.
    pub fn admit(
        self,
        secret: &Secret,
        credential: Option<Credential<'_>>,
    ) -> Result<(), CredentialError> {
        let credential = credential.ok_or(CredentialError::Missing(self.credential_name()))?;
        match self.prefix() {
            None if same_token(credential.value, secret) => Ok(()),
            None => Err(CredentialError::WrongToken),
            Some(prefix) => digest(credential, prefix).map(drop),
        }
    }

    /// Checks the credential against the body. GitLab's token covers no body: it is checked as
    /// `admit` does.
    pub fn verify(
        self,
        secret: &Secret,
        credential: Option<Credential<'_>>,
        body: &[u8],
    ) -> Result<(), CredentialError> {
        let Some(prefix) = self.prefix() else {
            return self.admit(secret, credential);
        };
        let credential = credential.ok_or(CredentialError::Missing(self.credential_name()))?;
        let expected = digest(credential, prefix)?;
        if signature::matches(secret, &expected, body) {
            Ok(())
        } else {
            Err(CredentialError::Mismatch(credential.header))
        }
    }

    /// The credential this forge would send for `body`: for tests and for callers that sign.
    pub fn sign(self, secret: &Secret, body: &[u8]) -> String {
        match self.prefix() {
            None => secret.expose().to_owned(),
            Some(prefix) => format!("{prefix}{}", signature::hex_mac(secret, body)),
        }
    }

    /// Reads an event from its name (the event header, if the forge sends one) and raw JSON body.
    /// `tracked`, the branch stackhook follows, picks the change to act on when one Bitbucket push
    /// updates several branches.
    pub fn parse(
        self,
        name: Option<&str>,
        body: &[u8],
        tracked: Option<&str>,
    ) -> Result<Event, PayloadError> {
        let name = name.unwrap_or(match self {
            Forge::Generic => "generic",
            _ => "(none)",
        });
        let payload = |source| PayloadError {
            event: name.to_owned(),
            source,
        };
        match (self, name) {
            // GitLab's "Test" button sends a push of the default branch's newest commits: it
            // deploys what changed, which is nothing when the host is up to date.
            (Forge::GitLab, "Push Hook" | "Tag Push Hook") => {
                let push: GitLabPush = serde_json::from_slice(body).map_err(payload)?;
                let message = push
                    .commits
                    .into_iter()
                    .find(|commit| commit.id == push.after)
                    .and_then(|commit| commit.message);
                Ok(branch_push(
                    push.reference,
                    push.after,
                    push.user_username.or(push.user_name),
                    message,
                ))
            }
            // Gitea's and Forgejo's "Test delivery" is a push of the default branch's head.
            (Forge::Gitea, "push") => {
                let push: GiteaPush = serde_json::from_slice(body).map_err(payload)?;
                let message = push
                    .head_commit
                    .and_then(|commit| commit.message)
                    .or_else(|| {
                        push.commits
                            .into_iter()
                            .find(|commit| commit.id == push.after)
                            .and_then(|commit| commit.message)
                    });
                let pusher = push.pusher.and_then(|p| p.login.or(p.username));
                Ok(branch_push(push.reference, push.after, pusher, message))
            }
            (Forge::Bitbucket, "diagnostics:ping") => Ok(Event::Ping),
            (Forge::Bitbucket, "repo:push") => {
                let push: BitbucketPush = serde_json::from_slice(body).map_err(payload)?;
                Ok(bitbucket_push(push, tracked))
            }
            (Forge::Generic, _) => {
                if body.is_empty() {
                    return Ok(Event::Deploy);
                }
                let trigger: GenericTrigger = serde_json::from_slice(body).map_err(payload)?;
                Ok(match trigger.reference {
                    None => Event::Deploy,
                    // A bare name is a branch: `main` as much as `refs/heads/main`.
                    Some(name) if !name.starts_with("refs/") => {
                        branch_push(format!("refs/heads/{name}"), String::new(), None, None)
                    }
                    Some(reference) => branch_push(reference, String::new(), None, None),
                })
            }
            (_, other) => Ok(Event::Other(other.to_owned())),
        }
    }

    /// The name of the credential header in an error about a missing one.
    fn credential_name(self) -> &'static str {
        match self {
            Forge::Gitea => "X-Gitea-Signature (or X-Forgejo-Signature)",
            _ => self.credential_headers()[0],
        }
    }

    /// The signature's prefix; `None` for a token, which is not a signature.
    fn prefix(self) -> Option<&'static str> {
        match self {
            Forge::GitLab => None,
            Forge::Gitea => Some(""),
            Forge::Bitbucket | Forge::Generic => Some("sha256="),
        }
    }
}

impl std::fmt::Display for Forge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The 32 bytes a signature spells after its prefix.
fn digest(credential: Credential<'_>, prefix: &'static str) -> Result<Vec<u8>, CredentialError> {
    credential
        .value
        .strip_prefix(prefix.as_bytes())
        .and_then(signature::digest)
        .ok_or(CredentialError::Malformed {
            header: credential.header,
            form: if prefix.is_empty() {
                "<64 hex digits>"
            } else {
                "sha256=<64 hex digits>"
            },
        })
}

/// Compares digests of the two, so that the time taken says nothing of either's bytes or length.
fn same_token(given: &[u8], token: &Secret) -> bool {
    let given = Sha256::digest(given);
    let token = Sha256::digest(token.expose().as_bytes());
    given.as_slice().ct_eq(token.as_slice()).into()
}

/// A push of `reference`: a branch push when it names a branch, else an other ref.
fn branch_push(
    reference: String,
    after: String,
    pusher: Option<String>,
    message: Option<String>,
) -> Event {
    match reference.strip_prefix("refs/heads/") {
        Some(branch) => Event::Push {
            branch: branch.to_owned(),
            after,
            pusher: pusher.map(|name| bounded(name, 100)),
            message: message.map(|message| bounded(message, 1000)),
        },
        None => Event::OtherRef(reference),
    }
}

/// The change of a Bitbucket push to act on: the tracked branch's, else the first branch's, else
/// the first tag's. A change without `new` deleted its branch or tag.
fn bitbucket_push(push: BitbucketPush, tracked: Option<&str>) -> Event {
    let pusher = push.actor.and_then(|actor| actor.display_name);
    let changed: Vec<BitbucketRef> = push
        .push
        .changes
        .into_iter()
        .filter_map(|change| change.new)
        .collect();
    let branches = || changed.iter().filter(|new| new.kind == "branch");
    let chosen = branches()
        .find(|new| Some(new.name.as_str()) == tracked)
        .or_else(|| branches().next());
    match (chosen, changed.first()) {
        (Some(branch), _) => Event::Push {
            branch: branch.name.clone(),
            after: branch.target.hash.clone(),
            pusher: pusher.map(|name| bounded(name, 100)),
            message: branch
                .target
                .message
                .clone()
                .map(|message| bounded(message, 1000)),
        },
        (None, Some(other)) if other.kind == "tag" => {
            Event::OtherRef(format!("refs/tags/{}", other.name))
        }
        (None, Some(other)) => Event::OtherRef(format!("{} {}", other.kind, other.name)),
        (None, None) => Event::Other("repo:push that only deletes".into()),
    }
}

/// GitLab's `Push Hook` and `Tag Push Hook` payload, the fields stackhook reads.
#[derive(Deserialize)]
struct GitLabPush {
    #[serde(rename = "ref")]
    reference: String,
    #[serde(default)]
    after: String,
    user_username: Option<String>,
    user_name: Option<String>,
    #[serde(default)]
    commits: Vec<Commit>,
}

/// Gitea's and Forgejo's `push` payload.
#[derive(Deserialize)]
struct GiteaPush {
    #[serde(rename = "ref")]
    reference: String,
    #[serde(default)]
    after: String,
    pusher: Option<GiteaUser>,
    head_commit: Option<Commit>,
    #[serde(default)]
    commits: Vec<Commit>,
}

#[derive(Deserialize)]
struct GiteaUser {
    login: Option<String>,
    username: Option<String>,
}

#[derive(Deserialize)]
struct Commit {
    #[serde(default)]
    id: String,
    message: Option<String>,
}

/// Bitbucket Cloud's `repo:push` payload.
#[derive(Deserialize)]
struct BitbucketPush {
    actor: Option<BitbucketActor>,
    push: BitbucketChanges,
}

#[derive(Deserialize)]
struct BitbucketActor {
    display_name: Option<String>,
}

#[derive(Deserialize)]
struct BitbucketChanges {
    #[serde(default)]
    changes: Vec<BitbucketChange>,
}

#[derive(Deserialize)]
struct BitbucketChange {
    new: Option<BitbucketRef>,
}

/// A branch or tag as a push left it (`type`: `branch`, `tag`, or Mercurial's `named_branch` and
/// `bookmark`).
#[derive(Deserialize)]
struct BitbucketRef {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    target: BitbucketTarget,
}

#[derive(Deserialize)]
struct BitbucketTarget {
    #[serde(default)]
    hash: String,
    message: Option<String>,
}

/// The generic trigger's optional body.
#[derive(Deserialize)]
struct GenericTrigger {
    #[serde(rename = "ref")]
    reference: Option<String>,
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    const SECRET: &str = "It's a Secret to Everybody";

    fn check_event(forge: Forge, name: Option<&str>, body: &str, expected: Expect) {
        let actual = match forge.parse(name, body.as_bytes(), Some("main")) {
            Ok(event) => format!("{event:?}"),
            Err(error) => format!("error: {error}"),
        };
        expected.assert_eq(&actual);
    }

    fn check_credential(
        forge: Forge,
        header: &'static str,
        value: Option<&str>,
        body: &[u8],
        expected: Expect,
    ) {
        let secret = Secret::new(SECRET);
        let credential = value.map(|value| Credential {
            header,
            value: value.as_bytes(),
        });
        let admitted = forge.admit(&secret, credential);
        let verified = forge.verify(&secret, credential, body);
        let show = |result: Result<(), CredentialError>| match result {
            Ok(()) => "ok".to_owned(),
            Err(error) => error.to_string(),
        };
        expected.assert_eq(&format!("{} / {}", show(admitted), show(verified)));
    }

    #[test]
    fn gitea_signs_with_the_bare_hex_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2: the HMAC-SHA256 of "what do ya want for nothing?" under "Jefe".
        let signature = Forge::Gitea.sign(&Secret::new("Jefe"), b"what do ya want for nothing?");
        assert_eq!(
            signature,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            Forge::Bitbucket.sign(&Secret::new("Jefe"), b"what do ya want for nothing?"),
            format!("sha256={signature}")
        );
        assert_eq!(Forge::GitLab.sign(&Secret::new(SECRET), b"body"), SECRET);
    }

    #[test]
    fn credentials() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let secret = Secret::new(SECRET);
        let other = Secret::new("another secret");
        for forge in [Forge::Gitea, Forge::Bitbucket, Forge::Generic] {
            let header = forge.credential_headers()[0];
            let signed = forge.sign(&secret, body);
            check_credential(forge, header, Some(&signed), body, expect!["ok / ok"]);
            // Uppercase hex spells the same digest.
            let upper = signed.replace(
                signed.trim_start_matches("sha256="),
                &signed.trim_start_matches("sha256=").to_uppercase(),
            );
            assert_eq!(
                forge.verify(
                    &secret,
                    Some(Credential {
                        header,
                        value: upper.as_bytes()
                    }),
                    body
                ),
                Ok(()),
                "{forge}"
            );
            let wrong_key = forge.sign(&other, body);
            let result = forge.verify(
                &secret,
                Some(Credential {
                    header,
                    value: wrong_key.as_bytes(),
                }),
                body,
            );
            assert_eq!(result, Err(CredentialError::Mismatch(header)), "{forge}");
            let result = forge.verify(
                &secret,
                Some(Credential {
                    header,
                    value: signed.as_bytes(),
                }),
                b"{}",
            );
            assert_eq!(result, Err(CredentialError::Mismatch(header)), "{forge}");
        }
        let github_style = webhook_sign(body);
        check_credential(
            Forge::Gitea,
            "X-Gitea-Signature",
            Some(&github_style),
            body,
            expect![
                "X-Gitea-Signature is not of the form <64 hex digits> / X-Gitea-Signature is not of the form <64 hex digits>"
            ],
        );
        check_credential(
            Forge::Bitbucket,
            "X-Hub-Signature",
            Some(github_style.trim_start_matches("sha256=")),
            body,
            expect![
                "X-Hub-Signature is not of the form sha256=<64 hex digits> / X-Hub-Signature is not of the form sha256=<64 hex digits>"
            ],
        );
        check_credential(
            Forge::Generic,
            "X-Hub-Signature-256",
            Some("sha256=abcd"),
            body,
            expect![
                "X-Hub-Signature-256 is not of the form sha256=<64 hex digits> / X-Hub-Signature-256 is not of the form sha256=<64 hex digits>"
            ],
        );
        check_credential(
            Forge::Gitea,
            "X-Gitea-Signature",
            None,
            body,
            expect![
                "missing X-Gitea-Signature (or X-Forgejo-Signature) header / missing X-Gitea-Signature (or X-Forgejo-Signature) header"
            ],
        );
        check_credential(
            Forge::Bitbucket,
            "X-Hub-Signature",
            None,
            body,
            expect!["missing X-Hub-Signature header / missing X-Hub-Signature header"],
        );
        check_credential(
            Forge::GitLab,
            "X-Gitlab-Token",
            Some(SECRET),
            body,
            expect!["ok / ok"],
        );
        check_credential(
            Forge::GitLab,
            "X-Gitlab-Token",
            Some("It's a Secret to Everybody "),
            body,
            expect![
                "X-Gitlab-Token is not the GitLab token / X-Gitlab-Token is not the GitLab token"
            ],
        );
        check_credential(
            Forge::GitLab,
            "X-Gitlab-Token",
            Some(""),
            body,
            expect![
                "X-Gitlab-Token is not the GitLab token / X-Gitlab-Token is not the GitLab token"
            ],
        );
        check_credential(
            Forge::GitLab,
            "X-Gitlab-Token",
            None,
            body,
            expect!["missing X-Gitlab-Token header / missing X-Gitlab-Token header"],
        );
    }

    fn webhook_sign(body: &[u8]) -> String {
        super::super::sign(&Secret::new(SECRET), body)
    }

    /// Shaped as the push example of GitLab's "Webhook events" page, trimmed.
    const GITLAB_PUSH: &str = r#"{
      "object_kind": "push",
      "event_name": "push",
      "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
      "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
      "ref": "refs/heads/main",
      "ref_protected": true,
      "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
      "message": null,
      "user_id": 4,
      "user_name": "John Smith",
      "user_username": "jsmith",
      "user_email": "john@example.com",
      "user_avatar": "https://s.gravatar.com/avatar/d4c74594d841139328695756648b6bd6?s=80",
      "project_id": 15,
      "project": {
        "id": 15,
        "name": "Diaspora",
        "web_url": "http://example.com/mike/diaspora",
        "git_http_url": "http://example.com/mike/diaspora.git",
        "path_with_namespace": "mike/diaspora",
        "default_branch": "main"
      },
      "commits": [
        {
          "id": "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327",
          "message": "Update Catalan translation to e38cb41.\n\nSee https://gitlab.com/gitlab-org/gitlab for more information",
          "title": "Update Catalan translation to e38cb41.",
          "timestamp": "2011-12-12T14:27:31+02:00",
          "url": "http://example.com/mike/diaspora/commit/b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327",
          "author": { "name": "Jordi Mallach", "email": "jordi@softcatala.org" },
          "added": ["CHANGELOG"],
          "modified": ["app/controller/application.rb"],
          "removed": []
        },
        {
          "id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
          "message": "fixed readme",
          "title": "fixed readme",
          "timestamp": "2012-01-03T23:36:29+02:00",
          "url": "http://example.com/mike/diaspora/commit/da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
          "author": { "name": "GitLab dev user", "email": "gitlabdev@dv6700.(none)" },
          "added": ["CHANGELOG"],
          "modified": ["app/controller/application.rb"],
          "removed": []
        }
      ],
      "total_commits_count": 4,
      "repository": {
        "name": "Diaspora",
        "url": "git@example.com:mike/diaspora.git",
        "homepage": "http://example.com/mike/diaspora",
        "visibility_level": 0
      }
    }"#;

    /// Shaped as the tag example of GitLab's "Webhook events" page, trimmed.
    const GITLAB_TAG_PUSH: &str = r#"{
      "object_kind": "tag_push",
      "event_name": "tag_push",
      "before": "0000000000000000000000000000000000000000",
      "after": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
      "ref": "refs/tags/v1.0.0",
      "ref_protected": true,
      "checkout_sha": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
      "user_id": 1,
      "user_name": "John Smith",
      "user_username": "jsmith",
      "project_id": 1,
      "project": { "id": 1, "name": "Example", "path_with_namespace": "jsmith/example" },
      "commits": [],
      "total_commits_count": 0
    }"#;

    #[test]
    fn gitlab_events() {
        check_event(
            Forge::GitLab,
            Some("Push Hook"),
            GITLAB_PUSH,
            expect![[
                r#"Push { branch: "main", after: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", pusher: Some("jsmith"), message: Some("fixed readme") }"#
            ]],
        );
        check_event(
            Forge::GitLab,
            Some("Tag Push Hook"),
            GITLAB_TAG_PUSH,
            expect![[r#"OtherRef("refs/tags/v1.0.0")"#]],
        );
        check_event(
            Forge::GitLab,
            Some("Merge Request Hook"),
            r#"{"object_kind":"merge_request"}"#,
            expect![[r#"Other("Merge Request Hook")"#]],
        );
        // A system hook reports pushes to every project of the instance: not a deploy signal.
        check_event(
            Forge::GitLab,
            Some("System Hook"),
            r#"{"event_name":"push","ref":"refs/heads/main"}"#,
            expect![[r#"Other("System Hook")"#]],
        );
        check_event(
            Forge::GitLab,
            None,
            GITLAB_PUSH,
            expect![[r#"Other("(none)")"#]],
        );
        check_event(
            Forge::GitLab,
            Some("Push Hook"),
            "{",
            expect![[
                r#"error: invalid Push Hook payload: EOF while parsing an object at line 1 column 1"#
            ]],
        );
    }

    /// Shaped as the example of Gitea's "Webhooks" page (and Forgejo's, which is the same).
    const GITEA_PUSH: &str = r#"{
      "ref": "refs/heads/develop",
      "before": "28e1879d029cb852e4844d9c718537df08844e03",
      "after": "bffeb74224043ba2feb48d137756c8a9331c449a",
      "compare_url": "http://localhost:3000/gitea/webhooks/compare/28e1879d029cb852e4844d9c718537df08844e03...bffeb74224043ba2feb48d137756c8a9331c449a",
      "commits": [
        {
          "id": "bffeb74224043ba2feb48d137756c8a9331c449a",
          "message": "Webhooks Yay!",
          "url": "http://localhost:3000/gitea/webhooks/commit/bffeb74224043ba2feb48d137756c8a9331c449a",
          "author": { "name": "Gitea", "email": "someone@gitea.io", "username": "gitea" },
          "committer": { "name": "Gitea", "email": "someone@gitea.io", "username": "gitea" },
          "timestamp": "2017-03-13T13:52:11-04:00"
        }
      ],
      "repository": {
        "id": 140,
        "owner": { "id": 1, "login": "gitea", "full_name": "Gitea", "email": "someone@gitea.io", "username": "gitea" },
        "name": "webhooks",
        "full_name": "gitea/webhooks",
        "private": false,
        "default_branch": "master"
      },
      "pusher": {
        "id": 1,
        "login": "gitea",
        "full_name": "Gitea",
        "email": "someone@gitea.io",
        "avatar_url": "https://localhost:3000/avatars/1",
        "username": "gitea"
      },
      "sender": {
        "id": 1,
        "login": "gitea",
        "full_name": "Gitea",
        "email": "someone@gitea.io",
        "avatar_url": "https://localhost:3000/avatars/1",
        "username": "gitea"
      }
    }"#;

    #[test]
    fn gitea_and_forgejo_events() {
        check_event(
            Forge::Gitea,
            Some("push"),
            GITEA_PUSH,
            expect![[
                r#"Push { branch: "develop", after: "bffeb74224043ba2feb48d137756c8a9331c449a", pusher: Some("gitea"), message: Some("Webhooks Yay!") }"#
            ]],
        );
        // Newer versions add `head_commit`, which wins over the list.
        let with_head = GITEA_PUSH.replacen(
            r#""pusher""#,
            r#""head_commit": { "id": "bffeb74224043ba2feb48d137756c8a9331c449a", "message": "Deploy the new proxy\n" }, "pusher""#,
            1,
        );
        check_event(
            Forge::Gitea,
            Some("push"),
            &with_head,
            expect![[
                r#"Push { branch: "develop", after: "bffeb74224043ba2feb48d137756c8a9331c449a", pusher: Some("gitea"), message: Some("Deploy the new proxy\n") }"#
            ]],
        );
        let tag = GITEA_PUSH.replace("refs/heads/develop", "refs/tags/v1.2.0");
        check_event(
            Forge::Gitea,
            Some("push"),
            &tag,
            expect![[r#"OtherRef("refs/tags/v1.2.0")"#]],
        );
        check_event(
            Forge::Gitea,
            Some("create"),
            r#"{"ref":"v1.2.0","ref_type":"tag"}"#,
            expect![[r#"Other("create")"#]],
        );
    }

    /// Shaped as the `repo:push` example of Bitbucket Cloud's "Event payloads" page, trimmed.
    fn bitbucket_push(changes: &str) -> String {
        format!(
            r#"{{
              "actor": {{
                "type": "user",
                "display_name": "Emma",
                "uuid": "{{a54f16da-24e9-4d7f-a3a7-b1ba2cd98aa3}}",
                "nickname": "emma",
                "account_id": "557058:2a3c3e4e-8e76-4f4e-8a8c-5b6c4e3d2f10",
                "links": {{ "html": {{ "href": "https://bitbucket.org/%7Ba54f16da%7D/" }} }}
              }},
              "repository": {{
                "type": "repository",
                "full_name": "team_name/repo_name",
                "name": "repo_name",
                "uuid": "{{673a6070-3421-46c9-9d48-90745f7bfe8e}}",
                "is_private": true
              }},
              "push": {{ "changes": [{changes}] }}
            }}"#
        )
    }

    fn bitbucket_change(kind: &str, name: &str, hash: &str, message: &str) -> String {
        format!(
            r#"{{
              "new": {{
                "type": "{kind}",
                "name": "{name}",
                "target": {{
                  "type": "commit",
                  "hash": "{hash}",
                  "author": {{ "type": "author", "raw": "Emma <emma@example.com>" }},
                  "message": "{message}",
                  "date": "2015-06-09T03:34:49+00:00",
                  "parents": [{{ "type": "commit", "hash": "1e65c05c1d5171631d92438a13901ca7dae9618c" }}]
                }},
                "links": {{ "html": {{ "href": "https://bitbucket.org/team_name/repo_name/branch/{name}" }} }}
              }},
              "old": {{
                "type": "{kind}",
                "name": "{name}",
                "target": {{ "type": "commit", "hash": "1e65c05c1d5171631d92438a13901ca7dae9618c" }}
              }},
              "created": false,
              "forced": false,
              "closed": false,
              "commits": [{{ "type": "commit", "hash": "{hash}", "message": "{message}" }}],
              "truncated": false
            }}"#
        )
    }

    #[test]
    fn bitbucket_events() {
        let main = bitbucket_change(
            "branch",
            "main",
            "709d658dc5b6d6afcd46049c2f332ee3f515a67d",
            "new commit message\\n",
        );
        let feature = bitbucket_change(
            "branch",
            "feature",
            "03f4a7270240708834de475bcf21532d6134777e",
            "wip\\n",
        );
        let tag = bitbucket_change(
            "tag",
            "v1.0",
            "709d658dc5b6d6afcd46049c2f332ee3f515a67d",
            "new commit message\\n",
        );
        let deleted = r#"{ "new": null, "old": { "type": "branch", "name": "gone", "target": { "hash": "1e65c05c1d5171631d92438a13901ca7dae9618c" } }, "closed": true }"#;
        check_event(
            Forge::Bitbucket,
            Some("repo:push"),
            &bitbucket_push(&main),
            expect![[
                r#"Push { branch: "main", after: "709d658dc5b6d6afcd46049c2f332ee3f515a67d", pusher: Some("Emma"), message: Some("new commit message\n") }"#
            ]],
        );
        // One push that updates several branches acts on the tracked one, wherever it is.
        check_event(
            Forge::Bitbucket,
            Some("repo:push"),
            &bitbucket_push(&format!("{feature},{deleted},{main}")),
            expect![[
                r#"Push { branch: "main", after: "709d658dc5b6d6afcd46049c2f332ee3f515a67d", pusher: Some("Emma"), message: Some("new commit message\n") }"#
            ]],
        );
        check_event(
            Forge::Bitbucket,
            Some("repo:push"),
            &bitbucket_push(&feature),
            expect![[
                r#"Push { branch: "feature", after: "03f4a7270240708834de475bcf21532d6134777e", pusher: Some("Emma"), message: Some("wip\n") }"#
            ]],
        );
        check_event(
            Forge::Bitbucket,
            Some("repo:push"),
            &bitbucket_push(&tag),
            expect![[r#"OtherRef("refs/tags/v1.0")"#]],
        );
        check_event(
            Forge::Bitbucket,
            Some("repo:push"),
            &bitbucket_push(deleted),
            expect![[r#"Other("repo:push that only deletes")"#]],
        );
        check_event(
            Forge::Bitbucket,
            Some("diagnostics:ping"),
            r#"{"test": true}"#,
            expect![[r#"Ping"#]],
        );
        check_event(
            Forge::Bitbucket,
            Some("pullrequest:created"),
            "{}",
            expect![[r#"Other("pullrequest:created")"#]],
        );
        check_event(
            Forge::Bitbucket,
            Some("repo:push"),
            r#"{"actor":{}}"#,
            expect![[
                r#"error: invalid repo:push payload: missing field `push` at line 1 column 12"#
            ]],
        );
    }

    #[test]
    fn generic_triggers() {
        check_event(Forge::Generic, None, "", expect![[r#"Deploy"#]]);
        check_event(Forge::Generic, None, "{}", expect![[r#"Deploy"#]]);
        check_event(
            Forge::Generic,
            None,
            r#"{"ref":"main","job":"build-42"}"#,
            expect![[r#"Push { branch: "main", after: "", pusher: None, message: None }"#]],
        );
        check_event(
            Forge::Generic,
            None,
            r#"{"ref":"refs/heads/release/2"}"#,
            expect![[r#"Push { branch: "release/2", after: "", pusher: None, message: None }"#]],
        );
        check_event(
            Forge::Generic,
            None,
            r#"{"ref":"refs/tags/v2"}"#,
            expect![[r#"OtherRef("refs/tags/v2")"#]],
        );
        check_event(
            Forge::Generic,
            None,
            "ref=main",
            expect![[r#"error: invalid generic payload: expected value at line 1 column 1"#]],
        );
    }
}
