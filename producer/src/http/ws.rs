//! `GET /ws`: a WebSocket that is two-way, as the seed describes. The client subscribes (and
//! may re-subscribe with another cursor or topics at any time), the server pushes batches as
//! JSON, and the client may publish through the same socket. The server pings every heartbeat
//! interval and drops a peer that has been silent for three.
//!
//! Client → server (JSON text):
//! - `{"type":"subscribe","after":SEQ,"topics":["a"]}` (`after` absent/null: from the head;
//!   0: from the oldest), replacing any current subscription;
//! - `{"type":"unsubscribe"}`;
//! - `{"type":"publish","events":[{"topic":"t","payload":"..."}],"id":ANY}`.
//!
//! Server → client: `subscribed`, `events` (a batch, as `GET /poll` returns it), `published`,
//! `error` (the HTTP error body; a subscription that fails ends, the socket stays open).

use std::{net::SocketAddr, time::Duration};

use axum::{
    Extension,
    extract::{
        ConnectInfo, State, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket, close_code, rejection::WebSocketUpgradeRejection},
    },
    response::{IntoResponse as _, Response},
};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, MissedTickBehavior, interval};
use tracing::{Instrument as _, debug, info_span, warn};

use super::{
    AppState,
    error::{ApiError, ErrorJson},
    json::{BatchJson, NewEventJson, PublishJson, PublishedJson},
    params::{self, ReadParams},
    poll::publish_events,
};
use crate::{
    auth::{Caller, Scope},
    capacity::{Resource, Slot},
    error::Error,
    follow::Follower,
    log::{self, Event, TopicFilter},
    metrics::{GaugeGuard, Transport},
};

/// A peer that answers nothing (not even a pong) for this many heartbeat intervals is gone.
const SILENT_INTERVALS: u32 = 3;

