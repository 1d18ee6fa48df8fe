//! The producer and the consumer as separate processes, so each has its own CPU time, resident
//! memory and socket byte counts in `/proc`.
//!
//! The bench binary runs itself as a child (`pushpull-bench child producer -- FLAGS`): the child
//! calls the real `producer::run_with` / `consumer::run` on a listener bound to `127.0.0.1:0`,
//! prints `LISTENING <addr>` on stdout (a producer adds the address of its HTTP side, for
//! `/metrics`: `LISTENING <grpc> <http>`), and stops when its stdin closes (the parent dropped it
//! or died) or on SIGTERM. The peers scenario's bare tonic server
//! ([`crate::peers::bare`]) is a child the same way (`child peer-stream`), so its CPU is its own.

use std::{
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use clap::Parser as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader},
    net::TcpListener,
    process::{Child, ChildStdin, Command},
};

/// Which real service a child process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Producer,
    Consumer,
    /// Not ours: the peers scenario's plain tonic server of the same service.
    PeerStream,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Producer, Role::Consumer, Role::PeerStream];

    /// The name `pushpull-bench child NAME` takes.
    pub fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
            Role::PeerStream => "peer-stream",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// Entry point of a child process: serve until stdin closes or a signal arrives.
pub async fn serve(role: Role, args: Vec<String>) -> Result<(), String> {
    pushpull::telemetry::init(pushpull::telemetry::LogFormat::Text);
    let argv = std::iter::once(role.name().to_owned()).chain(args);
    // Flags are parsed before LISTENING is printed, so a bad one fails the spawn at once.
    let config = match role {
        Role::Producer => {
            Config::Producer(producer::Config::try_parse_from(argv).map_err(|e| e.to_string())?)
        }
        Role::Consumer => {
            Config::Consumer(consumer::Config::try_parse_from(argv).map_err(|e| e.to_string())?)
        }
        Role::PeerStream => Config::PeerStream(
            crate::peers::bare::Config::try_parse_from(argv).map_err(|e| e.to_string())?,
        ),
    };
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let shutdown = async {
        let stdin_closed = async {
            let mut sink = Vec::new();
            let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        };
        tokio::select! {
            _ = pushpull::shutdown::signal() => {}
            _ = stdin_closed => {}
        }
    };
    match config {
        Config::Producer(config) => {
            let listeners = producer::Listeners {
                grpc: listener,
                http: Some(announce_with_http(addr).await?),
            };
            producer::run_with(config, listeners, shutdown)
                .await
                .map_err(|e| e.to_string())
        }
        Config::Consumer(config) => {
            let listeners = consumer::Listeners {
                grpc: listener,
                metrics: Some(announce_with_http(addr).await?),
            };
            consumer::run_with(config, listeners, shutdown)
                .await
                .map_err(|e| e.to_string())
        }
        Config::PeerStream(config) => {
            println!("LISTENING {addr}");
            crate::peers::bare::serve(config, listener, shutdown).await
        }
    }
}

/// Binds the HTTP port of a service and prints `LISTENING <grpc> <http>`.
///
/// Both services get one: the producer's /metrics, which the storage scenario reads (fsync
/// times, store reads), and the consumer's /metrics and, in webhook mode, the endpoint the
/// producer POSTs to. Idle, it costs nothing.
async fn announce_with_http(grpc: SocketAddr) -> Result<TcpListener, String> {
    let http = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind HTTP: {e}"))?;
    println!(
        "LISTENING {grpc} {}",
        http.local_addr().map_err(|e| e.to_string())?
    );
    Ok(http)
}

/// A child's parsed flags.
enum Config {
    Producer(producer::Config),
    Consumer(consumer::Config),
    PeerStream(crate::peers::bare::Config),
}

