//! The pushpull consumer.
//!
//! - [`config`]: flags and environment variables.
//! - [`cli`]: the command line: those flags, or the `healthcheck` and `stats` subcommands.
//! - [`reader`]: the push / poll / long-poll loop and its cursor, with reconnection.
//! - [`webhook`]: webhook mode: the `POST /webhook` receiver (signature, gap filling, the 2xx
//!   only once the cursor is saved), the registration and the backfill by Poll, over the same
//!   reader.
//! - [`producers`]: the producers of `--producer`, one gRPC client each, and the round-robin
//!   rule for failing over between them.
//! - [`backoff`]: reconnection delays.
//! - [`checkpoint`]: the cursor on disk, written atomically and durably by a writer task, off the
//!   runtime's workers.
//! - [`stats`]: counters and the latency histogram.
//! - [`service`]: `pushpull.v1.ConsumerService` (GetStats) over the stats.
//! - [`metrics`]: the same stats as Prometheus metrics, on an optional HTTP listener (which
//!   webhook mode also receives on).
//!
//! [`run`] wires them together ([`run_with`] adds the HTTP listener, [`run_incoming`] takes
//! the gRPC connections from any stream); `main.rs` only parses flags, binds and calls it.

pub mod backoff;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod producers;
pub mod reader;
pub mod service;
pub mod stats;
pub mod webhook;

use std::{future::Future, net::SocketAddr, time::Duration};

use axum::Router;
use pushpull::{
    grpc::{self, GrpcServer, ServerOptions},
    pb::consumer_service_server::ConsumerServiceServer,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, info_span, warn};

pub use config::{Config, Mode, StartFrom};

use crate::{
    producers::Producers,
    reader::{Cursor, Reader, ReaderSettings},
    service::ConsumerApi,
    stats::Stats,
};

/// How long GetStats connections get to close at shutdown: they are unary calls, so this is
/// only ever reached by a client that never reads.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the consumer could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Serve(#[from] grpc::ServeError),
}

/// Where the consumer serves: GetStats (gRPC) always; `/metrics` (HTTP) when an HTTP listener
/// is given, and `/webhook` on it in webhook mode, which needs one.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    /// The HTTP listener (`--metrics-listen`).
    pub metrics: Option<TcpListener>,
}

/// Reads from the producer and serves GetStats on `listener` until `shutdown` resolves; then
/// stops reading, saves the checkpoint and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let listeners = Listeners {
        grpc: listener,
        metrics: None,
    };
    run_with(config, listeners, shutdown).await
}

/// [`run`], plus `GET /metrics` (and `POST /webhook` in webhook mode) on `listeners.metrics`
/// when given (the caller binds it).
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let addr = listeners.grpc.local_addr()?;
    let incoming = grpc::incoming(listeners.grpc);
    serve(config, incoming, Some(addr), listeners.metrics, shutdown).await
}

/// [`run_with`], serving GetStats on the connections `incoming` yields rather than on a
/// listener. When the stream ends although `shutdown` has not resolved (a listener that died),
/// the consumer stops reading, saves its checkpoint and returns
/// `Err(RunError::Serve(ServeError::ListenerClosed))`; tests end it on purpose.
pub async fn run_incoming(
    config: Config,
    incoming: impl grpc::Incoming,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    serve(config, incoming, None, metrics, shutdown).await
}

