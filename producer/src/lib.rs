//! The pushpull producer.
//!
//! - [`config`]: flags and environment variables.
//! - [`cli`]: the command line: those flags, or the `healthcheck` subcommand.
//! - [`log`]: the ordered event log: validation, cursor rules, the tail cache of recent events
//!   and the head watch. Knows nothing of gRPC.
//! - [`store`]: where the events live, behind one trait: in memory, or in segment files on
//!   disk.
//! - [`api`]: what the producer does for a client, whatever the transport: publish, subscribe,
//!   poll; gRPC and HTTP are thin adapters over it.
//! - [`limits`]: the request limits every transport applies.
//! - [`auth`]: bearer tokens and their scopes, checked on gRPC and HTTP.
//! - [`capacity`]: how many subscribers, long polls and HTTP streams are served at once.
//! - [`push`]: the channel from a push subscriber's task to its stream (SSE), and the stall
//!   timeout.
//! - [`stall`]: the stall timeout for gRPC subscribers, whose streams HTTP/2 pulls from.
//! - [`follow`]: the one follow loop: a cursor waiting for the head to move, for push streams
//!   and long polls on every transport.
//! - [`service`]: `pushpull.v1.ProducerService` over the [`api`]: Publish, Subscribe (push),
//!   Poll (pull and long poll).
//! - [`error`]: the producer's errors and their one mapping to gRPC statuses.
//! - [`demo`]: an optional source of readable events.
//! - [`http`]: the HTTP side over the same log: SSE, WebSocket, HTTP long polling, `/metrics`,
//!   the dashboard.
//! - [`metrics`]: the Prometheus metrics; `metered` adds them to the gRPC service.
//! - [`webhook`]: webhooks: subscriptions (`WebhookService`), a delivery task each, signed
//!   batches, what an answer means, retry delays.
//!
//! [`run`] wires them to a listener ([`run_with`] to an HTTP listener too); `main.rs` only
//! parses flags, binds and calls it.

pub mod api;
pub mod auth;
pub mod capacity;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod follow;
pub mod http;
pub mod limits;
pub mod log;
mod metered;
pub mod metrics;
pub mod push;
pub mod service;
pub mod stall;
pub mod store;
pub mod webhook;

use std::{future::Future, sync::Arc};

use pushpull::{
    grpc::{self, GrpcServer, ServerOptions},
    pb::webhook_service_server::WebhookServiceServer,
    wire::server::producer_service_server::ProducerServiceServer,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;

use crate::{
    api::Api,
    limits::Limits,
    log::{EventLog, MAX_TOPIC_LEN, PublishLimits, ReadLimits, Tail},
    metered::MeteredApi,
    metrics::Metrics,
    service::ProducerApi,
    store::{
        Retention, Store, StoreKind, StoreMetrics,
        file::{FileOptions, FileStore},
        jetstream::{JetStreamOptions, JetStreamStore},
        memory::MemoryStore,
    },
    webhook::{
        allow::AllowList,
        backoff::Backoff,
        registry::{self, Webhooks},
        service::WebhookApi,
    },
};

/// Why the producer could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Serve(#[from] grpc::ServeError),
    #[error("HTTP server: {0}")]
    Http(String),
    #[error("store: {0}")]
    Store(String),
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
    // Files are read before anything opens: a bad certificate or token file stops the start.
    let tls = config.serving.server_tls().map_err(RunError::Config)?;
    let tokens = auth::Tokens::load(config.tokens_file.as_deref(), config.tokens.as_deref())
        .map_err(RunError::Config)?;
    let listener = listeners.grpc;
    warn_if_exposed(&config, listener.local_addr()?, &listeners.http, &tokens);
    let store_metrics = StoreMetrics::default();
    let log = open_log(&config, &store_metrics).await?;
    let stop = CancellationToken::new();
    let api = Api::new(log.clone(), Limits::new(&config), stop.clone());

    let metrics = Metrics::new(log.clone(), &store_metrics, api.capacity().clone());
    let webhooks = Webhooks::start(webhook_settings(&config)?, api.clone(), metrics.clone())
        .await
        .map_err(RunError::Store)?;
    if config.retention_age.is_some() {
        tokio::spawn(enforce_age_retention(log.clone(), stop.clone()));
    }
    let http = match listeners.http {
        Some(listener) => {
            let state = http::AppState::new(
                &config,
                api.clone(),
                metrics.clone(),
                webhooks.clone(),
                tokens.clone(),
            )
            .map_err(RunError::Config)?;
            let server = pushpull::serve::Server::new(
                "http",
                pushpull::serve::Protocols::Http1And2,
                tls.as_deref().cloned(),
                config.serving.limits(),
            );
            metrics.watch_connections("http", server.stats());
            info!(
                addr = %listener.local_addr()?,
                tls = server.is_tls(),
                "HTTP serving: /events /ws /poll /publish /metrics /"
            );
            Some(tokio::spawn(http::serve(listener, state, server)))
        }
        None => None,
    };

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
        log_id = %log.log_id(),
        store = log.store().kind().name(),
        head = log.head(),
        retention_events = config.retention_events,
        retention_bytes = config.retention_bytes,
        "producer serving"
    );

    let server = GrpcServer::new(
        ProducerServiceServer::new(MeteredApi::new(ProducerApi::new(api), metrics.clone())),
        ServerOptions {
            max_message_bytes: config.max_message_bytes,
            shutdown_grace: config.shutdown_grace,
            limits: config.serving.limits(),
            tls,
        },
    )?
    .with_service(WebhookServiceServer::new(WebhookApi::new(
        webhooks.clone(),
        metrics.clone(),
    )))
    .with_guard(grpc_guard(tokens, metrics.clone()));
    metrics.watch_connections("grpc", server.connection_stats());
    if config.store == StoreKind::Jetstream {
        tokio::spawn(report_store_health(
            log.clone(),
            server.health(),
            stop.clone(),
        ));
    }
    // Whatever ends the gRPC server cancels `stop`, which ends the HTTP side, the demo source
    // and every stream and long poll.
    let served = server.serve(listener, shutdown, stop.clone()).await;
    if let Some(http) = http {
        match tokio::time::timeout(config.shutdown_grace, http).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => return Err(RunError::Http(err.to_string())),
            Ok(Err(err)) => return Err(RunError::Http(err.to_string())),
            Err(_) => warn!(
                grace = %humantime::format_duration(config.shutdown_grace),
                "HTTP connections still open after the shutdown grace period; stopping anyway"
            ),
        }
    }
    // Webhook deliveries stop with `stop`; where their cursors stand is written before the
    // store closes.
    webhooks.close().await;
    // The store closes last, once nothing appends any more: it syncs what is not yet durable.
    let closed = log.close().await;
    served?;
    closed.map_err(|err| RunError::Store(err.to_string()))?;
    info!("producer stopped");
    Ok(())
}

