//! What the producer's and the consumer's integration tests share, so each rule of testing
//! (how long is too long, when logs show, how a server is started and stopped) lives once.
//!
//! - [`PROMPTLY`], [`init_test_log`], [`channel`], [`assert_serving`]: the bound for "should
//!   take milliseconds", logs only on request, a gRPC connection, a health check.
//! - [`served`]: a service's `run(config, listener, shutdown)` as a task of the test, on a
//!   listener bound to port 0.
//! - [`process`]: a service's real binary as a child process, on ports the kernel chose and
//!   learnt from its own log lines, with SIGTERM, SIGKILL, a bounded wait for its exit and a
//!   restart on the same data directory; another package's binary, fresh
//!   ([`process::workspace_binary`]).
//! - [`proxy`]: a TCP proxy that cuts connections, refuses them while closed, or follows a
//!   producer to a new port.
//! - [`nats`]: real `nats-server` processes with JetStream, one or a cluster, on loopback ports
//!   of their own, each killed, stopped and restarted on its own store; which node leads a
//!   stream, and whether every node holds it alike.
//! - [`producer_flags`]: the one rule for which store a test's producer uses.
//!
//! Each crate keeps its domain helpers (`TestProducer`, `Proxy`, …) in its own `helpers.rs`,
//! built on these.

pub mod nats;
pub mod process;
pub mod proxy;
pub mod served;

use std::{net::SocketAddr, sync::Once, time::Duration};

use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

pub use nats::{NatsCluster, NatsNode, NatsServer};
pub use process::ServiceProcess;
pub use proxy::Proxy;
pub use served::{Served, Shutdown, bind, bind_if};

/// Bound for anything that should take milliseconds. Generous because these machines are
/// shared and noisy: a bound that is hit means a hang, not a slow run.
pub const PROMPTLY: Duration = Duration::from_secs(10);

/// Logs of in-process servers go to stderr only with `TEST_LOG` set, so a failing run can be
/// replayed verbosely and a passing one stays quiet. Child processes follow the same switch
/// (see [`process`]).
pub fn init_test_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if test_log() {
            pushpull::telemetry::init(pushpull::telemetry::LogFormat::Text);
        }
    });
}

/// The flags an in-process test producer is given: `args`, after `--store memory` unless `args`
/// choose a store or a data directory themselves. The file store is the producer's default, on
/// `./data`: tests running in parallel would share that directory and fail on its lock, and
/// where durability is not what a test is about, memory is faster. A test of the file store
/// says so, with a directory of its own. (A producer binary gets a fresh directory instead:
/// see [`ServiceProcess::producer`].)
pub fn producer_flags<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let chosen = has_flag(args, "--store") || has_flag(args, "--data-dir");
    let default: &[&str] = if chosen { &[] } else { &["--store", "memory"] };
    default.iter().chain(args).copied().collect()
}

/// Whether `args` give the flag `name`, as `name VALUE` or `name=VALUE`.
fn has_flag<S: AsRef<str>>(args: &[S], name: &str) -> bool {
    args.iter().any(|arg| {
        let arg = arg.as_ref();
        arg == name
            || arg
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('='))
    })
}

/// Whether the run asked for logs (`TEST_LOG` set to anything).
fn test_log() -> bool {
    std::env::var_os("TEST_LOG").is_some()
}

/// A new HTTP/2 connection to a test server at `addr`. Panics when it cannot connect: every
/// caller has just learnt the address from a server that is listening.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("an address makes a valid URI")
        .connect()
        .await
        .unwrap_or_else(|err| panic!("connect to {addr}: {err}"))
}

/// Asserts that the server at `addr` reports SERVING through `grpc.health.v1.Health`, both as
/// a whole (service `""`, what load balancers ask) and for `service`.
pub async fn assert_serving(addr: SocketAddr, service: &str) {
    let mut health = HealthClient::new(channel(addr).await);
    for name in ["", service] {
        let status = health
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap_or_else(|status| panic!("health check of {name:?}: {status:?}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {name:?}");
    }
}

/// The connections `listener` accepts, as a stream a test can end the way a dead listener's
/// would: aborting the returned handle ends the stream (and drops the listener), without any
/// shutdown signal. For `serve_incoming` / `run_incoming`.
pub fn closable_incoming(
    listener: tokio::net::TcpListener,
) -> (
    tokio_stream::wrappers::ReceiverStream<std::io::Result<tokio::net::TcpStream>>,
    tokio::task::AbortHandle,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let acceptor = tokio::spawn(async move {
        loop {
            let accepted = listener.accept().await.map(|(stream, _)| stream);
            if tx.send(accepted).await.is_err() {
                return;
            }
        }
    });
    (
        tokio_stream::wrappers::ReceiverStream::new(rx),
        acceptor.abort_handle(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_producer_uses_memory_unless_the_test_chooses() {
        assert_eq!(
            producer_flags(&["--demo-rate", "5"]),
            ["--store", "memory", "--demo-rate", "5"]
        );
        for chosen in [
            &["--store", "file", "--data-dir", "/tmp/x"][..],
            &["--store=file"],
            &["--data-dir", "/tmp/x"],
            &["--data-dir=/tmp/x"],
        ] {
            assert_eq!(producer_flags(chosen), chosen, "{chosen:?}");
        }
        assert!(!has_flag(&["--store-thing"], "--store"));
    }
}
