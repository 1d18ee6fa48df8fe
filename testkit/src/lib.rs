//! What the producer's and the consumer's integration tests share, so each rule of testing
//! (how long is too long, when logs show, how a server is started and stopped) lives once.
//!
//! - [`PROMPTLY`], [`init_test_log`], [`channel`], [`assert_serving`]: the bound for "should
//!   take milliseconds", logs only on request, a gRPC connection, a health check.
//! - [`served`]: a service's `run(config, listener, shutdown)` as a task of the test, on a
//!   listener bound to port 0.
//! - [`process`]: a service's real binary as a child process, on ports the kernel chose and
//!   learnt from its own log lines, with SIGTERM, SIGKILL and a bounded wait for its exit.
//!
//! Each crate keeps its domain helpers (`TestProducer`, `Proxy`, …) in its own `helpers.rs`,
//! built on these.

pub mod process;
pub mod served;

use std::{net::SocketAddr, sync::Once, time::Duration};

use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

pub use process::ServiceProcess;
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
