//! Measures how much of a corpus of published compose files stackhook accepts (issue 11, "How to
//! measure it"): each stack directory is loaded by stackhook and validated by
//! `docker-compose config -q`, the oracle, and one line a stack records both verdicts. It does
//! not compare what the two make of a file they both accept; the `fidelity` tests do that.
//!
//! The corpus is other projects' files and is not in this repository; `bench/corpus/README.md`
//! says how to rebuild it and `bench/corpus.sh` runs this example against `expected.txt`.
//!
//! ```text
//! cargo run --release --example corpus -- CORPUS_DIR [--expected FILE] [--write FILE]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Parser;

/// Prints stackhook's and Compose's verdicts on every stack of a corpus, and the rate.
#[derive(Parser)]
struct Args {
    /// The corpus: a directory with one stack directory a compose file.
    corpus: PathBuf,
    /// Compare the listing with this file; fail and print the lines that changed.
    #[arg(long)]
    expected: Option<PathBuf>,
    /// Write the listing to this file.
    #[arg(long)]
    write: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("corpus: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let listing = listing(&args.corpus)?;
    print!("{listing}");
    if let Some(path) = &args.write {
        std::fs::write(path, &listing).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.expected {
        let expected =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let changes = changes(&expected, &listing);
        if !changes.is_empty() {
            eprint!("{changes}");
            bail!("the verdicts differ from {}", path.display());
        }
    }
    Ok(())
}

/// stackhook's verdict on a stack; Compose's is a `Result` with its error.
#[derive(Debug, PartialEq)]
enum Verdict {
    Accepts,
    Refuses(String),
    Panics(String),
}

/// One line a stack, in name order, then the rate.
fn listing(corpus: &Path) -> anyhow::Result<String> {
    let mut listing = String::new();
    let (mut compose_accepts, mut both_accept) = (0, 0);
    for (name, dir) in stacks(corpus)? {
        let compose = docker_compose_verdict(&dir)?;
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
    if compose_accepts == 0 {
        bail!("Compose accepts no file of {}", corpus.display());
    }
    let percent = f64::from(both_accept) * 100.0 / f64::from(compose_accepts);
    listing.push_str(&format!(
        "accepted by stackhook: {both_accept} of {compose_accepts} files Compose accepts \
         ({percent:.0}%)\n"
    ));
    Ok(listing)
}

/// The corpus's stack directories, by name, in name order.
fn stacks(corpus: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let corpus = corpus.canonicalize().with_context(|| {
        format!(
            "the compose corpus is not at {}: bench/corpus/README.md says how to rebuild it",
            corpus.display()
        )
    })?;
    let mut stacks = BTreeMap::new();
    for entry in std::fs::read_dir(&corpus).with_context(|| format!("{}", corpus.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            stacks.insert(name, path);
        }
    }
    Ok(stacks)
}

/// stackhook's verdict, with an empty process environment: the stack's own `.env` is all it has.
fn stackhook_verdict(dir: &Path) -> Verdict {
    let load = catch_unwind(AssertUnwindSafe(|| {
        stackhook::stack::compose::load(dir, &Default::default())
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
/// environment but `PATH`, so that no variable of ours reaches it. Its error is the first line of
/// standard error that is not a warning.
fn docker_compose_verdict(dir: &Path) -> anyhow::Result<Result<(), String>> {
    let output = Command::new("docker-compose")
        .arg("--project-directory")
        .arg(dir)
        .args(["config", "-q"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output();
    let output = match output {
        Err(error) if error.kind() == ErrorKind::NotFound => {
            bail!("docker-compose, the oracle, is not installed: run scripts/engines.sh oracle")
        }
        output => output.with_context(|| format!("running docker-compose in {}", dir.display()))?,
    };
    if output.status.success() {
        return Ok(Ok(()));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error = stderr
        .lines()
        .find(|line| !line.contains("level=warning"))
        .unwrap_or("(no message)");
    Ok(Err(error.to_owned()))
}

/// The verdict on one line, with the stack directory left out of the paths in it, so that the
/// listing is the same wherever the corpus lies.
fn one_line(verdict: &str, dir: &Path) -> String {
    verdict
        .replace(&format!("{}/", dir.display()), "")
        .replace(&dir.display().to_string(), ".")
        .replace('\n', " ")
}

/// The lines of `actual` that differ from `expected`, as `- expected` and `+ actual` pairs keyed
/// by what comes before the first `: ` (the stack's name, or the rate's label).
fn changes(expected: &str, actual: &str) -> String {
    let by_key = |listing: &str| -> BTreeMap<String, String> {
        listing
            .lines()
            .map(|line| {
                let key = line.split_once(": ").map_or(line, |(key, _)| key);
                (key.to_owned(), line.to_owned())
            })
            .collect()
    };
    let (expected, actual) = (by_key(expected), by_key(actual));
    let keys: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    let mut changes = String::new();
    for key in keys {
        let (before, after) = (expected.get(key), actual.get(key));
        if before == after {
            continue;
        }
        if let Some(line) = before {
            changes.push_str(&format!("- {line}\n"));
        }
        if let Some(line) = after {
            changes.push_str(&format!("+ {line}\n"));
        }
    }
    changes
}
