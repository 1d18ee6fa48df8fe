//! Real `nats-server` processes for tests: JetStream on, on free loopback ports, each in a
//! temporary directory, killed on drop.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// The `max_payload` the producer's JetStream store needs (a Publish is one message).
pub const MAX_PAYLOAD: &str = "8MB";

/// One JetStream-enabled server.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Whether the monitoring endpoint answers `/healthz` with 200 (JetStream ready).
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

impl NatsServer {
    /// Starts a single node and waits until JetStream is ready. Panics (with what to do)
    /// when `nats-server` is not installed.
    pub fn start() -> Self {
        let dir = TempDir::new().expect("a temporary directory");
        let (port, monitor) = (free_port(), free_port());
        let config = dir.path().join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\nmax_payload: {MAX_PAYLOAD}\n\
                 jetstream {{ store_dir: {:?} }}\n",
                dir.path().join("js")
            ),
        )
        .expect("writes the config");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start nats-server ({err}): install it with `bash .ci/install.d/40-nats.sh`"
                )
            });
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !healthy(monitor) {
            assert!(
                Instant::now() < deadline,
                "nats-server on port {port} not healthy within 20s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
