//! A service's real binary as a child process, for what only a process shows: signals, exit
//! codes, what is on disk after it is gone.
//!
//! The child listens on 127.0.0.1:0 and logs JSON lines; the addresses it was given are read
//! from its own "serving" lines, so no port is ever guessed (a port found free a moment earlier
//! can be taken by the time the child binds it). The child's log lines are kept for
//! [`ServiceProcess::wait_for_log`], and echoed to the test's stderr with `TEST_LOG` set.
//!
//! A producer gets a data directory of its own (a fresh temporary one unless the test names
//! one), so tests running in parallel never meet on the default `./data` and its lock, and a
//! [`ServiceProcess::restart`] after a SIGKILL finds the log the killed process left.
//!
//! A test of one package that runs another's binary (the producer's tests run the consumer)
//! finds it with [`workspace_binary`], which builds it when it is missing or older than its
//! sources.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use serde_json::Value;
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

use crate::{PROMPTLY, has_flag, test_log};

/// How many of the child's last log lines a failure message shows.
const LINES_SHOWN: usize = 20;

/// The flags every producer child gets first: both listeners on port 0.
const PRODUCER_FIXED: [&str; 4] = ["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
/// The flags every consumer child gets first.
const CONSUMER_FIXED: [&str; 2] = ["--listen", "127.0.0.1:0"];

/// A producer or consumer binary running as a child of the test, killed (SIGKILL) if the test
/// ends without waiting for it.
#[derive(Debug)]
pub struct ServiceProcess {
    /// The gRPC address the child logged.
    pub addr: SocketAddr,
    /// The producer's HTTP address; `None` for a consumer.
    pub http: Option<SocketAddr>,
    /// The producer's `log_id`, from its "producer serving" line; `None` for a consumer.
    pub log_id: Option<String>,
    name: &'static str,
    program: String,
    /// The caller's flags (and the data directory added for a producer): a restart passes the
    /// same ones again.
    args: Vec<String>,
    /// The producer's `--data-dir`, whether the test named it or it is `temp_dir`.
    data_dir: Option<PathBuf>,
    /// The temporary data directory made for a producer whose test named none: removed when
    /// this handle is dropped, after the child is gone, and kept across restarts.
    temp_dir: Option<TempDir>,
    child: Child,
    /// The child's stderr, one parsed line at a time (a line that is not JSON, such as a panic
    /// message, arrives as a JSON string). Unbounded because the reader must never stop
    /// draining the pipe: a child blocked on a full stderr would look like a hang.
    lines: mpsc::UnboundedReceiver<Value>,
    /// Every line received so far, so a wait can match a line that came before it was asked.
    seen: Vec<Value>,
}

impl ServiceProcess {
    /// Starts the producer binary at `program` (`env!("CARGO_BIN_EXE_producer")`) with gRPC and
    /// HTTP on 127.0.0.1:0, and `args` after those; returns once it has logged both addresses.
    /// Unless `args` name a `--data-dir`, the producer gets a fresh temporary one, which lives
    /// as long as this handle (see [`Self::data_dir`]); `args` still choose the store.
    pub async fn producer(program: &str, args: &[&str]) -> Self {
        let (args, temp_dir) = producer_args(args);
        Self::start("producer", program, args, temp_dir).await
    }

    /// Starts the consumer binary at `program` (`env!("CARGO_BIN_EXE_consumer")`) with gRPC on
    /// 127.0.0.1:0, and `args` after that; returns once it has logged its address.
    pub async fn consumer(program: &str, args: &[&str]) -> Self {
        let args = args.iter().map(|&arg| arg.to_owned()).collect();
        Self::start("consumer", program, args, None).await
    }

    /// Starts a producer as [`Self::producer`] does, expecting it to refuse to start: to exit
    /// before it serves. Returns its exit status and its log (one line per line). Panics if it
    /// serves, or is still running after [`PROMPTLY`].
    pub async fn producer_refused(program: &str, args: &[&str]) -> (ExitStatus, String) {
        let (args, temp_dir) = producer_args(args);
        let mut process = Self::spawn("producer", program, args, temp_dir);
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            match tokio::time::timeout_at(deadline, process.lines.recv()).await {
                Ok(Some(line)) => {
                    let serving = line["message"] == "producer serving";
                    process.seen.push(line);
                    assert!(
                        !serving,
                        "the producer started serving; its last lines:\n{}",
                        process.last_lines()
                    );
                }
                // Its stderr closed: it has exited, or is about to.
                Ok(None) => break,
                Err(_) => panic!(
                    "the producer was still running {PROMPTLY:?} after it started; its last \
                     lines:\n{}",
                    process.last_lines()
                ),
            }
        }
        let status = process
            .wait_exit(PROMPTLY)
            .await
            .expect("a child whose stderr closed exits");
        let log: Vec<String> = process.seen.iter().map(line_text).collect();
        (status, log.join("\n"))
    }

    /// Starts the same binary again with the same flags, so a producer opens the same data
    /// directory, on new ports learnt again. The previous process must be gone or going (after
    /// [`Self::sigkill`] or [`Self::sigterm`]); returns how it ended. Panics if it does not end
    /// within [`PROMPTLY`].
    pub async fn restart(&mut self) -> ExitStatus {
        let Some(status) = self.wait_exit(PROMPTLY).await else {
            panic!(
                "{} was still running {PROMPTLY:?} after it was told to stop; its last lines:\n{}",
                self.name,
                self.last_lines()
            );
        };
        let args = std::mem::take(&mut self.args);
        let temp_dir = self.temp_dir.take();
        *self = Self::start(self.name, &self.program.clone(), args, temp_dir).await;
        status
    }

    /// The producer's data directory: the one its `--data-dir` named, or the temporary one
    /// made for it. `None` for a consumer.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    async fn start(
        name: &'static str,
        program: &str,
        args: Vec<String>,
        temp_dir: Option<TempDir>,
    ) -> Self {
        let mut process = Self::spawn(name, program, args, temp_dir);
        if name == "producer" {
            let serving = process.logged_addr_line(|m| m == "producer serving").await;
            process.addr = process.parse_addr(&serving);
            process.log_id = serving["log_id"].as_str().map(str::to_owned);
            // The message goes on to list the routes, which may change; its start does not.
            let http = process
                .logged_addr_line(|m| m.starts_with("HTTP serving"))
                .await;
            process.http = Some(process.parse_addr(&http));
        } else {
            let serving = process.logged_addr_line(|m| m == "consumer serving").await;
            process.addr = process.parse_addr(&serving);
        }
        process
    }

    fn spawn(
        name: &'static str,
        program: &str,
        args: Vec<String>,
        temp_dir: Option<TempDir>,
    ) -> Self {
        let fixed: &[&str] = if name == "producer" {
            &PRODUCER_FIXED
        } else {
            &CONSUMER_FIXED
        };
        let mut child = Command::new(program)
            .args(fixed)
            .args(["--log-format", "json"])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("start {program}: {err}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let pid = child.id().unwrap_or_default();
        let echo = test_log();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if echo {
                    eprintln!("[{name} {pid}] {line}");
                }
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                // Nobody waiting any more is no reason to stop draining the pipe.
                let _ = tx.send(value);
            }
        });
        let data_dir = (name == "producer")
            .then(|| flag_value(&args, "--data-dir"))
            .flatten();
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            http: None,
            log_id: None,
            name,
            program: program.to_owned(),
            args,
            data_dir,
            temp_dir,
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first log line (since the start) that `matches`, waiting up to [`PROMPTLY`] for it.
    /// Panics, with the child's last lines, if it does not come or the child exits first.
    pub async fn wait_for_log(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(line) = self.seen.iter().find(|line| matches(line)) {
            return line.clone();
        }
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line);
                    let line = self.seen.last().expect("just pushed");
                    if matches(line) {
                        return line.clone();
                    }
                }
                Ok(None) => {
                    let status = self.wait_exit(PROMPTLY).await;
                    panic!(
                        "{} exited ({status:?}) before logging {what}; its last lines:\n{}",
                        self.name,
                        self.last_lines()
                    );
                }
                Err(_) => panic!(
                    "{} did not log {what} within {PROMPTLY:?} (does RUST_LOG hide INFO?); \
                     its last lines:\n{}",
                    self.name,
                    self.last_lines()
                ),
            }
        }
    }

    /// The first line whose message `matches` and that has an `addr` field.
    async fn logged_addr_line(&mut self, matches: impl Fn(&str) -> bool) -> Value {
        self.wait_for_log("the address it serves on", |line| {
            line["message"].as_str().is_some_and(&matches) && line["addr"].is_string()
        })
        .await
    }

    fn parse_addr(&self, line: &Value) -> SocketAddr {
        let addr = line["addr"].as_str().expect("matched a string addr");
        addr.parse()
            .unwrap_or_else(|err| panic!("{} logged addr {addr:?}: {err}", self.name))
    }

    fn last_lines(&self) -> String {
        let skip = self.seen.len().saturating_sub(LINES_SHOWN);
        let lines: Vec<String> = self.seen[skip..].iter().map(Value::to_string).collect();
        lines.join("\n")
    }

    /// Every log line so far that is already read, as text (see [`Self::wait_for_log`] to
    /// wait for one).
    pub fn log_text(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        let lines: Vec<String> = self.seen.iter().map(line_text).collect();
        lines.join("\n")
    }

    /// The child's process id, for what a test reads about it from the OS (its memory in
    /// `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the child has not been waited for")
    }

    /// Asks the child to stop, as `docker stop` and systemd do.
    pub fn sigterm(&self) {
        let pid = self.child.id().expect("the child has not been waited for");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
    }

    /// Kills the child with no chance to clean up, as a crash or the OOM killer would.
    pub fn sigkill(&mut self) {
        self.child.start_kill().expect("send SIGKILL");
    }

    /// The child's exit status, or `None` if it is still running after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let waited = tokio::time::timeout(within, self.child.wait()).await.ok()?;
        Some(waited.expect("wait for the child"))
    }
}