/// A running child: its address, its pid for `/proc`, and the stdin that keeps it alive.
pub struct Proc {
    pub addr: SocketAddr,
    /// The HTTP side: the producer's (`/metrics`, `/webhooks`), or the consumer's (`/metrics`,
    /// and `/webhook` in webhook mode).
    pub http: Option<SocketAddr>,
    pub pid: u32,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Proc {
    /// Starts `role` with `args` (its ordinary flags) and waits for its address.
    pub async fn spawn(role: Role, args: &[String]) -> Result<Proc, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("child")
            .arg(role.name())
            .arg("--")
            .args(args)
            .env("PRODUCER_STORE", "memory") // unless a scenario passes --store: flags beat env
            .env(
                "RUST_LOG",
                std::env::var("BENCH_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", role.name()))?;
        let pid = child.id().ok_or("child exited at once")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .map_err(|_| format!("{} did not start within 20 s", role.name()))?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{} exited before listening", role.name()))?;
        let mut addrs = line
            .strip_prefix("LISTENING ")
            .ok_or_else(|| format!("unexpected first line from {}: {line}", role.name()))?
            .split_whitespace()
            .map(|a| a.parse().map_err(|e| format!("address {line}: {e}")));
        let addr = addrs
            .next()
            .ok_or_else(|| format!("no address in {line:?}"))??;
        let http = addrs.next().transpose()?;
        // Keep draining stdout so a chatty child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Proc {
            addr,
            http,
            pid,
            child,
            stdin,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// CPU and memory of the process now.
    pub fn usage(&self) -> Usage {
        Usage::of(self.pid)
    }

    /// CPU and memory now, and the TCP payload bytes this process's connections to `peer` have
    /// received and sent so far.
    pub fn usage_towards(&self, peer: SocketAddr) -> Usage {
        let mut usage = Usage::of(self.pid);
        if let Some((received, sent)) = socket_bytes(self.pid, "dport", peer.port()) {
            usage.read_bytes = received;
            usage.written_bytes = sent;
        }
        usage
    }

    /// [`Proc::usage_towards`], plus the bytes of the connections others opened to this
    /// process's HTTP port: a webhook consumer's traffic is mostly the producer's POSTs.
    pub fn usage_towards_and_http(&self, peer: SocketAddr) -> Usage {
        let mut usage = self.usage_towards(peer);
        if let Some(http) = self.http
            && let Some((received, sent)) = socket_bytes(self.pid, "sport", http.port())
        {
            usage.read_bytes += received;
            usage.written_bytes += sent;
        }
        usage
    }

    /// File descriptors the process has open now (sockets, files, the runtime's own), from
    /// `/proc/PID/fd`.
    pub fn open_fds(&self) -> Option<u64> {
        let entries = std::fs::read_dir(format!("/proc/{}/fd", self.pid)).ok()?;
        Some(entries.count() as u64)
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Closes stdin (the child shuts down gracefully) and waits; kills it after 10 s.
    pub async fn stop(self) {
        self.stop_within(Duration::from_secs(10)).await;
    }

    /// Closes stdin and waits up to `limit` for the child to exit, then kills it. Returns how
    /// long the graceful stop took, or `None` if the child had to be killed or failed.
    pub async fn stop_within(mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        drop(self.stdin.take());
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Some(started.elapsed()),
            Ok(_) => None,
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        }
    }
}

/// A sample of one process's counters from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User + system CPU time, all threads (clock-tick resolution, 10 ms here).
    pub cpu: Duration,
    /// Resident set size now.
    pub rss_bytes: u64,
    /// TCP payload bytes received on the connections measured (see [`Proc::usage_towards`]):
    /// HTTP/2 and gRPC framing included, TCP/IP headers not. 0 when not measured.
    pub read_bytes: u64,
    /// TCP payload bytes sent on those connections.
    pub written_bytes: u64,
    pub at: Option<Instant>,
}

impl Usage {
    pub fn of(pid: u32) -> Usage {
        let at = Some(Instant::now());
        let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = &s[s.rfind(')')? + 1..];
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let utime: u64 = fields.get(11)?.parse().ok()?;
                let stime: u64 = fields.get(12)?.parse().ok()?;
                Some(ticks(utime + stime))
            })
            .unwrap_or_default();
        let rss_bytes = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .map(|kb| kb * 1024)
            .unwrap_or_default();
        Usage {
            cpu,
            rss_bytes,
            read_bytes: 0,
            written_bytes: 0,
            at,
        }
    }

    /// Counters accumulated from `earlier` to `self` (RSS is the later value).
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            rss_bytes: self.rss_bytes,
            read_bytes: self.read_bytes.saturating_sub(earlier.read_bytes),
            written_bytes: self.written_bytes.saturating_sub(earlier.written_bytes),
            at: self.at,
        }
    }
}

fn ticks(n: u64) -> Duration {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Duration::from_nanos(n * 1_000_000_000 / hz)
}

/// Raises the open-file limit to its hard maximum (10,000 streams need some hundreds of sockets;
/// children inherit the limit).
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a properly initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// (received, sent) TCP payload bytes, summed over the established connections of process `pid`
/// whose `side` (`dport`: the peer's port, `sport`: this process's own) is `port`, from the
/// kernel's TCP_INFO as `ss` reports it. `/proc/PID/io` would not
/// do: it counts read()/write() but not the recv()/send() that sockets use. `None` without `ss`.
fn socket_bytes(pid: u32, side: &str, port: u16) -> Option<(u64, u64)> {
    let out = std::process::Command::new("ss")
        .args([
            "-tinpH",
            "state",
            "established",
            side,
            "=",
            &format!(":{port}"),
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let owner = format!("pid={pid},");
    let (mut received, mut sent, mut mine) = (0, 0, false);
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            mine = line.contains(&owner);
            continue;
        }
        if !mine {
            continue;
        }
        for field in line.split_whitespace() {
            if let Some(v) = field.strip_prefix("bytes_received:") {
                received += v.parse::<u64>().unwrap_or(0);
            } else if let Some(v) = field.strip_prefix("bytes_sent:") {
                sent += v.parse::<u64>().unwrap_or(0);
            }
        }
    }
    Some((received, sent))
}
