//! The pushpull producer.
//!
//! - [`config`]: flags and environment variables.
//! - [`cli`]: the command line: those flags, or the `healthcheck` subcommand.
//! - [`log`]: the ordered event log, its cursor rules and retention. Knows nothing of gRPC.
//! - [`service`]: `pushpull.v1.ProducerService` over the log: Publish, Subscribe (push), Poll
//!   (pull and long poll).
//! - [`follow`]: waiting for the head to move: one long-poll loop and one follower for every
//!   transport, so gRPC and HTTP readers behave alike.
//! - [`error`]: the producer's errors and their one mapping to gRPC statuses.
//! - [`demo`]: an optional source of readable events.
//! - [`http`]: the HTTP side over the same log: SSE, WebSocket, HTTP long polling, `/metrics`,
//!   the dashboard.
//! - [`metrics`]: the Prometheus metrics; `metered` adds them to the gRPC service.
//!
//! [`run`] wires them to a listener ([`run_with`] to an HTTP listener too); `main.rs` only
//! parses flags, binds and calls it.

pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod follow;
pub mod http;
pub mod log;
mod metered;
pub mod metrics;
pub mod service;

use std::future::Future;

use pushpull::{grpc, wire::server::producer_service_server::ProducerServiceServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{codec::CompressionEncoding, server::NamedService as _, transport::Server};
use tracing::{info, warn};

pub use config::Config;

use crate::{
    log::{EventLog, PublishLimits, Retention},
    metered::MeteredApi,
    metrics::Metrics,
    service::{ProducerApi, Settings},
};

/// Why the producer could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("HTTP server: {0}")]
    Http(String),
}

/// Where the producer serves: gRPC always, HTTP (SSE, WebSocket, long polling, /metrics, the
/// dashboard) when a listener is given.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: Option<TcpListener>,
}

/// Serves the producer's gRPC API on `listener` until `shutdown` resolves, then ends open streams
/// and long polls with UNAVAILABLE and returns once connections have closed (or after
/// `config.shutdown_grace`, whichever is first). No HTTP side: see [`run_with`].
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let listeners = Listeners {
        grpc: listener,
        http: None,
    };
    run_with(config, listeners, shutdown).await
}

/// [`run`], plus the HTTP side on `listeners.http` when given (the caller binds it, as it binds
/// gRPC's, so tests use port 0). Shutdown ends SSE streams, WebSockets and HTTP long polls too.
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate().map_err(RunError::Config)?;
    let listener = listeners.grpc;
    let log = EventLog::new(
        Retention {
            max_events: config.retention_events,
            max_bytes: config.retention_bytes,
        },
        PublishLimits {
            max_events: config.max_publish_events,
            max_payload_bytes: config.max_payload_bytes,
        },
    );
    let stop = CancellationToken::new();
    let api = ProducerApi::new(
        log.clone(),
        Settings {
            default_poll_events: config.default_poll_events,
            max_poll_events: config.max_poll_events,
            max_poll_wait: config.max_poll_wait,
            max_batch_events: config.max_batch_events,
            max_batch_bytes: config.max_batch_bytes,
            heartbeat_interval: config.heartbeat_interval,
        },
        stop.clone(),
    );

    let metrics = Metrics::new(log.clone());
    let http = match listeners.http {
        Some(listener) => {
            let state = http::AppState::new(&config, log.clone(), metrics.clone(), stop.clone())
                .map_err(RunError::Config)?;
            info!(addr = %listener.local_addr()?, "HTTP serving: /events /ws /poll /publish /metrics /");
            Some(tokio::spawn(http::serve(listener, state)))
        }
        None => None,
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ProducerServiceServer<ProducerApi>>()
        .await;

    if config.demo_rate > 0 {
        tokio::spawn(demo::run(
            log.clone(),
            config.demo_rate,
            config.max_publish_events,
            stop.clone(),
        ));
    }

    info!(
        addr = %listener.local_addr()?,
        log_id = log.log_id(),
        retention_events = config.retention_events,
        retention_bytes = config.retention_bytes,
        "producer serving"
    );

    let producer_service = ProducerServiceServer::new(MeteredApi::new(api, metrics))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);

    let stopping = {
        let stop = stop.clone();
        async move {
            shutdown.await;
            info!("shutdown: refusing new calls, ending open streams");
            health
                .set_not_serving::<ProducerServiceServer<ProducerApi>>()
                .await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            stop.cancel();
        }
    };

    let server = Server::builder()
        .http2_keepalive_interval(Some(grpc::HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(grpc::HTTP2_KEEPALIVE_TIMEOUT))
        .add_service(health_service)
        .add_service(grpc::reflection_v1(
            ProducerServiceServer::<ProducerApi>::NAME,
        )?)
        .add_service(grpc::reflection_v1alpha(
            ProducerServiceServer::<ProducerApi>::NAME,
        )?)
        .add_service(producer_service)
        .serve_with_incoming_shutdown(grpc::incoming(listener), stopping);
    let servers = async {
        let served = server.await;
        // Whatever ended the gRPC server (shutdown, or an error) ends the HTTP side too.
        stop.cancel();
        served?;
        if let Some(http) = http {
            http.await
                .map_err(|e| RunError::Http(e.to_string()))?
                .map_err(|e| RunError::Http(e.to_string()))?;
        }
        Ok::<(), RunError>(())
    };

    // tonic waits for every connection to close; a client that never reads could hold it open
    // forever, so the wait is bounded.
    let grace = config.shutdown_grace;
    tokio::select! {
        served = servers => served?,
        _ = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!(?grace, "connections still open after the shutdown grace period; exiting anyway");
        }
    }
    info!("producer stopped");
    Ok(())
}