/// The gRPC side of [`auth`]: each method's scope, checked before the call reaches a service;
/// a refusal is counted like any other.
fn grpc_guard(tokens: auth::Tokens, metrics: Metrics) -> grpc::Guard {
    Arc::new(move |path: &str, headers: &axum::http::HeaderMap| {
        let Some(scope) = auth::grpc_scope(path) else {
            return Ok(());
        };
        let authorization = headers.get("authorization").map(|v| v.as_bytes());
        tokens
            .check(authorization, None, scope)
            .map(|_| ())
            .map_err(|err| {
                let err = error::Error::Auth(err);
                metrics.rejected("grpc", err.reason());
                tonic::Status::from(err)
            })
    })
}

/// Says loudly, at start, when a port reachable from other machines is served without TLS or
/// without tokens: fine on a laptop, not beyond one.
fn warn_if_exposed(
    config: &Config,
    grpc: std::net::SocketAddr,
    http: &Option<TcpListener>,
    tokens: &auth::Tokens,
) {
    let http = http.as_ref().and_then(|l| l.local_addr().ok());
    let exposed: Vec<_> = std::iter::once(grpc)
        .chain(http)
        .filter(|addr| !addr.ip().is_loopback())
        .collect();
    if exposed.is_empty() {
        return;
    }
    let tls = config.serving.tls_cert.is_some();
    if !tls || !tokens.enabled() {
        warn!(
            addresses = ?exposed,
            tls,
            tokens = tokens.len(),
            "SERVING BEYOND LOOPBACK WITHOUT {}: anyone who reaches these ports can {}. \
             See README \"Running it securely\" (--tls-cert/--tls-key, --tokens-file).",
            match (tls, tokens.enabled()) {
                (false, false) => "TLS OR TOKENS",
                (false, true) => "TLS",
                _ => "TOKENS",
            },
            if tokens.enabled() {
                "read the traffic, tokens included"
            } else {
                "publish and read every event"
            }
        );
    } else {
        info!(addresses = ?exposed, tokens = tokens.len(), client_certificates = config.serving.tls_client_ca.is_some(), "serving with TLS and bearer tokens");
    }
}

