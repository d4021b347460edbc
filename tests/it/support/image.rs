//! Local test images, made without a registry: a root filesystem holding Debian's static
//! busybox and its applet links, imported into Docker or Podman under a tag.
//!
//! Owns the engines' addresses for tests, too. It does not start engines: a missing one fails
//! the test with a message that says how to start it.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The busybox that `busybox-static` installs; it needs no libraries.
const BUSYBOX: &str = "/bin/busybox";

/// Applets linked under `/bin`, enough for shells, servers and health checks in tests.
const APPLETS: &[&str] = &[
    "[", "ash", "cat", "chmod", "cp", "date", "echo", "env", "false", "grep", "head", "hostname",
    "httpd", "id", "ip", "kill", "ln", "ls", "mkdir", "mv", "nc", "nslookup", "ping", "printf",
    "ps", "pwd", "rm", "sed", "sh", "sleep", "sort", "tail", "tee", "test", "touch", "true",
    "uname", "wc", "wget",
];

/// Imports run one at a time, so that parallel tests asking for the same tag import it once.
static IMPORTS: Mutex<()> = Mutex::new(());

/// An engine the integration tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestEngine {
    Docker,
    Podman,
}

impl TestEngine {
    /// The socket `scripts/engines.sh` starts the engine on.
    pub fn socket(self) -> &'static str {
        match self {
            TestEngine::Docker => "/var/run/docker.sock",
            TestEngine::Podman => "/run/podman/podman.sock",
        }
    }

    /// The engine's address as `DOCKER_HOST` takes it.
    pub fn host(self) -> String {
        format!("unix://{}", self.socket())
    }

    /// The command-line client, for what the engine trait does not do (imports, cleanup).
    pub fn cli(self) -> Command {
        match self {
            TestEngine::Docker => {
                let mut command = Command::new("docker");
                command.env("DOCKER_HOST", format!("unix://{}", self.socket()));
                command
            }
            TestEngine::Podman => Command::new("podman"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TestEngine::Docker => "docker",
            TestEngine::Podman => "podman",
        }
    }

    /// The names a test image is tagged with, so that `tag` resolves as a short name too:
    /// Podman looks `name:tag` up as `docker.io/library/name:tag` (FIELD-NOTES).
    fn names(self, tag: &str) -> Vec<String> {
        match self {
            TestEngine::Docker => vec![tag.to_owned()],
            TestEngine::Podman => vec![
                tag.to_owned(),
                format!("docker.io/library/{tag}"),
                format!("localhost/{tag}"),
            ],
        }
    }
}

/// Connects to `engine`, failing the test with instructions when it does not answer.
pub async fn connect(engine: TestEngine) -> stackhook::engine::docker::Docker {
    let candidates = [format!("unix://{}", engine.socket())];
    match stackhook::engine::docker::connect(&candidates).await {
        Ok(docker) => docker,
        Err(error) => panic!(
            "{} is needed for this test and did not answer: {error:#}\n\
             start it with `sudo scripts/engines.sh {}`",
            engine.name(),
            engine.name()
        ),
    }
}

/// Makes a busybox image tagged `tag` on `engine` unless it has one. Cheap when it exists.
pub fn ensure_image(engine: TestEngine, tag: &str) {
    let _serial = IMPORTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let names = engine.names(tag);
    if names.iter().all(|name| image_exists(engine, name)) {
        return;
    }
    let rootfs = busybox_rootfs();
    let mut child = engine
        .cli()
        .args(["import", "-", tag])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running `{} import`: {e}", engine.name()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&rootfs)
        .unwrap_or_else(|e| {
            panic!(
                "writing the root filesystem to `{} import`: {e}",
                engine.name()
            )
        });
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "`{} import - {tag}` failed",
        engine.name()
    );
    for name in &names[1..] {
        cli_output(engine, &["tag", tag, name]);
    }
}

/// Imports a new busybox image as `tag`, told apart from others by the label `version`, even
/// if `tag` names another image already; returns its id.
pub fn import_version(engine: TestEngine, tag: &str, version: &str) -> String {
    let _serial = IMPORTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut child = engine
        .cli()
        .args([
            "import",
            "--change",
            &format!("LABEL version={version}"),
            "-",
            tag,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&busybox_rootfs())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "`{} import` failed: {}",
        engine.name(),
        String::from_utf8_lossy(&output.stderr)
    );
    for name in &engine.names(tag)[1..] {
        cli_output(engine, &["tag", tag, name]);
    }
    let id = cli_output(engine, &["image", "inspect", "--format", "{{.Id}}", tag]);
    let id = id.trim();
    // Podman prints the bare hex id; Docker prefixes it with its algorithm.
    match id.starts_with("sha256:") {
        true => id.to_owned(),
        false => format!("sha256:{id}"),
    }
}

/// A tar of a root filesystem: `/bin/busybox`, its applets as symbolic links, and the few
/// files a container expects (`/etc/passwd`, a writable `/tmp`).
pub fn busybox_rootfs() -> Vec<u8> {
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("reading {BUSYBOX}: {e}; install busybox-static (scripts/engines.sh does)")
    });
    let mut archive = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("tmp", 0o1777),
        ("www", 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(mode);
        header.set_size(0);
        archive
            .append_data(&mut header, dir, std::io::empty())
            .unwrap();
    }
    append_file(&mut archive, "bin/busybox", 0o755, &busybox);
    append_file(
        &mut archive,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\n",
    );
    append_file(&mut archive, "etc/group", 0o644, b"root:x:0:\n");
    for applet in APPLETS {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        archive
            .append_link(&mut header, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    archive.into_inner().unwrap()
}

fn append_file(archive: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, contents: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(mode);
    header.set_size(contents.len() as u64);
    archive.append_data(&mut header, path, contents).unwrap();
}

fn image_exists(engine: TestEngine, name: &str) -> bool {
    engine
        .cli()
        .args(["image", "inspect", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs the engine's command-line client; a failure fails the test. Returns its output.
pub fn cli_output(engine: TestEngine, args: &[&str]) -> String {
    let output = engine.cli().args(args).output().unwrap();
    assert!(
        output.status.success(),
        "`{} {}` failed: {}",
        engine.name(),
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}
