//! The answer to a `?wait=true` request: the pass that served it, cut down to the stacks that
//! request asked for, with short error summaries (issue 9).
//!
//! A pass can serve several requests folded together; another caller's stacks do not belong in
//! this caller's response body. A failed container's output, which `deploy` appends to its error,
//! goes to the server log instead: the answer carries each error's first line and the
//! deployment's own log lines (what was pulled, created, removed), which hold no container
//! output. `deploy::Report` itself stays whole for the CLI and `/health`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::deploy::plan::Summary;
use crate::deploy::{Changes, Outcome, Report, Request, StackReport};

/// The response for `request`, answered by the pass that wrote `report`: 200 when the pass and
/// every stack of the request succeeded, 500 with a list of failures otherwise.
pub fn answer(report: &Report, request: &Request) -> Response {
    let stacks: Vec<&StackReport> = report
        .stacks
        .iter()
        .filter(|stack| {
            request.all_changed
                || request
                    .forced
                    .keys()
                    .any(|name| name.as_str() == stack.stack)
        })
        .collect();
    let pass = Pass {
        deployment: &report.deployment,
        commit: report.commit.as_deref(),
        branch: report.branch.as_deref(),
        started_at: &report.started_at,
        finished_at: &report.finished_at,
        suspended: report.suspended,
        dry_run: report.dry_run,
        stacks: stacks.iter().map(|stack| Stack::from(*stack)).collect(),
        error: report.error.as_deref().map(summary),
    };
    let failures: Vec<String> = pass
        .error
        .iter()
        .cloned()
        .chain(
            pass.stacks
                .iter()
                .filter(|stack| stack.outcome == Outcome::Failed)
                .map(|stack| {
                    format!(
                        "{}: {}",
                        stack.stack,
                        stack.error.as_deref().unwrap_or("failed")
                    )
                }),
        )
        .collect();
    if failures.is_empty() {
        return (StatusCode::OK, Json(pass)).into_response();
    }
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({
            "deployment": report.deployment,
            "failures": failures,
            "report": pass,
        })),
    )
        .into_response()
}

/// `deploy::Report` without other requests' stacks.
#[derive(Serialize)]
struct Pass<'a> {
    deployment: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    branch: Option<&'a str>,
    started_at: &'a str,
    finished_at: &'a str,
    suspended: bool,
    dry_run: bool,
    stacks: Vec<Stack<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `deploy::StackReport` with its error's summary.
#[derive(Serialize)]
struct Stack<'a> {
    stack: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<&'a str>,
    outcome: Outcome,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    actions: &'a [Summary],
    #[serde(skip_serializing_if = "Changes::is_empty")]
    changes: &'a Changes,
    #[serde(skip_serializing_if = "Option::is_none")]
    pinned: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rolled_back_to: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    notes: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    log: &'a [String],
}

impl<'a> From<&'a StackReport> for Stack<'a> {
    fn from(report: &'a StackReport) -> Stack<'a> {
        Stack {
            stack: &report.stack,
            project: report.project.as_deref(),
            outcome: report.outcome,
            actions: &report.actions,
            changes: &report.changes,
            pinned: report.pinned.as_deref(),
            rolled_back_to: report.rolled_back_to.as_deref(),
            notes: &report.notes,
            error: report.error.as_deref().map(summary),
            log: &report.log,
        }
    }
}

/// What `deploy` writes before a failed container's output, which follows on the next lines.
const OUTPUT_INTRODUCTIONS: [&str; 2] = ["; last output:", "; its last output:"];

/// An error's first line. `deploy::apply` and `deploy::self_update` append a failed container's
/// last output to its error, on lines of their own; that output is the container's to say, not
/// the API's (it may hold secrets). The whole error is in the server log.
fn summary(error: &str) -> String {
    let first = error.lines().next().unwrap_or_default();
    let first = OUTPUT_INTRODUCTIONS
        .iter()
        .find_map(|introduction| first.strip_suffix(introduction))
        .unwrap_or(first);
    if first.len() == error.len() {
        first.to_owned()
    } else {
        format!("{first} (more in the server log)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::StackName;

    fn stack(name: &str, outcome: Outcome, error: Option<&str>) -> StackReport {
        StackReport {
            stack: name.to_owned(),
            project: Some(name.to_owned()),
            outcome,
            actions: Vec::new(),
            changes: Default::default(),
            images: Default::default(),
            pinned: None,
            rolled_back_to: None,
            notes: Vec::new(),
            error: error.map(str::to_owned),
            log: vec![format!("creating {name}-web-1 (no container yet)")],
        }
    }

    async fn check(request: &Request, expected: expect_test::Expect) {
        let report = Report {
            commit: Some("abc".into()),
            branch: Some("main".into()),
            started_at: "t0".into(),
            finished_at: "t1".into(),
            stacks: vec![
                stack("mine", Outcome::Deployed, None),
                stack(
                    "theirs",
                    Outcome::Failed,
                    Some("service web: exited with 1; last output:\n  | secret=hunter2"),
                ),
                stack(
                    "self",
                    Outcome::Failed,
                    Some("service stackhook-b: exited; its last output:\nsecret=hunter2"),
                ),
            ],
            ..Report::new("1-1".into(), false)
        };
        let response = answer(&report, request);
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        expected.assert_eq(&format!("{status} {body:#}"));
    }

    #[tokio::test]
    async fn a_single_stack_answer_shows_only_that_stack_and_no_container_output() {
        use expect_test::expect;
        let mine = Request::stack(StackName::parse("mine").unwrap(), None);
        check(
            &mine,
            expect![[r#"
                200 OK {
                  "branch": "main",
                  "commit": "abc",
                  "deployment": "1-1",
                  "dry_run": false,
                  "finished_at": "t1",
                  "stacks": [
                    {
                      "log": [
                        "creating mine-web-1 (no container yet)"
                      ],
                      "outcome": "deployed",
                      "project": "mine",
                      "stack": "mine"
                    }
                  ],
                  "started_at": "t0",
                  "suspended": false
                }"#]],
        )
        .await;
        check(
            &Request::all_changed(),
            expect![[r#"
                500 Internal Server Error {
                  "deployment": "1-1",
                  "failures": [
                    "theirs: service web: exited with 1 (more in the server log)",
                    "self: service stackhook-b: exited (more in the server log)"
                  ],
                  "report": {
                    "branch": "main",
                    "commit": "abc",
                    "deployment": "1-1",
                    "dry_run": false,
                    "finished_at": "t1",
                    "stacks": [
                      {
                        "log": [
                          "creating mine-web-1 (no container yet)"
                        ],
                        "outcome": "deployed",
                        "project": "mine",
                        "stack": "mine"
                      },
                      {
                        "error": "service web: exited with 1 (more in the server log)",
                        "log": [
                          "creating theirs-web-1 (no container yet)"
                        ],
                        "outcome": "failed",
                        "project": "theirs",
                        "stack": "theirs"
                      },
                      {
                        "error": "service stackhook-b: exited (more in the server log)",
                        "log": [
                          "creating self-web-1 (no container yet)"
                        ],
                        "outcome": "failed",
                        "project": "self",
                        "stack": "self"
                      }
                    ],
                    "started_at": "t0",
                    "suspended": false
                  }
                }"#]],
        )
        .await;
    }
}
