//! `GET /poll` (HTTP long polling) and `POST /publish`, in JSON.

use axum::{Json, extract::State};

use super::{
    AppState,
    error::ApiError,
    json::{BatchJson, PublishJson, PublishedJson, decode_events},
    params::{self, Body, ReadParams},
};
use crate::metrics::Transport;

/// `GET /poll?after=SEQ&topics=a,b&max_events=N&wait=30s`: one batch after the cursor, like
/// gRPC `Poll`; with `wait` it returns as soon as a matching event exists, or empty at the end.
pub async fn poll(
    State(state): State<AppState>,
    query: ReadParams,
) -> Result<Json<BatchJson>, ApiError> {
    let timer = state.metrics.timer("http", "poll");
    let limits = state.api.limits();
    let batch_limits = params::max_events(query.max_events.as_deref(), limits)?;
    let wait = params::wait(query.wait.as_deref(), limits)?;
    let filter = params::topics(query.topics.as_deref())?;
    let after = params::after(query.after.as_deref(), "after")?;
    let batch = {
        let _poller = state.metrics.poller(Transport::HttpPoll);
        state.api.poll(after, filter, batch_limits, wait).await?
    };
    state
        .metrics
        .delivered(Transport::HttpPoll, batch.events.len());
    timer.finish();
    Ok(Json(BatchJson::new(&batch, state.log().log_id())))
}

/// `POST /publish` with `{"events":[{"topic":"t","payload":"text"}, ...]}` (payloads in base64
/// with `"encoding":"base64"`): appends atomically, like gRPC `Publish`.
pub async fn publish(
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<PublishedJson>, ApiError> {
    let timer = state.metrics.timer("http", "publish");
    state.api.check_running()?;
    let request: PublishJson = serde_json::from_slice(&body).map_err(|err| {
        ApiError::bad(
            "body",
            format!(
                "the body is not a publish request ({err}); expected \
                 {{\"events\":[{{\"topic\":\"...\",\"payload\":\"...\",\"encoding\":\"utf8|base64\"}}]}}"
            ),
        )
    })?;
    let published = publish_events(&state, request).await?;
    timer.finish();
    Ok(Json(published))
}

/// Shared by `POST /publish` and the WebSocket `publish` message.
pub async fn publish_events(
    state: &AppState,
    request: PublishJson,
) -> Result<PublishedJson, ApiError> {
    let events =
        decode_events(request.events).map_err(|(field, message)| ApiError::bad(field, message))?;
    let (first_sequence, last_sequence) = state.api.publish(events).await?;
    Ok(PublishedJson {
        first_sequence,
        last_sequence,
        log_id: state.log().log_id().to_owned(),
    })
}
