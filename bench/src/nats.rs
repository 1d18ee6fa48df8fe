//! NATS for the jetstream scenario: testkit's one JetStream node and three-node loopback
//! cluster, the CPU time every `nats-server` this process started has used, and a raw
//! `async-nats` client on them.

use std::time::Duration;

use async_nats::jetstream;
use testkit::nats::{NatsCluster, NatsServer};

/// Why the scenario cannot run here: `nats-server` is not installed (testkit's lookup).
pub fn missing() -> Option<String> {
    testkit::nats::installed().err()
}

/// The servers a run talks to: one node, or a cluster.
pub enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Nats {
    /// One JetStream node, on free ports.
    pub async fn single() -> Result<Nats, String> {
        // testkit panics when a server does not start: in a task, that is an error here.
        tokio::spawn(NatsServer::start())
            .await
            .map(Nats::Single)
            .map_err(|e| format!("starting nats-server: {}", panic_text(e)))
    }

    /// `n` nodes in one cluster, ready (every node healthy, one meta leader, the whole meta
    /// group known to every node).
    pub async fn cluster(n: usize) -> Result<Nats, String> {
        tokio::spawn(NatsCluster::start(n))
            .await
            .map(Nats::Cluster)
            .map_err(|e| format!("starting a NATS cluster of {n}: {}", panic_text(e)))
    }

    /// The client URLs, as `--nats-urls` takes them (a comma list).
    pub fn urls(&self) -> String {
        match self {
            Nats::Single(server) => server.url(),
            Nats::Cluster(cluster) => cluster.urls(),
        }
    }

    /// A JetStream context on these servers.
    pub async fn jetstream(&self) -> Result<jetstream::Context, String> {
        let urls: Vec<String> = self.urls().split(',').map(str::to_owned).collect();
        let client = async_nats::ConnectOptions::new()
            .name("pushpull-bench")
            .connection_timeout(Duration::from_secs(5))
            .connect(urls.as_slice())
            .await
            .map_err(|e| format!("connect NATS {}: {e}", self.urls()))?;
        Ok(jetstream::new(client))
    }
}

fn panic_text(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "it panicked".into()),
        Err(err) => err.to_string(),
    }
}

/// CPU time (user + system) of every `nats-server` this process started, alive now.
pub fn servers_cpu() -> Duration {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    let mut total = Duration::ZERO;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        if !comm.ends_with("(nats-server") {
            continue;
        }
        // After the command: state, then the parent's pid.
        if rest.split_whitespace().nth(1) != Some(me.as_str()) {
            continue;
        }
        total += crate::child::Usage::of(pid).cpu;
    }
    total
}
