//! `GET /store`: where the log lives and what it costs, in JSON, for the dashboard (the same
//! numbers as the `pushpull_producer_store_*`, `cache_*` and `fsync_seconds` metrics).

use std::path::PathBuf;

use axum::{Json, extract::State};
use serde::Serialize;

use super::AppState;
use crate::{Config, store::StoreKind};

/// What the configuration says about the store; the rest is read per request.
#[derive(Debug, Clone, Serialize)]
pub struct StoreSetup {
    store: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fsync: Option<&'static str>,
    /// The JetStream store's servers and stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_urls: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_stream: Option<String>,
    cache_capacity_bytes: usize,
}

impl StoreSetup {
    pub fn new(config: &Config) -> Self {
        let file = config.store == StoreKind::File;
        let jetstream = config.store == StoreKind::Jetstream;
        Self {
            store: config.store.name(),
            data_dir: file.then(|| config.data_dir.clone()),
            fsync: file.then_some(config.fsync.name()),
            nats_urls: jetstream.then(|| config.nats_urls.clone()),
            nats_stream: jetstream.then(|| config.nats_stream.clone()),
            // The memory store is its own cache: no tail cache in front of it.
            cache_capacity_bytes: if config.store == StoreKind::Memory {
                0
            } else {
                config.cache_bytes
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StoreJson {
    #[serde(flatten)]
    setup: StoreSetup,
    log_id: String,
    oldest_sequence: u64,
    head_sequence: u64,
    events: u64,
    /// On disk for the file store.
    bytes: u64,
    segments: u64,
    cache_events: u64,
    cache_bytes: u64,
    /// Reads served from the tail cache, and reads that went to the store.
    cache_reads: u64,
    store_reads: u64,
    fsyncs: u64,
    /// Mean fdatasync time since start (`null` before the first).
    fsync_mean_ms: Option<f64>,
    /// Why the store cannot serve now (NATS unreachable, no stream leader); `null` when it can.
    unavailable: Option<String>,
}

pub async fn store(State(state): State<AppState>) -> Json<StoreJson> {
    let log = state.log();
    let (oldest, head) = log.bounds();
    let stats = log.store_stats();
    let cache = log.cache_stats();
    let (fsyncs, fsync_seconds) = state.metrics.fsyncs();
    Json(StoreJson {
        setup: state.store.as_ref().clone(),
        log_id: log.log_id().to_owned(),
        oldest_sequence: oldest,
        head_sequence: head,
        events: stats.events,
        bytes: stats.bytes,
        segments: stats.segments,
        cache_events: cache.events,
        cache_bytes: cache.bytes,
        cache_reads: cache.hits,
        store_reads: cache.misses,
        fsyncs,
        fsync_mean_ms: (fsyncs > 0).then(|| fsync_seconds * 1000.0 / fsyncs as f64),
        unavailable: log.store().unavailable(),
    })
}
