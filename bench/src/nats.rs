//! NATS for the jetstream scenario: one JetStream node (testkit's [`NatsServer`]) and a
//! cluster of three on loopback, the CPU time every `nats-server` this process started has
//! used, and a raw `async-nats` client.
//!
//! The cluster is the bench's own until `testkit::nats::NatsCluster` lands: three
//! `nats-server` processes with a route to each other, each with its own store directory.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use async_nats::jetstream;
use tempfile::TempDir;
use testkit::nats::{MAX_PAYLOAD, NatsServer};

/// Why the scenario cannot run here, if `nats-server` is not installed.
pub fn missing() -> Option<String> {
    match Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => None,
        Ok(status) => Some(format!("`nats-server --version` exited with {status}")),
        Err(err) => Some(format!(
            "nats-server is not installed ({err}); install it with `bash .ci/install.d/40-nats.sh`"
        )),
    }
}

/// The servers a run talks to: one node, or a cluster.
pub enum Nats {
    Single(NatsServer),
    Cluster(Cluster),
}

impl Nats {
    /// One JetStream node, on a free port.
    pub async fn single() -> Result<Nats, String> {
        tokio::spawn(NatsServer::start())
            .await
            .map(Nats::Single)
            .map_err(|e| format!("starting nats-server: {e}"))
    }

    /// `n` nodes in one cluster, ready for a stream of `n` replicas.
    pub async fn cluster(n: usize) -> Result<Nats, String> {
        let cluster = tokio::task::spawn_blocking(move || Cluster::start(n))
            .await
            .map_err(|e| format!("starting the NATS cluster: {e}"))??;
        let nats = Nats::Cluster(cluster);
        nats.wait_for_replicas(n).await?;
        Ok(nats)
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
            .connect(urls.as_slice())
            .await
            .map_err(|e| format!("connect NATS {}: {e}", self.urls()))?;
        Ok(jetstream::new(client))
    }

    /// Waits until a stream of `replicas` can be created: a new cluster elects its meta
    /// leader and learns its peers a moment after every node answers `/healthz`.
    async fn wait_for_replicas(&self, replicas: usize) -> Result<(), String> {
        let js = self.jetstream().await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let created = js
                .create_stream(jetstream::stream::Config {
                    name: "BENCH_READY".into(),
                    subjects: vec!["bench.ready".into()],
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => {
                    let _ = js.delete_stream("BENCH_READY").await;
                    return Ok(());
                }
                Err(err) if Instant::now() < deadline => {
                    note_now_and_then(&format!("NATS cluster not ready yet: {err}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => {
                    return Err(format!(
                        "the NATS cluster cannot hold a stream of {replicas} replicas after 30 s: {err}"
                    ));
                }
            }
        }
    }
}

/// A line on stderr at most every 2 s, for a wait that may take a few seconds.
fn note_now_and_then(what: &str) {
    static LAST: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_none_or(|t| t.elapsed() > Duration::from_secs(2)) {
        eprintln!("      {what}");
        *last = Some(Instant::now());
    }
}

/// Three (or `n`) `nats-server` processes routed to each other, killed on drop.
pub struct Cluster {
    nodes: Vec<Node>,
    _dir: TempDir,
}

struct Node {
    child: Child,
    port: u16,
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("a free port: {e}"))
}

/// Whether a node's monitoring port answers `/healthz` with 200.
fn healthy(monitor: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", monitor)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200")
}

impl Cluster {
    fn start(n: usize) -> Result<Cluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("pushpull-bench-nats-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<Result<_, String>>()?;
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route, _)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, &(port, route, monitor)) in ports.iter().enumerate() {
            let config = node_config(dir.path(), i, port, route, monitor, &routes);
            let path = dir.path().join(format!("n{i}.conf"));
            std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
            let child = Command::new("nats-server")
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("start nats-server: {e}"))?;
            nodes.push(Node { child, port });
        }
        let cluster = Cluster { nodes, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        for &(port, _, monitor) in &ports {
            while !healthy(monitor) {
                if Instant::now() > deadline {
                    return Err(format!(
                        "nats-server on port {port} not healthy within 30 s"
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(cluster)
    }

    fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn node_config(
    dir: &Path,
    i: usize,
    port: u16,
    route: u16,
    monitor: u16,
    routes: &[String],
) -> String {
    format!(
        "server_name: n{i}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n\
         max_payload: {MAX_PAYLOAD}\njetstream {{ store_dir: {:?} }}\n\
         cluster {{ name: bench, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
        dir.join(format!("js{i}")),
        routes.join(", ")
    )
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
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
        // After the command: state, ppid, …; utime and stime are the 12th and 13th.
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1) != Some(&me.as_str()) {
            continue;
        }
        total += crate::child::Usage::of(pid).cpu;
    }
    total
}
