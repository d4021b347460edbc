//! The deployment history: every deployment's record and full log, kept in `history/` of the
//! state directory across restarts, the newest `keep` of them.
//!
//! Append-only files, no database: a deployment is `<id>.json` (its `deploy::Report`, rewritten
//! whole, atomically, when it starts and when it ends) and `<id>.log` (lines appended as they
//! happen, which is what a live view follows). A record still marked running when a new process
//! takes the deploy lock belonged to a process that died: `recover` marks it interrupted. Nothing
//! here is ever half-written: a record is replaced by rename, a log only grows. This module does
//! not decide what a deployment is; it stores `deploy::Report`s.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::deploy::{Report, Status};
use crate::store;

/// How many deployments are kept unless `STACKHOOK_HISTORY` says otherwise.
pub const DEFAULT_KEEP: usize = 200;

/// A deployment's log grows to this size at most; what comes after is dropped, and said so.
const LOG_LIMIT: u64 = 4 * 1024 * 1024;

/// The history of one state directory.
#[derive(Debug, Clone)]
pub struct History {
    dir: PathBuf,
    keep: usize,
}

/// A deployment id: the seconds of its start and a sequence number (`1764547200-3`). Ids are
/// checked before they become file names, so that an id from a URL cannot name another file.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (seconds, sequence) = id.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(seconds) || !digits(sequence) {
        return None;
    }
    Some((seconds.parse().ok()?, sequence.parse().ok()?))
}

impl History {
    pub fn new(state_dir: &Path, keep: usize) -> History {
        History {
            dir: state_dir.join("history"),
            keep: keep.max(1),
        }
    }

    /// A deployment id's time and sequence number; `None` for text that is no deployment id.
    pub fn parse_id(id: &str) -> Option<(u64, u64)> {
        parse_id(id)
    }

    fn record_path(&self, id: &str) -> Option<PathBuf> {
        parse_id(id).map(|_| self.dir.join(format!("{id}.json")))
    }

    fn log_path(&self, id: &str) -> Option<PathBuf> {
        parse_id(id).map(|_| self.dir.join(format!("{id}.log")))
    }

    /// Writes `report` as its deployment's record, replacing the one before.
    pub fn record(&self, report: &Report) -> anyhow::Result<()> {
        let path = self
            .record_path(&report.deployment)
            .with_context(|| format!("{:?} is not a deployment id", report.deployment))?;
        let json = serde_json::to_vec(report).context("serialising a deployment record")?;
        store::write_atomically(&path, &json)
            .with_context(|| format!("writing {}", path.display()))?;
        if report.status != Status::Running {
            self.trim()?;
        }
        Ok(())
    }

    /// The log writer of deployment `id`.
    pub fn log(&self, id: &str) -> LogFile {
        LogFile {
            path: self.log_path(id),
        }
    }