/// How long a send may wait for a client that is not reading before shutdown drops it.
const FINAL_SEND_TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Subscribe {
        #[serde(default)]
        after: Option<u64>,
        #[serde(default)]
        topics: Vec<String>,
    },
    Unsubscribe,
    Publish {
        events: Vec<NewEventJson>,
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMessage {
    Subscribed {
        log_id: String,
        after_sequence: u64,
        head_sequence: u64,
        oldest_sequence: u64,
        topics: Vec<String>,
    },
    Unsubscribed,
    Events(BatchJson),
    Published {
        #[serde(flatten)]
        published: PublishedJson,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
    },
    Error(ErrorJson),
}

impl ServerMessage {
    fn to_message(&self) -> Message {
        Message::Text(
            serde_json::to_string(self)
                .expect("plain enum serializes")
                .into(),
        )
    }
}

/// A live subscription: its cursor, and its place in the subscribers gauge.
struct Subscription {
    follower: Follower<Event>,
    _counted: GaugeGuard,
}

/// `?after=&topics=` on the URL subscribe at once (handy for `websocat`); they are validated
/// before the upgrade, so a bad one is a plain 400.
pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    query: ReadParams,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    state.api.check_running()?;
    let initial = if query.after.is_some() || query.topics.is_some() {
        caller.may(Scope::Read).map_err(Error::Auth)?;
        let after = params::after(query.after.as_deref(), "after")?;
        let topics = params::topic_list(query.topics.as_deref());
        // Subscribed now, so a bad cursor or topic is a plain 400 before the upgrade.
        Some(state.api.subscribe(after, TopicFilter::new(topics)?)?)
    } else {
        None
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    // Taken before the upgrade, so a client over the limit gets a plain 503 it can read.
    let slot = state.api.admit(Resource::HttpStreams)?;
    let span = info_span!("websocket", %peer);
    Ok(ws.on_upgrade(move |socket| {
        connection(state, socket, caller, initial, slot).instrument(span)
    }))
}

/// What woke the connection loop.
enum Wake {
    Stop,
    Inbound(Option<Result<Message, axum::Error>>),
    Ping,
    Batch(Result<log::Batch, Error>),
}

/// One WebSocket connection of `caller` (whose scopes each message is checked against);
/// `_slot` is its place under `--max-http-streams`, given back when it ends.
async fn connection(
    state: AppState,
    mut socket: WebSocket,
    caller: Caller,
    initial: Option<Follower<Event>>,
    _slot: Slot,
) {
    debug!("WebSocket attached");
    let heartbeat = state.api.limits().heartbeat_interval;
    let stop = state.api.stop().clone();
    let mut subscription: Option<Subscription> = None;
    if let Some(follower) = initial {
        let reply = start(&state, &mut subscription, follower);
        if !send(&state, &mut socket, reply).await {
            return;
        }
    }
    let mut ping = interval(heartbeat);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_heard = Instant::now();
    loop {
        let wake = tokio::select! {
            biased;
            _ = stop.cancelled() => Wake::Stop,
            inbound = socket.recv() => Wake::Inbound(inbound),
            _ = ping.tick() => Wake::Ping,
            batch = async {
                match subscription.as_mut() {
                    Some(s) => s.follower.next_batch(None, &stop).await,
                    None => std::future::pending().await,
                }
            } => Wake::Batch(batch),
        };
        match wake {
            Wake::Stop => break,
            Wake::Inbound(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => {
                return debug!("WebSocket client left");
            }
            Wake::Inbound(Some(Ok(message))) => {
                last_heard = Instant::now();
                let reply = match message {
                    Message::Text(text) => {
                        handle(&state, &caller, &mut subscription, text.as_str()).await
                    }
                    Message::Binary(_) => Some(ServerMessage::Error(
                        ApiError::bad("message", "send JSON text messages, not binary").body(),
                    )),
                    _ => None,
                };
                if let Some(reply) = reply
                    && !send(&state, &mut socket, reply).await
                {
                    break;
                }
            }
            Wake::Ping => {
                if last_heard.elapsed() > heartbeat * SILENT_INTERVALS {
                    warn!(
                        silent = %humantime::format_duration(last_heard.elapsed()),
                        "WebSocket peer silent; closing"
                    );
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: close_code::POLICY,
                            reason: "no pong".into(),
                        })))
                        .await;
                    return;
                }
                if !send_raw(&state, &mut socket, Message::Ping(Default::default())).await {
                    break;
                }
            }
            Wake::Batch(Ok(batch)) => {
                let n = batch.events.len();
                let message = ServerMessage::Events(BatchJson::new(&batch, state.log().log_id()));
                if !send(&state, &mut socket, message).await {
                    break;
                }
                state.metrics.delivered(Transport::WebSocket, n);
            }
            Wake::Batch(Err(Error::ShuttingDown)) => break,
            Wake::Batch(Err(err)) => {
                if matches!(err, Error::CursorExpired { .. }) {
                    state.metrics.lagged(Transport::WebSocket);
                }
                warn!(%err, "WebSocket subscription ended");
                subscription = None;
                let message = ServerMessage::Error(ApiError::from(err).body());
                if !send(&state, &mut socket, message).await {
                    break;
                }
            }
        }
    }
    // Shutting down: say why, then close with 1001 "going away"; a client that does not read
    // is dropped after a short wait.
    if stop.is_cancelled() {
        let _ = tokio::time::timeout(FINAL_SEND_TIMEOUT, async {
            let error = ServerMessage::Error(ApiError::from(Error::ShuttingDown).body());
            let _ = socket.send(error.to_message()).await;
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: close_code::AWAY,
                    reason: "producer shutting down".into(),
                })))
                .await;
        })
        .await;
    }
}

