//! The compose corpus (issue 11, "How to measure it"): real-world compose files that people
//! self-host, each loaded by stackhook and validated by `docker-compose config -q`. One line a file
//! records both verdicts, and the whole listing must equal `tests/fixtures/corpus/expected.txt`,
//! so a verdict that changes in either direction fails the test. It does not compare what the two
//! make of a file they both accept; `fidelity` does that for its own fixtures.
//!
//! The corpus itself is public projects' files and is not part of this repository: it is read from
//! `shared/compose-corpus/` beside the checkout, or from the directory `CORPUS_DIR` names
//! (`tests/fixtures/corpus/README.md`).

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::root;

#[test]
fn corpus_verdicts_match_the_expectation() {
    let corpus = corpus_dir();
    let mut listing = String::new();
    let (mut compose_accepts, mut both_accept) = (0, 0);
    for (name, dir) in stacks(&corpus) {
        let compose = docker_compose_verdict(&dir);
        let stackhook = stackhook_verdict(&dir);
        let verdict = match (&compose, &stackhook) {
            (_, Verdict::Panics(message)) => format!("stackhook panics: {message}"),
            (Ok(()), Verdict::Accepts) => "both accept".to_owned(),
            (Err(_), Verdict::Refuses(_)) => "both refuse".to_owned(),
            (Ok(()), Verdict::Refuses(error)) => {
                format!("compose accepts, stackhook refuses: {error}")
            }
            (Err(error), Verdict::Accepts) => {
                format!("compose refuses, stackhook accepts: {error}")
            }
        };
        if compose.is_ok() {
            compose_accepts += 1;
            if stackhook == Verdict::Accepts {
                both_accept += 1;
            }
        }
        listing.push_str(&format!("{name}: {}\n", one_line(&verdict, &dir)));
    }
    assert!(compose_accepts > 0, "Compose accepts no file of {corpus:?}");
    let percent = f64::from(both_accept) * 100.0 / f64::from(compose_accepts);
    listing.push_str(&format!(
        "accepted by stackhook: {both_accept} of {compose_accepts} files Compose accepts \
         ({percent:.0}%)\n"
    ));
    expect_test::expect_file!["../fixtures/corpus/expected.txt"].assert_eq(&listing);
}

/// stackhook's verdict on a stack; Compose's is a `Result` with its error.
#[derive(Debug, PartialEq)]
enum Verdict {
    Accepts,
    Refuses(String),
    Panics(String),
}

/// `$CORPUS_DIR`, else `shared/compose-corpus/` beside the checkout, where the shared folder of
/// the project sits on a developer's machine and in CI.
fn corpus_dir() -> PathBuf {
    let dir = std::env::var_os("CORPUS_DIR")
        .map_or_else(|| root().join("../shared/compose-corpus"), PathBuf::from);
    assert!(
        dir.is_dir(),
        "the compose corpus is not at {}: tests/fixtures/corpus/README.md says where it comes \
         from; set CORPUS_DIR to use a copy elsewhere",
        dir.display()
    );
    dir.canonicalize().unwrap()
}

/// The corpus's stack directories, by name, in name order.
fn stacks(corpus: &Path) -> BTreeMap<String, PathBuf> {
    std::fs::read_dir(corpus)
        .unwrap_or_else(|error| panic!("{}: {error}", corpus.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                path,
            )
        })
        .collect()
}

/// stackhook's verdict, with an empty process environment: the stack's own `.env` is all it has.
fn stackhook_verdict(dir: &Path) -> Verdict {
    let load = catch_unwind(AssertUnwindSafe(|| {
        stackhook::stack::compose::load(dir, &BTreeMap::new())
    }));
    match load {
        Ok(Ok(_)) => Verdict::Accepts,
        Ok(Err(error)) => Verdict::Refuses(format!("{error}")),
        Err(panic) => Verdict::Panics(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default(),
        ),
    }
}

/// Compose's verdict: `docker-compose config -q` run in the stack directory with nothing in its
/// environment but `PATH`, so that no variable of the test's own environment reaches it. Its
/// error is the first line of standard error that is not a warning.
fn docker_compose_verdict(dir: &Path) -> Result<(), String> {
    let output = Command::new("docker-compose")
        .arg("--project-directory")
        .arg(dir)
        .args(["config", "-q"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap_or_else(|error| match error.kind() {
            ErrorKind::NotFound => panic!(
                "docker-compose, the oracle of this test, is not installed: run \
                 scripts/engines.sh oracle"
            ),
            _ => panic!("running docker-compose in {}: {error}", dir.display()),
        });
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error = stderr
        .lines()
        .find(|line| !line.contains("level=warning"))
        .unwrap_or("(no message)");
    Err(error.to_owned())
}

/// The verdict on one line, with the stack directory left out of the paths in it, so that the
/// listing is the same wherever the corpus lies.
fn one_line(verdict: &str, dir: &Path) -> String {
    verdict
        .replace(&format!("{}/", dir.display()), "")
        .replace(&dir.display().to_string(), ".")
        .replace('\n', " ")
}