impl Drop for ServiceProcess {
    /// Kills the child and, when it has a temporary data directory, waits (briefly, blocking)
    /// for it to be gone before the directory is removed under it.
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if self.temp_dir.is_some() {
            for _ in 0..200 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// A producer's flags: `args`, and `--data-dir` with a fresh temporary directory unless they
/// name one.
fn producer_args(args: &[&str]) -> (Vec<String>, Option<TempDir>) {
    let mut owned: Vec<String> = args.iter().map(|&arg| arg.to_owned()).collect();
    if has_flag(args, "--data-dir") {
        return (owned, None);
    }
    let dir = tempfile::Builder::new()
        .prefix("pushpull-producer-")
        .tempdir()
        .expect("make a temporary data directory");
    owned.push("--data-dir".into());
    owned.push(dir.path().display().to_string());
    (owned, Some(dir))
}

/// The value of `name` in `args`, given as `name VALUE` or `name=VALUE`; the last one wins, as
/// for clap.
fn flag_value(args: &[String], name: &str) -> Option<PathBuf> {
    let mut value = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == name {
            value = args.next().map(PathBuf::from);
        } else if let Some(v) = arg.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            value = Some(PathBuf::from(v));
        }
    }
    value
}

/// A log line as a person reads it: a string line as it was, a JSON line as JSON.
fn line_text(line: &Value) -> String {
    match line {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The binary `name` of the workspace's package `package`, for a test in another package: cargo
/// sets `CARGO_BIN_EXE_<name>` only for a package's own binaries (the producer's tests get the
/// producer, not the consumer). It is the one cargo put next to this test's executable
/// (`target/<profile>/<name>`), if it is newer than every source its dep-info (`<name>.d`)
/// lists: `cargo test --workspace`, what CI runs, has just built it. A `cargo test -p` of one
/// package leaves it missing or stale: then it is built here, once per test binary, with
/// `cargo build -p <package> --bin <name>` (cargo sets `CARGO` for the tests it runs, and holds
/// no lock on the target directory while they run). Panics, naming that command, when it is
/// still missing or stale.
pub async fn workspace_binary(package: &'static str, name: &'static str) -> PathBuf {
    tokio::task::spawn_blocking(move || {
        // One build at a time: tests asking at once wait for the first, then find it fresh.
        static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
        let exe = std::env::current_exe().expect("the test's own executable");
        // target/<profile>/deps/<test>-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("a test executable lives in target/<profile>/deps");
        let binary = profile_dir.join(name);
        let Err(why) = fresh(&binary) else {
            return binary;
        };
        let command = build_command(package, name, profile_dir);
        let Some(cargo) = std::env::var_os("CARGO") else {
            panic!("{why}, and this test was not started by cargo: run {command}");
        };
        eprintln!("{why}: running {command}");
        let mut build = std::process::Command::new(cargo);
        build.args(build_args(package, name, profile_dir));
        let status = build
            .status()
            .unwrap_or_else(|err| panic!("run {command}: {err}"));
        assert!(status.success(), "{command}: {status}");
        if let Err(why) = fresh(&binary) {
            panic!("{why}, even after {command}");
        }
        binary
    })
    .await
    .expect("finding the binary panicked")
}

/// The arguments of the `cargo build` that puts `package`'s binary `name` in `profile_dir`.
fn build_args(package: &str, name: &str, profile_dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["build", "--locked", "-p", package, "--bin", name]
        .map(str::to_owned)
        .into();
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => args.push("--release".into()),
        Some(profile) => args.extend(["--profile".into(), profile.to_owned()]),
    }
    if let Some(target_dir) = profile_dir.parent() {
        args.extend(["--target-dir".into(), target_dir.display().to_string()]);
    }
    args
}

fn build_command(package: &str, name: &str, profile_dir: &Path) -> String {
    format!("cargo {}", build_args(package, name, profile_dir).join(" "))
}

/// `Ok` when `binary` exists and is newer than every file its dep-info lists; else why not.
fn fresh(binary: &Path) -> Result<(), String> {
    let shown = binary.display();
    let built = std::fs::metadata(binary)
        .and_then(|m| m.modified())
        .map_err(|err| format!("{shown}: {err}"))?;
    let dep_info = binary.with_extension("d");
    let listed = std::fs::read_to_string(&dep_info)
        .map_err(|err| format!("{}: {err}", dep_info.display()))?;
    for source in dep_info_sources(&listed) {
        let changed = std::fs::metadata(&source).and_then(|m| m.modified());
        match changed {
            Ok(changed) if changed <= built => {}
            Ok(_) => return Err(format!("{shown} is older than {}", source.display())),
            Err(err) => {
                return Err(format!(
                    "{shown} was built from {}: {err}",
                    source.display()
                ));
            }
        }
    }
    Ok(())
}

/// The sources a cargo dep-info file lists for its first target (`target: a b c`, spaces in a
/// path escaped as `\ `).
fn dep_info_sources(dep_info: &str) -> Vec<PathBuf> {
    let first = dep_info.lines().next().unwrap_or_default();
    // The target's own path ends at the first ": " (no path here has one).
    let Some((_, sources)) = first.split_once(": ") else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    let mut path = String::new();
    let mut chars = sources.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => path.push(chars.next().expect("peeked")),
            ' ' => {
                paths.extend((!path.is_empty()).then(|| PathBuf::from(std::mem::take(&mut path))))
            }
            c => path.push(c),
        }
    }
    paths.extend((!path.is_empty()).then(|| PathBuf::from(path)));
    paths
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    /// A shell script that logs what a consumer logs; see the file.
    const FAKE_CONSUMER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/fake-consumer.sh");

    #[tokio::test]
    async fn the_address_comes_from_the_serving_line_and_the_flags_ask_for_port_0() {
        let mut consumer = ServiceProcess::consumer(FAKE_CONSUMER, &["--mode", "push"]).await;

        assert_eq!(consumer.addr, "127.0.0.1:4321".parse().unwrap());
        let line = consumer
            .wait_for_log("a line seen before", |l| l == "not json")
            .await;
        assert_eq!(line, Value::from("not json"));
        let args = consumer
            .wait_for_log("the serving line", |l| l["args"].is_string())
            .await["args"]
            .clone();
        assert_eq!(
            args, "--listen 127.0.0.1:0 --log-format json --mode push",
            "port 0, JSON logs, then the caller's flags"
        );
        consumer.sigkill();
    }

    #[tokio::test]
    async fn sigterm_and_sigkill_end_the_child_and_wait_exit_reports_how() {
        let mut terminated = ServiceProcess::consumer(FAKE_CONSUMER, &[]).await;
        let mut killed = ServiceProcess::consumer(FAKE_CONSUMER, &[]).await;
        assert_eq!(
            terminated.wait_exit(Duration::from_millis(100)).await,
            None,
            "still running"
        );

        terminated.sigterm();
        killed.sigkill();

        let status = terminated.wait_exit(PROMPTLY).await.expect("exits");
        assert_eq!(status.signal(), Some(15), "{status:?}");
        let status = killed.wait_exit(PROMPTLY).await.expect("exits");
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }

    #[tokio::test]
    async fn a_restart_runs_the_same_flags_again_once_the_child_is_gone() {
        let mut consumer = ServiceProcess::consumer(FAKE_CONSUMER, &["--mode", "poll"]).await;

        consumer.sigkill();
        let status = consumer.restart().await;

        assert_eq!(status.signal(), Some(9), "{status:?}");
        let args = consumer
            .wait_for_log("the new child's serving line", |l| l["args"].is_string())
            .await["args"]
            .clone();
        assert_eq!(args, "--listen 127.0.0.1:0 --log-format json --mode poll");
        assert_eq!(consumer.wait_exit(Duration::from_millis(50)).await, None);
    }

    #[test]
    fn a_producer_gets_a_data_dir_of_its_own_unless_the_test_names_one() {
        let (args, temp) = producer_args(&["--store", "file"]);
        let temp = temp.expect("a temporary directory");
        let dir = flag_value(&args, "--data-dir").expect("--data-dir added");
        assert_eq!(dir, temp.path());
        assert!(dir.is_dir());
        assert_eq!(args[..2], ["--store", "file"]);

        for named in [&["--data-dir", "/x"][..], &["--data-dir=/x"]] {
            let (args, temp) = producer_args(named);
            assert!(temp.is_none(), "{named:?}");
            assert_eq!(flag_value(&args, "--data-dir"), Some("/x".into()));
        }
    }

    #[tokio::test]
    #[should_panic(expected = "before logging the address it serves on")]
    async fn a_child_that_exits_before_serving_fails_the_test_with_its_last_lines() {
        ServiceProcess::consumer(FAKE_CONSUMER, &["exit-early"]).await;
    }

    #[test]
    fn dep_info_lists_the_sources_of_its_first_target() {
        let listed = "/t/debug/consumer: /w/a.rs /w/with\\ space.rs /w/proto\n\n/w/a.rs:\n";
        assert_eq!(
            dep_info_sources(listed),
            [
                PathBuf::from("/w/a.rs"),
                PathBuf::from("/w/with space.rs"),
                PathBuf::from("/w/proto")
            ]
        );
        assert!(dep_info_sources("").is_empty());
    }

    #[test]
    fn a_binary_is_fresh_only_when_newer_than_every_source_it_lists() {
        let dir = tempfile::tempdir().expect("a directory");
        let (source, binary) = (dir.path().join("main.rs"), dir.path().join("bin"));
        let missing = fresh(&binary).unwrap_err();
        assert!(missing.contains("bin"), "{missing}");

        std::fs::write(&source, "fn main() {}").unwrap();
        std::fs::write(&binary, "").unwrap();
        std::fs::write(
            binary.with_extension("d"),
            format!("{}: {}\n", binary.display(), source.display()),
        )
        .unwrap();
        let now = std::time::SystemTime::now();
        let set = |path: &Path, at| {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(at)
                .unwrap()
        };
        set(&source, now - Duration::from_secs(60));
        set(&binary, now);
        assert_eq!(fresh(&binary), Ok(()));

        set(&source, now + Duration::from_secs(1));
        let stale = fresh(&binary).unwrap_err();
        assert!(
            stale.contains("is older than") && stale.contains("main.rs"),
            "{stale}"
        );

        std::fs::remove_file(&source).unwrap();
        assert!(fresh(&binary).is_err(), "a source gone is not fresh");
    }

    #[test]
    fn the_build_goes_to_the_profile_and_target_directory_the_test_runs_from() {
        let args = build_args(
            "pushpull-consumer",
            "consumer",
            Path::new("/w/target/debug"),
        );
        assert_eq!(
            args.join(" "),
            "build --locked -p pushpull-consumer --bin consumer --target-dir /w/target"
        );
        let args = build_args("p", "b", Path::new("/w/target/release"));
        assert!(
            args.join(" ").contains("--release --target-dir /w/target"),
            "{args:?}"
        );
        let args = build_args("p", "b", Path::new("/w/t/ci"));
        assert!(args.join(" ").contains("--profile ci"), "{args:?}");
    }
}