/// Handles one client message; returns the reply, if any.
async fn handle(
    state: &AppState,
    caller: &Caller,
    subscription: &mut Option<Subscription>,
    text: &str,
) -> Option<ServerMessage> {
    let message = match serde_json::from_str::<ClientMessage>(text) {
        Ok(message) => message,
        Err(err) => {
            let error = ApiError::bad(
                "message",
                format!(
                    "not a client message ({err}); send {{\"type\":\"subscribe\",\"after\":0,\"topics\":[]}}, \
                     {{\"type\":\"unsubscribe\"}} or {{\"type\":\"publish\",\"events\":[...]}}"
                ),
            );
            state.metrics.rejected("websocket", error.reason());
            return Some(ServerMessage::Error(error.body()));
        }
    };
    // The socket needed a valid token to open; each message needs its own scope.
    let needs = match &message {
        ClientMessage::Subscribe { .. } => Some(Scope::Read),
        ClientMessage::Publish { .. } => Some(Scope::Publish),
        ClientMessage::Unsubscribe => None,
    };
    if let Some(Err(err)) = needs.map(|scope| caller.may(scope)) {
        let error = ApiError::from(Error::Auth(err));
        state.metrics.rejected("websocket", error.reason());
        return Some(ServerMessage::Error(error.body()));
    }
    Some(match message {
        ClientMessage::Subscribe { after, topics } => {
            return Some(subscribe(state, subscription, after, topics));
        }
        ClientMessage::Unsubscribe => {
            *subscription = None;
            ServerMessage::Unsubscribed
        }
        ClientMessage::Publish { events, id } => {
            let timer = state.metrics.timer("websocket", "publish");
            let result = publish_events(state, PublishJson { events }).await;
            match result {
                Ok(published) => {
                    timer.finish();
                    ServerMessage::Published { published, id }
                }
                Err(error) => {
                    state.metrics.rejected("websocket", error.reason());
                    ServerMessage::Error(error.body())
                }
            }
        }
    })
}

/// (Re)subscribes: the old subscription ends, the new one starts at `after`.
fn subscribe(
    state: &AppState,
    subscription: &mut Option<Subscription>,
    after: Option<u64>,
    topics: Vec<String>,
) -> ServerMessage {
    *subscription = None;
    match TopicFilter::new(topics).and_then(|filter| state.api.subscribe(after, filter)) {
        Ok(follower) => start(state, subscription, follower),
        Err(err) => {
            let error = ApiError::from(err);
            state.metrics.rejected("websocket", error.reason());
            ServerMessage::Error(error.body())
        }
    }
}

/// Makes `follower` the subscription; the reply says where it starts.
fn start(
    state: &AppState,
    subscription: &mut Option<Subscription>,
    follower: Follower<Event>,
) -> ServerMessage {
    let (oldest, head) = state.log().bounds();
    let reply = ServerMessage::Subscribed {
        log_id: state.log().log_id().to_owned(),
        after_sequence: follower.cursor(),
        head_sequence: head,
        oldest_sequence: oldest,
        topics: follower.filter().topics().to_vec(),
    };
    *subscription = Some(Subscription {
        follower,
        _counted: state.metrics.subscriber(Transport::WebSocket),
    });
    reply
}

async fn send(state: &AppState, socket: &mut WebSocket, message: ServerMessage) -> bool {
    send_raw(state, socket, message.to_message()).await
}

/// Sends, waiting for a slow client but not past shutdown, nor past `--stall-timeout`: a client
/// that takes nothing for that long is sent a close frame saying so (if it can still be
/// written) and dropped. False when the socket is done.
async fn send_raw(state: &AppState, socket: &mut WebSocket, message: Message) -> bool {
    let timeout = state.api.limits().stall_timeout;
    let sent = tokio::select! {
        biased;
        _ = state.api.stop().cancelled() => return false,
        sent = tokio::time::timeout(timeout, socket.send(message)) => sent,
    };
    let Err(_stalled) = sent else {
        return sent.is_ok_and(|sent| sent.is_ok());
    };
    warn!(
        stall_timeout = %humantime::format_duration(timeout),
        "WebSocket client stalled; closing"
    );
    state.api.capacity().count_stalled(Transport::WebSocket);
    let close = Message::Close(Some(CloseFrame {
        code: close_code::POLICY,
        reason: stall_reason(timeout).into(),
    }));
    let _ = tokio::time::timeout(FINAL_SEND_TIMEOUT, socket.send(close)).await;
    false
}

/// The close frame's reason for a stalled client (at most 123 bytes, as RFC 6455 allows).
fn stall_reason(timeout: Duration) -> String {
    format!(
        "SUBSCRIBER_STALLED: nothing read for {} (--stall-timeout)",
        humantime::format_duration(timeout)
    )
}
