//! The producer's HTTP side (axum), over the same [`EventLog`] and cursor rules as gRPC:
//!
//! - `GET /events`: Server-Sent Events ([`sse`]);
//! - `GET /ws`: WebSocket, subscribe and publish ([`ws`]);
//! - `GET /poll`, `POST /publish`: HTTP (long) polling and publishing in JSON ([`poll`]);
//! - `GET /metrics`: Prometheus text ([`crate::metrics`]);
//! - `GET /consumers`: the consumers' `GetStats` in JSON ([`consumers`]);
//! - `GET /store`: the store's kind, size on disk, segments, cache and fsyncs ([`store`]);
//! - `/webhooks`: webhook subscriptions, created, listed, fetched and deleted ([`webhooks`]);
//! - `GET /`: the live dashboard (`dashboard.html`, embedded).
//!
//! JSON shapes are in [`json`]; errors become responses in one place, [`error`].

pub mod consumers;
pub mod error;
pub mod json;
pub mod params;
pub mod poll;
pub mod sse;
pub mod store;
pub mod webhooks;
pub mod ws;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    http::header,
    middleware,
    response::{Html, IntoResponse, Response},
    routing::{get, post},
    serve::ListenerExt as _,
};
use tokio::net::TcpListener;

use crate::{Config, api::Api, log::EventLog, metrics::Metrics, webhook::registry::Webhooks};
use consumers::ConsumerLink;
use error::Rejected;

/// The dashboard: one page, no build step.
const DASHBOARD: &str = include_str!("dashboard.html");

/// What every handler shares; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The same [`Api`] the gRPC service adapts: log, limits, and the stop signal every SSE
    /// stream, WebSocket and long poll ends with.
    pub api: Api,
    pub metrics: Metrics,
    /// Largest request body (`POST /publish`): the gRPC message limit.
    pub max_body_bytes: usize,
    pub consumers: Arc<Vec<ConsumerLink>>,
    /// What `GET /store` reports of the configuration.
    pub store: Arc<store::StoreSetup>,
    /// The webhook subscriptions, shared with gRPC's `WebhookService`.
    pub webhooks: Webhooks,
}

impl AppState {
    /// The HTTP side's state for a producer configured by `config`, over its `api`. Fails on a
    /// malformed `--consumers` URL.
    pub fn new(
        config: &Config,
        api: Api,
        metrics: Metrics,
        webhooks: Webhooks,
    ) -> Result<Self, String> {
        let consumers = config
            .consumers
            .iter()
            .map(|url| ConsumerLink::new(url))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            api,
            metrics,
            max_body_bytes: config.max_message_bytes,
            consumers: Arc::new(consumers),
            store: Arc::new(store::StoreSetup::new(config)),
            webhooks,
        })
    }

    pub fn log(&self) -> &EventLog {
        self.api.log()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route("/events", get(sse::events))
        .route("/ws", get(ws::upgrade))
        .route("/poll", get(poll::poll))
        .route("/publish", post(poll::publish))
        .route("/metrics", get(metrics))
        .route("/consumers", get(consumers::stats))
        .route("/store", get(store::store))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route(
            "/webhooks/{webhook_id}",
            get(webhooks::get).delete(webhooks::delete),
        )
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::map_response_with_state(
            state.clone(),
            count_rejections,
        ))
        .with_state(state)
}

/// Serves until the producer's stop signal; open streams end with it (each listens to it).
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    let stop = state.api.stop().clone();
    // Small pushes must not wait for Nagle's algorithm (see `pushpull::grpc::incoming`).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Counts every refused request by its reason (set by `ApiError::into_response`).
async fn count_rejections(State(state): State<AppState>, response: Response) -> Response {
    if let Some(Rejected(reason)) = response.extensions().get::<Rejected>() {
        state.metrics.rejected("http", *reason);
    }
    response
}
