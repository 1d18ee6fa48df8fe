//! A service's real binary as a child process, for what only a process shows: signals, exit
//! codes, what is on disk after it is gone.
//!
//! The child listens on 127.0.0.1:0 and logs JSON lines; the addresses it was given are read
//! from its own "serving" lines, so no port is ever guessed (a port found free a moment earlier
//! can be taken by the time the child binds it). The child's log lines are kept for
//! [`ServiceProcess::wait_for_log`], and echoed to the test's stderr with `TEST_LOG` set.

use std::{net::SocketAddr, process::ExitStatus, process::Stdio, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

use crate::{PROMPTLY, test_log};

/// How many of the child's last log lines a failure message shows.
const LINES_SHOWN: usize = 20;

/// A producer or consumer binary running as a child of the test, killed (SIGKILL) if the test
/// ends without waiting for it.
#[derive(Debug)]
pub struct ServiceProcess {
    /// The gRPC address the child logged.
    pub addr: SocketAddr,
    /// The producer's HTTP address; `None` for a consumer.
    pub http: Option<SocketAddr>,
    name: &'static str,
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
    pub async fn producer(program: &str, args: &[&str]) -> Self {
        let fixed = ["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
        let mut process = Self::spawn("producer", program, &fixed, args);
        process.addr = process.logged_addr(|m| m == "producer serving").await;
        // The message goes on to list the routes, which may change; its start does not.
        process.http = Some(process.logged_addr(|m| m.starts_with("HTTP serving")).await);
        process
    }

    /// Starts the consumer binary at `program` (`env!("CARGO_BIN_EXE_consumer")`) with gRPC on
    /// 127.0.0.1:0, and `args` after that; returns once it has logged its address.
    pub async fn consumer(program: &str, args: &[&str]) -> Self {
        let fixed = ["--listen", "127.0.0.1:0"];
        let mut process = Self::spawn("consumer", program, &fixed, args);
        process.addr = process.logged_addr(|m| m == "consumer serving").await;
        process
    }

    fn spawn(name: &'static str, program: &str, fixed: &[&str], args: &[&str]) -> Self {
        let mut child = Command::new(program)
            .args(fixed)
            .args(["--log-format", "json"])
            .args(args)
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
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            http: None,
            name,
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

    /// The `addr` field of the first line whose message `matches`.
    async fn logged_addr(&mut self, matches: impl Fn(&str) -> bool) -> SocketAddr {
        let line = self
            .wait_for_log("the address it serves on", |line| {
                line["message"].as_str().is_some_and(&matches) && line["addr"].is_string()
            })
            .await;
        let addr = line["addr"].as_str().expect("matched a string addr");
        addr.parse()
            .unwrap_or_else(|err| panic!("{} logged addr {addr:?}: {err}", self.name))
    }

    fn last_lines(&self) -> String {
        let skip = self.seen.len().saturating_sub(LINES_SHOWN);
        let lines: Vec<String> = self.seen[skip..].iter().map(Value::to_string).collect();
        lines.join("\n")
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
    #[should_panic(expected = "before logging the address it serves on")]
    async fn a_child_that_exits_before_serving_fails_the_test_with_its_last_lines() {
        ServiceProcess::consumer(FAKE_CONSUMER, &["exit-early"]).await;
    }
}
