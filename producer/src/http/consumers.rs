//! `GET /consumers`: the dashboard's view of the consumers. A browser cannot call gRPC, so the
//! producer asks each consumer named by `--consumers` for its `GetStats` and answers in JSON.
//! A consumer that does not answer within a second is listed with its error, not left out.

use std::time::Duration;

use axum::{Json, extract::State};
use pushpull::{
    pb::{self, consumer_service_client::ConsumerServiceClient},
    time::std_duration,
    tls::ClientFiles,
};
use serde::Serialize;
use tonic::transport::Channel;

use super::AppState;

/// How long one consumer gets to answer.
const STATS_TIMEOUT: Duration = Duration::from_secs(1);

/// A consumer the dashboard shows, with a lazily connected channel that reconnects by itself.
#[derive(Debug, Clone)]
pub struct ConsumerLink {
    pub url: String,
    client: ConsumerServiceClient<Channel>,
}

/// The flags whose files [`ClientFiles`] holds here, as messages name them.
const TLS_FLAGS: [&str; 3] = ["--consumers-ca", "--tls-cert", "--tls-key"];

impl ConsumerLink {
    /// Fails on a malformed URL or unreadable TLS files; an unreachable consumer is reported per
    /// request. `tls` applies to `https://` consumers only: a list may mix them with plaintext
    /// ones, and the producer's own certificate (its `--tls-cert`) is there whatever the list.
    pub fn new(url: &str, tls: &ClientFiles) -> Result<Self, String> {
        let plaintext = ClientFiles::default();
        let tls = if url.starts_with("https://") {
            tls
        } else {
            &plaintext
        };
        let endpoint = pushpull::tls::endpoint(url, tls, TLS_FLAGS)
            .map_err(|e| format!("--consumers {url:?}: {e}"))?
            .connect_timeout(STATS_TIMEOUT)
            .timeout(STATS_TIMEOUT);
        Ok(Self {
            url: url.to_owned(),
            client: ConsumerServiceClient::new(endpoint.connect_lazy()),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct ConsumersJson {
    consumers: Vec<ConsumerJson>,
}

#[derive(Debug, Serialize)]
struct ConsumerJson {
    url: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<StatsJson>,
}

/// `GetStatsResponse` in JSON, latencies in milliseconds.
#[derive(Debug, Serialize)]
struct StatsJson {
    mode: &'static str,
    connected: bool,
    log_id: String,
    events_received: u64,
    last_sequence: u64,
    after_sequence: Option<u64>,
    events_missed: u64,
    duplicates_dropped: u64,
    rpcs_sent: u64,
    empty_responses: u64,
    reconnects: u64,
    log_changes: u64,
    webhooks_received: u64,
    webhooks_refused: u64,
    events_backfilled: u64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    latency_p999_ms: f64,
    latency_max_ms: f64,
    producer: String,
    topics: Vec<String>,
}

fn ms(d: Option<prost_types::Duration>) -> f64 {
    d.as_ref()
        .and_then(|d| std_duration(d).ok())
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

impl From<pb::GetStatsResponse> for StatsJson {
    fn from(s: pb::GetStatsResponse) -> Self {
        Self {
            mode: s.mode().name(),
            connected: s.connected,
            log_id: s.log_id,
            events_received: s.events_received,
            last_sequence: s.last_sequence,
            after_sequence: s.after_sequence,
            events_missed: s.events_missed,
            duplicates_dropped: s.duplicates_dropped,
            rpcs_sent: s.rpcs_sent,
            empty_responses: s.empty_responses,
            reconnects: s.reconnects,
            log_changes: s.log_changes,
            webhooks_received: s.webhooks_received,
            webhooks_refused: s.webhooks_refused,
            events_backfilled: s.events_backfilled,
            latency_p50_ms: ms(s.latency_p50),
            latency_p99_ms: ms(s.latency_p99),
            latency_p999_ms: ms(s.latency_p999),
            latency_max_ms: ms(s.latency_max),
            producer: s.producer,
            topics: s.topics,
        }
    }
}

pub async fn stats(State(state): State<AppState>) -> Json<ConsumersJson> {
    let calls = state.consumers.iter().map(|link| {
        let mut client = link.client.clone();
        async move {
            let answer =
                tokio::time::timeout(STATS_TIMEOUT, client.get_stats(pb::GetStatsRequest {})).await;
            match answer {
                Ok(Ok(response)) => ConsumerJson {
                    url: link.url.clone(),
                    ok: true,
                    error: None,
                    stats: Some(response.into_inner().into()),
                },
                Ok(Err(status)) => ConsumerJson {
                    url: link.url.clone(),
                    ok: false,
                    error: Some(format!("{:?}: {}", status.code(), status.message())),
                    stats: None,
                },
                Err(_) => ConsumerJson {
                    url: link.url.clone(),
                    ok: false,
                    error: Some(format!("no answer within {STATS_TIMEOUT:?}")),
                    stats: None,
                },
            }
        }
    });
    Json(ConsumersJson {
        consumers: futures_util::future::join_all(calls).await,
    })
}