/// The one body of [`run_with`] and [`run_incoming`]; `addr` is the listener's, for the
/// `consumer serving` line (which scripts and test helpers read the bound port from).
async fn serve(
    config: Config,
    incoming: impl grpc::Incoming,
    addr: Option<SocketAddr>,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate().map_err(RunError::Config)?;
    let metrics = metrics
        .map(|l| l.local_addr().map(|addr| (l, addr)))
        .transpose()?;
    if config.mode == Mode::Webhook && metrics.is_none() {
        return Err(RunError::Config(config::WEBHOOK_NEEDS_HTTP.into()));
    }
    let cursor = start_cursor(&config).await?;
    let stats = Stats::new(config.mode, config.producer.clone(), config.topics.clone());
    let token = config.producer_token().map_err(RunError::Config)?;
    let producers = Producers::with_tls(
        &config.producer,
        config.max_message_bytes,
        &config.producer_tls(),
        token.as_deref(),
    )
    .map_err(RunError::Config)?;
    let tls = config.serving.server_tls().map_err(RunError::Config)?;
    let http = pushpull::serve::Server::new(
        "http",
        pushpull::serve::Protocols::Http1And2,
        tls.as_deref().cloned(),
        config.serving.limits(),
    );
    let server = GrpcServer::new(
        ConsumerServiceServer::new(ConsumerApi::new(stats.clone())),
        ServerOptions {
            max_message_bytes: config.max_message_bytes,
            shutdown_grace: SHUTDOWN_GRACE,
            limits: config.serving.limits(),
            tls,
        },
    )?;

    // Nothing below returns early: once the reader runs, it is stopped and awaited, and its
    // checkpoint writer after it, on every way out.
    let stop = CancellationToken::new();
    let (checkpoints, checkpoint_writer) = match &config.checkpoint {
        Some(path) => {
            let (latest, writer) = checkpoint::writer(
                path.clone(),
                cursor.checkpoint(),
                config.checkpoint_interval,
            );
            (Some(latest), Some(tokio::spawn(writer)))
        }
        None => (None, None),
    };
    let reader = Reader::new(
        producers,
        ReaderSettings::from(&config),
        cursor,
        stats.clone(),
        checkpoints,
    );
    // Every line the reader and the summary log names the mode, so several consumers writing
    // to one terminal (scripts/run-local.sh) can be told apart.
    let span = info_span!("consumer", mode = %config.mode);
    // Webhook mode hands the reader to the receiver, which the HTTP routes and the
    // registration / backfill task share; the other modes run it on its own.
    let (reader_task, webhook_routes) = match (config.mode, &metrics) {
        (Mode::Webhook, Some((_, http_addr))) => {
            let settings = webhook::Settings::new(&config, http_addr.port());
            let receiver = webhook::Receiver::new(reader, settings, stats.clone(), stop.clone());
            let routes = receiver.router();
            let task = tokio::spawn(webhook::run(receiver, stop.clone()).instrument(span.clone()));
            (task, Some(routes))
        }
        _ => (
            tokio::spawn(reader.run(stop.clone()).instrument(span.clone())),
            None,
        ),
    };
    if !config.summary_interval.is_zero() {
        tokio::spawn(
            log_summaries(stats.clone(), config.summary_interval, stop.clone()).instrument(span),
        );
    }
    let http_server = metrics.map(|(listener, addr)| {
        info!(addr = %addr, "serving /metrics");
        let mut app = metrics::router(metrics::Metrics::new(stats.clone()));
        if let Some(routes) = webhook_routes {
            info!(addr = %addr, path = webhook::PATH, "serving webhooks");
            app = app.merge(routes);
        }
        tokio::spawn(serve_http(listener, app, http, stop.clone()))
    });

    info!(
        addr = addr.map(tracing::field::display),
        producer = %config.producer.join(","),
        mode = %config.mode,
        "consumer serving"
    );
    // Whatever ends the server (shutdown, or the listener failing) cancels `stop`: the reader
    // then returns, its checkpoint writer saves the final cursor, and both are awaited before
    // any error is reported.
    let served = server
        .serve_incoming(incoming, shutdown, stop.clone())
        .await;
    if let Err(err) = reader_task.await {
        warn!(%err, "reader task failed");
    }
    // In webhook mode the HTTP routes hold the reader too: the server ends (on `stop`) before
    // the final checkpoint can be awaited.
    if let Some(server) = http_server {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(%err, "HTTP server failed"),
            Err(err) => warn!(%err, "HTTP server task failed"),
        }
    }
    // The reader has dropped its handle (even if it panicked), so this is the final save.
    if let Some(writer) = checkpoint_writer
        && let Err(err) = writer.await
    {
        warn!(%err, "checkpoint writer task failed");
    }
    served?;
    info!("consumer stopped");
    Ok(())
}

/// Serves `app` (`/metrics`, and `/webhook` in webhook mode) on `listener` until `stop` is
/// cancelled, letting requests in flight finish (a webhook in progress answers 503 at `stop`).
async fn serve_http(
    listener: TcpListener,
    app: Router,
    server: pushpull::serve::Server,
    stop: CancellationToken,
) -> std::io::Result<()> {
    server.serve(grpc::incoming(listener), app, stop).await;
    Ok(())
}

/// The starting cursor: the checkpoint when there is one, else `--from`. The file is read on a
/// blocking thread, like every checkpoint write.
async fn start_cursor(config: &Config) -> Result<Cursor, RunError> {
    if let Some(path) = config.checkpoint.clone() {
        let loaded = tokio::task::spawn_blocking({
            let path = path.clone();
            move || checkpoint::load(&path)
        })
        .await
        .map_err(|join| {
            RunError::Checkpoint(checkpoint::CheckpointError::Io {
                path: path.clone(),
                source: std::io::Error::other(join),
            })
        })??;
        if let Some(cp) = loaded {
            info!(
                path = %path.display(),
                log_id = %cp.log_id,
                after_sequence = cp.after_sequence,
                "resuming from checkpoint"
            );
            return Ok(Cursor {
                log_id: Some(cp.log_id),
                after: Some(cp.after_sequence),
            });
        }
    }
    Ok(Cursor {
        log_id: None,
        after: config.from.cursor(),
    })
}

/// Logs one line every `every`: the GetStats counters under their proto names, latencies in
/// milliseconds, and the event and RPC rates over the last `every`.
async fn log_summaries(stats: Stats, every: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    let mut previous = stats.summary();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = stats.summary();
        let per_s = |n: u64| round_to(n as f64 / every.as_secs_f64(), 10.0);
        let ms = |d: Duration| round_to(d.as_secs_f64() * 1000.0, 1000.0);
        info!(
            events_per_s = per_s(now.events_received - previous.events_received),
            events_received = now.events_received,
            last_sequence = now.last_sequence,
            events_missed = now.events_missed,
            duplicates_dropped = now.duplicates_dropped,
            latency_p50_ms = ms(now.p50),
            latency_p99_ms = ms(now.p99),
            rpcs_sent = now.rpcs_sent,
            rpcs_per_s = per_s(now.rpcs_sent - previous.rpcs_sent),
            reconnects = now.reconnects,
            failovers = now.failovers,
            webhooks_received = now.webhooks_received,
            webhooks_refused = now.webhooks_refused,
            events_backfilled = now.events_backfilled,
            "summary"
        );
        previous = now;
    }
}

/// `x` rounded to `1 / per` (`per` 10.0: one decimal), so a log line shows `19.9`, not
/// `19.900000000000002`.
fn round_to(x: f64, per: f64) -> f64 {
    (x * per).round() / per
}