/// The webhook flags as the registry takes them. Subscriptions are kept beside a durable log
/// (`<data-dir>/webhooks.json`), and in memory only with the memory store, whose log is gone
/// at a restart too.
fn webhook_settings(config: &Config) -> Result<registry::Settings, RunError> {
    let allow = AllowList::parse(&config.webhook_allow)
        .map_err(|err| RunError::Config(format!("--webhook-allow: {err}")))?;
    if config
        .webhook_allow
        .split(',')
        .any(|entry| entry.trim() == "*")
    {
        warn!(
            "--webhook-allow '*': webhooks may be sent to any address, internal services included"
        );
    }
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| RunError::Config(format!("{what} {}: {e}", path.display())))
    };
    let tls = webhook::delivery::ClientTls {
        ca: config
            .webhook_ca
            .as_deref()
            .map(|path| read("--webhook-ca", path))
            .transpose()?,
        identity: match (&config.serving.tls_cert, &config.serving.tls_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read("--tls-key", key)?;
                pem.push(b'\n');
                pem.extend(read("--tls-cert", cert)?);
                Some(pem)
            }
            _ => None,
        },
    };
    Ok(registry::Settings {
        allow: Arc::new(allow),
        tls,
        timeout: config.webhook_timeout,
        backoff: Backoff {
            min: config.webhook_retry_min,
            max: config.webhook_retry_max,
        },
        disable_after: config.webhook_disable_after,
        batch: ReadLimits {
            max_events: config.webhook_max_batch_events,
            max_bytes: config.webhook_max_batch_bytes,
        },
        state_file: match config.store {
            StoreKind::Memory => None,
            StoreKind::File | StoreKind::Jetstream => {
                Some(config.data_dir.join(registry::STATE_FILE))
            }
        },
    })
}

/// Opens the store `--store` names, and the log over it.
async fn open_log(config: &Config, metrics: &StoreMetrics) -> Result<EventLog, RunError> {
    let retention = Retention {
        max_events: config.retention_events,
        max_bytes: config.retention_bytes,
        max_age: config.retention_age,
    };
    let limits = PublishLimits {
        max_events: config.max_publish_events,
        max_payload_bytes: config.max_payload_bytes,
    };
    // The memory store is its own cache: a tail cache in front of it would hold the same
    // events twice, and cost every append a second copy.
    let cache_bytes = match config.store {
        StoreKind::Memory => 0,
        StoreKind::File | StoreKind::Jetstream => config.cache_bytes,
    };
    let tail = Arc::new(Tail::new(cache_bytes));
    let store: Arc<dyn Store> = match config.store {
        StoreKind::Memory => Arc::new(MemoryStore::new(retention, Arc::clone(&tail))),
        StoreKind::File => {
            let options = FileOptions {
                dir: config.data_dir.clone(),
                fsync: config.fsync,
                segment_bytes: config.segment_bytes,
                retention,
                truncate_corrupt: config.truncate_corrupt,
                // An event's encoding: its payload, its topic and a few bytes of framing.
                max_body_bytes: config.max_payload_bytes + MAX_TOPIC_LEN + 64,
            };
            let (tail, metrics) = (Arc::clone(&tail), metrics.clone());
            // Recovery reads every segment: not on a runtime worker.
            let opened =
                tokio::task::spawn_blocking(move || FileStore::open(options, tail, metrics))
                    .await
                    .map_err(|err| RunError::Store(err.to_string()))?;
            Arc::new(opened.map_err(|err| RunError::Store(err.to_string()))?)
        }
        StoreKind::Jetstream => {
            let options = JetStreamOptions {
                urls: config.nats_urls.clone(),
                stream: config.nats_stream.clone(),
                replicas: config.nats_replicas,
                retention,
                connect_timeout: NATS_CONNECT_TIMEOUT,
            };
            let opened = JetStreamStore::open(options, Arc::clone(&tail), metrics.clone()).await;
            Arc::new(opened.map_err(|err| RunError::Store(err.to_string()))?)
        }
    };
    Ok(EventLog::new(store, tail, limits))
}

/// How long the producer keeps trying to reach NATS at start (`--store jetstream`): in a
/// compose file or a cluster's start, NATS may come up after the producer.
const NATS_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How often the health of a remote store is looked at.
const STORE_HEALTH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// NOT_SERVING while the store says it cannot serve (NATS unreachable, the stream without a
/// leader), SERVING again once it can: load balancers and healthchecks move clients to a
/// producer that can publish. Streams and long polls stay open meanwhile.
async fn report_store_health(log: EventLog, health: grpc::Health, stop: CancellationToken) {
    let mut serving = true;
    let mut tick = tokio::time::interval(STORE_HEALTH_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = log.store().unavailable().is_none();
        if now != serving {
            serving = now;
            if serving {
                health.set_serving().await;
            } else {
                health.set_not_serving().await;
            }
        }
    }
}

/// How often age retention (`--retention-age`) is applied; count and byte retention are
/// applied at every append.
const AGE_RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

async fn enforce_age_retention(log: EventLog, stop: CancellationToken) {
    let mut tick = tokio::time::interval(AGE_RETENTION_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => log.store().enforce_retention(),
        }
    }
}
