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

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::header,
    middleware,
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use tokio::net::TcpListener;

use crate::{
    Config,
    api::Api,
    auth::{Scope, Tokens},
    error::Error,
    log::EventLog,
    metrics::Metrics,
    webhook::registry::Webhooks,
};
use consumers::ConsumerLink;
use error::ApiError;
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
    /// The bearer tokens every route but the dashboard page checks ([`authorize`]).
    pub tokens: Tokens,
    /// Whether `/metrics` needs a token with the `metrics` scope (`--metrics-auth`).
    pub metrics_auth: bool,
}

impl AppState {
    /// The HTTP side's state for a producer configured by `config`, over its `api`. Fails on a
    /// malformed `--consumers` URL, or TLS files for them that cannot be read.
    pub fn new(
        config: &Config,
        api: Api,
        metrics: Metrics,
        webhooks: Webhooks,
        tokens: Tokens,
    ) -> Result<Self, String> {
        // For https:// consumers: the CA that signed theirs, and the producer's own
        // certificate for those that ask for a client's.
        let consumers_tls = pushpull::tls::ClientFiles {
            ca: config.consumers_ca.clone(),
            cert: config.serving.tls_cert.clone(),
            key: config.serving.tls_key.clone(),
        };
        let consumers = config
            .consumers
            .iter()
            .map(|url| ConsumerLink::new(url, &consumers_tls))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            api,
            metrics,
            max_body_bytes: config.max_message_bytes,
            consumers: Arc::new(consumers),
            store: Arc::new(store::StoreSetup::new(config)),
            webhooks,
            tokens,
            metrics_auth: config.metrics_auth,
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
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::map_response_with_state(
            state.clone(),
            count_rejections,
        ))
        .with_state(state)
}

/// Serves on `listener` with `server`'s TLS and limits until the producer's stop signal;
/// open streams end with it (each listens to it).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    server: pushpull::serve::Server,
) -> std::io::Result<()> {
    let stop = state.api.stop().clone();
    server
        .serve(pushpull::grpc::incoming(listener), router(state), stop)
        .await;
    Ok(())
}

/// What a route needs of its caller.
enum Needs {
    /// Nothing: the dashboard page (it holds no data; its requests carry the token).
    Nothing,
    /// A valid token, whatever its scopes: a WebSocket, whose messages are checked one by one.
    Token,
    Scope(Scope),
}

/// Checks the bearer token (the `Authorization` header; on `/events` and `/ws`, which browsers
/// open without headers, the `access_token` query parameter too) against what the route needs,
/// and hands the caller to the handler. A refusal is a 401 or 403 with the usual JSON error.
async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: middleware::Next,
) -> Response {
    let path = request.uri().path();
    let needs = match path {
        "/" => Needs::Nothing,
        "/metrics" if !state.metrics_auth => Needs::Nothing,
        "/metrics" => Needs::Scope(Scope::Metrics),
        "/publish" => Needs::Scope(Scope::Publish),
        "/ws" => Needs::Token,
        _ => Needs::Scope(Scope::Read),
    };
    let access_token = match path {
        "/events" | "/ws" => request.uri().query().and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == "access_token")
                .map(|(_, token)| token.into_owned())
        }),
        _ => None,
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    let caller = match needs {
        Needs::Nothing => Ok(None),
        Needs::Token => state
            .tokens
            .caller(authorization, access_token.as_deref())
            .map(Some),
        Needs::Scope(scope) => state
            .tokens
            .check(authorization, access_token.as_deref(), scope)
            .map(Some),
    };
    match caller {
        Ok(Some(caller)) => {
            request.extensions_mut().insert(caller);
        }
        Ok(None) => {}
        Err(err) => return ApiError::from(Error::Auth(err)).into_response(),
    }
    next.run(request).await
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