    /// The ids of the kept deployments, newest first.
    fn ids(&self) -> anyhow::Result<Vec<String>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", self.dir.display()));
            }
        };
        let mut ids: Vec<((u64, u64), String)> = entries
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                let id = name.strip_suffix(".json")?;
                Some((parse_id(id)?, id.to_owned()))
            })
            .collect();
        ids.sort_unstable_by_key(|(order, _)| std::cmp::Reverse(*order));
        Ok(ids.into_iter().map(|(_, id)| id).collect())
    }

    /// Deletes the records and logs of all but the newest `keep` deployments.
    fn trim(&self) -> anyhow::Result<()> {
        for id in self.ids()?.iter().skip(self.keep) {
            self.forget(id)?;
        }
        Ok(())
    }

    /// Deletes deployment `id`'s record and log.
    pub fn forget(&self, id: &str) -> anyhow::Result<()> {
        for path in [self.record_path(id), self.log_path(id)]
            .into_iter()
            .flatten()
        {
            match fs::remove_file(&path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => {
                    return Err(error).with_context(|| format!("removing {}", path.display()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Deployment `id`'s record, if it is kept.
    pub fn get(&self, id: &str) -> anyhow::Result<Option<Report>> {
        let Some(path) = self.record_path(id) else {
            return Ok(None);
        };
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("reading {}: not a deployment record", path.display())),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The newest `limit` deployments, newest first; with `stack`, only those that deployed,
    /// took down or failed that stack.
    pub fn list(&self, limit: usize, stack: Option<&str>) -> anyhow::Result<Vec<Report>> {
        let mut reports = Vec::new();
        self.each(limit, stack, |report| reports.push(report))?;
        Ok(reports)
    }

    /// Hands the newest `limit` deployments (of `stack`) to `visit` one at a time, newest
    /// first, so that a long list is never all in memory at once.
    pub fn each(
        &self,
        limit: usize,
        stack: Option<&str>,
        mut visit: impl FnMut(Report),
    ) -> anyhow::Result<()> {
        let mut seen = 0;
        for id in self.ids()? {
            if seen >= limit {
                break;
            }
            // A record trimmed between listing and reading is simply gone.
            let Some(report) = self.get(&id)? else {
                continue;
            };
            if stack.is_none_or(|stack| report.stacks.iter().any(|s| s.stack == stack)) {
                seen += 1;
                visit(report);
            }
        }
        Ok(())
    }

    /// Deployment `id`'s log from byte `from` on; `None` if it has no log (yet).
    pub fn read_log(&self, id: &str, from: u64) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(path) = self.log_path(id) else {
            return Ok(None);
        };
        let mut file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", path.display()));
            }
        };
        file.seek(SeekFrom::Start(from))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(bytes))
    }

    /// Marks every deployment still recorded as running interrupted: call with the deploy lock
    /// freshly taken, when no deployment of this state directory can be running. Returns how
    /// many there were.
    pub fn recover(&self) -> anyhow::Result<usize> {
        let mut interrupted = 0;
        for id in self.ids()? {
            let Some(mut report) = self.get(&id)? else {
                continue;
            };
            if report.status == Status::Running {
                report.status = Status::Interrupted;
                report.error.get_or_insert_with(|| {
                    "interrupted: stackhook stopped before this deployment ended".into()
                });
                self.log(&id)
                    .line("interrupted: stackhook stopped before this deployment ended");
                self.record(&report)?;
                interrupted += 1;
            }
        }
        Ok(interrupted)
    }
}

/// Appends lines to one deployment's log. Opening the file for each line keeps no descriptor
/// open between lines; appends of one line are atomic, so lanes can write side by side.
#[derive(Debug, Clone)]
pub struct LogFile {
    /// `None` for an id that cannot be a file name: nothing is written.
    path: Option<PathBuf>,
}

impl LogFile {
    /// A log that writes nothing.
    pub fn none() -> LogFile {
        LogFile { path: None }
    }

    /// Appends `text` as a line stamped with the time, or says why not in the server's log.
    pub fn line(&self, text: &str) {
        let Some(path) = &self.path else {
            return;
        };
        if let Err(error) = append(path, text) {
            tracing::warn!("writing {}: {error}", path.display());
        }
    }
}

fn append(path: &Path, text: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    if size >= LOG_LIMIT {
        return Ok(());
    }
    let time = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let time = time.get(11..19).unwrap_or(&time);
    let mut line = String::with_capacity(text.len() + 10);
    for (n, part) in text.lines().enumerate() {
        line.push_str(if n == 0 { time } else { "        " });
        line.push(' ');
        line.push_str(part);
        line.push('\n');
    }
    if size + line.len() as u64 >= LOG_LIMIT {
        line = format!("{time} [the log is over {LOG_LIMIT} bytes; the rest is dropped]\n");
    }
    file.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, status: Status) -> Report {
        let mut report = Report::failed(id.to_owned(), "x".into());
        report.status = status;
        report
    }

    #[test]
    fn ids_that_could_name_other_files_are_refused() {
        for id in ["../state", "1-2/../3", "", "1", "a-1", "1-2.json", "1--2"] {
            assert_eq!(parse_id(id), None, "{id}");
        }
        assert_eq!(parse_id("1764547200-3"), Some((1764547200, 3)));
    }

    #[test]
    fn records_are_kept_newest_first_and_trimmed_with_their_logs() {
        let state = tempfile::tempdir().unwrap();
        let history = History::new(state.path(), 2);
        for id in ["100-9", "100-10", "101-1"] {
            history.log(id).line(&format!("log of {id}"));
            history.record(&report(id, Status::Failed)).unwrap();
        }
        let ids: Vec<String> = history
            .list(10, None)
            .unwrap()
            .into_iter()
            .map(|r| r.deployment)
            .collect();
        assert_eq!(
            ids,
            ["101-1", "100-10"],
            "numeric order, the oldest trimmed"
        );
        assert_eq!(history.read_log("100-9", 0).unwrap(), None, "its log too");
        let log = history.read_log("101-1", 0).unwrap().unwrap();
        assert!(String::from_utf8(log).unwrap().ends_with(" log of 101-1\n"));
        assert!(history.get("../state").unwrap().is_none());
    }

    #[test]
    fn a_deployment_left_running_is_marked_interrupted() {
        let state = tempfile::tempdir().unwrap();
        let history = History::new(state.path(), 10);
        history.record(&report("5-1", Status::Running)).unwrap();
        history.record(&report("5-2", Status::Succeeded)).unwrap();
        assert_eq!(history.recover().unwrap(), 1);
        assert_eq!(
            history.get("5-1").unwrap().unwrap().status,
            Status::Interrupted
        );
        assert_eq!(
            history.get("5-2").unwrap().unwrap().status,
            Status::Succeeded
        );
        let log = String::from_utf8(history.read_log("5-1", 0).unwrap().unwrap()).unwrap();
        assert!(log.contains("interrupted"), "{log}");
        assert_eq!(history.recover().unwrap(), 0);
    }

    #[test]
    fn a_log_is_read_from_an_offset_and_stops_growing_at_its_limit() {
        let state = tempfile::tempdir().unwrap();
        let history = History::new(state.path(), 10);
        let log = history.log("7-1");
        log.line("first");
        let length = history.read_log("7-1", 0).unwrap().unwrap().len() as u64;
        log.line("second\ncontinued");
        let rest = String::from_utf8(history.read_log("7-1", length).unwrap().unwrap()).unwrap();
        assert!(rest.ends_with(" second\n         continued\n"), "{rest:?}");

        let big = "x".repeat(1024 * 1024);
        for _ in 0..5 {
            log.line(&big);
        }
        let all = history.read_log("7-1", 0).unwrap().unwrap();
        assert!(all.len() as u64 <= LOG_LIMIT, "{}", all.len());
        assert!(String::from_utf8_lossy(&all).contains("the rest is dropped"));
    }
}
