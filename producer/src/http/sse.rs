//! `GET /events`: Server-Sent Events. Each event's `id:` is its sequence, so a browser's
//! automatic reconnect sends `Last-Event-ID` and resumes exactly after the last event it got.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::{
    extract::{ConnectInfo, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures_util::{Stream, StreamExt as _, stream};
use serde::Serialize;
use tracing::{Instrument as _, debug, info_span, warn};

use super::{
    AppState,
    error::ApiError,
    json::{EventJson, rfc3339},
    params::{self, ReadParams},
};
use crate::{
    capacity::{Resource, Slot},
    error::Error,
    follow::Follower,
    log,
    metrics::Transport,
    push::{self, SendError},
};

/// Batches prepared ahead of the client: the log is the buffer, not this channel.
const CHANNEL_CAPACITY: usize = 2;

/// The `retry:` hint: how long a browser waits before reconnecting.
const RETRY: Duration = Duration::from_secs(1);

/// How long the final `error` event may take to reach a client that is not reading.
const FINAL_EVENT_TIMEOUT: Duration = Duration::from_millis(200);

/// The first event of every stream (`event: hello`): where it starts. Not `open` or `error`:
/// those names are EventSource's own connection events, and a listener would get both.
#[derive(Debug, Serialize)]
struct OpenJson<'a> {
    log_id: &'a str,
    after_sequence: u64,
    head_sequence: u64,
    oldest_sequence: u64,
    server_time: String,
}

pub async fn events(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: ReadParams,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let filter = params::topics(query.topics.as_deref())?;
    // A reconnecting browser repeats the original URL (with its `after`) and adds
    // Last-Event-ID: the header is the newer cursor, so it wins.
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("not ASCII"));
    let (after, cursor_field) = match last_event_id {
        Some(id) => (params::after(Some(id), "Last-Event-ID")?, "Last-Event-ID"),
        None => (params::after(query.after.as_deref(), "after")?, "after"),
    };
    let follower = state
        .api
        .subscribe(after, filter)
        .map_err(|err| ApiError::Log { err, cursor_field })?;
    let slot = state.api.admit(Resource::HttpStreams)?;

    let (tx, rx) = push::channel::<Vec<Event>>(CHANNEL_CAPACITY, state.api.limits().stall_timeout);
    let span = info_span!("sse", %peer, after_sequence = follower.cursor());
    tokio::spawn(stream_events(state.clone(), follower, tx, slot).instrument(span));
    let body = rx.flat_map(stream::iter).map(Ok::<_, Infallible>);
    Ok(Sse::new(body).keep_alive(
        KeepAlive::new()
            .interval(state.api.limits().heartbeat_interval)
            .text("keep-alive"),
    ))
}

/// Feeds one SSE stream until the client leaves, the producer stops, the cursor expires or the
/// client stops reading. `_slot` is the stream's place under `--max-http-streams`, given back
/// when this returns.
async fn stream_events(
    state: AppState,
    mut follower: Follower<log::Event>,
    tx: push::Sender<Vec<Event>>,
    _slot: Slot,
) {
    let _subscriber = state.metrics.subscriber(Transport::Sse);
    let stop = state.api.stop().clone();
    let (oldest, head) = state.log().bounds();
    let open = Event::default()
        .event("hello")
        .retry(RETRY)
        .json_data(OpenJson {
            log_id: state.log().log_id(),
            after_sequence: follower.cursor(),
            head_sequence: head,
            oldest_sequence: oldest,
            server_time: rfc3339(std::time::SystemTime::now()),
        })
        .expect("plain struct serializes");
    if let Err(err) = tx.send(vec![open]).await {
        return stalled_or_gone(&state, err, tx);
    }
    debug!("SSE stream attached");
    let end = loop {
        let batch = tokio::select! {
            biased;
            _ = tx.closed() => return debug!("SSE client left"),
            batch = follower.next_batch(None, &stop) => batch,
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(err) => break err,
        };
        let n = batch.events.len();
        let events = batch
            .events
            .iter()
            .map(|e| {
                Event::default()
                    .id(e.sequence.to_string())
                    .json_data(EventJson::from(e))
                    .expect("plain struct serializes")
            })
            .collect();
        tokio::select! {
            biased;
            _ = stop.cancelled() => break Error::ShuttingDown,
            sent = tx.send(events) => if let Err(err) = sent {
                return stalled_or_gone(&state, err, tx);
            },
        }
        state.metrics.delivered(Transport::Sse, n);
    };
    // The stream ends with an `end` event saying why (the error body); the browser then
    // reconnects by itself (after `retry`) with Last-Event-ID, and gets 410 if its cursor has
    // expired.
    if matches!(end, Error::CursorExpired { .. }) {
        state.metrics.lagged(Transport::Sse);
        warn!(after_sequence = follower.cursor(), %end, "ending SSE stream");
    }
    let event = end_event(end);
    tx.send_last(vec![event], FINAL_EVENT_TIMEOUT).await;
}

/// A send failed: the client left, or took nothing for `--stall-timeout`; then the stream ends
/// with an `end` event saying so, ahead of what is still buffered (the client resumes from the
/// last `id:` it received).
fn stalled_or_gone(state: &AppState, err: SendError, tx: push::Sender<Vec<Event>>) {
    match err {
        SendError::Gone => debug!("SSE client left"),
        SendError::Stalled => {
            let timeout = state.api.limits().stall_timeout;
            warn!(
                stall_timeout = %humantime::format_duration(timeout),
                "SSE client stalled; ending stream"
            );
            state.api.capacity().count_stalled(Transport::Sse);
            tx.end_with(vec![end_event(Error::SubscriberStalled { timeout })]);
        }
    }
}

/// The `end` event: the error body saying why the stream ends.
fn end_event(err: Error) -> Event {
    Event::default()
        .event("end")
        .json_data(ApiError::from(err).body())
        .expect("plain struct serializes")
}
