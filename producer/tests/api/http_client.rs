//! Small HTTP clients for the HTTP-side tests: JSON calls with reqwest, an SSE reader that
//! parses frames as a browser would, and a WebSocket client (tokio-tungstenite).

use std::{net::SocketAddr, time::Duration};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::{net::TcpStream, time::timeout};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message as WsMessage,
};

use crate::helpers::PROMPTLY;

pub fn url(http: SocketAddr, path: &str) -> String {
    format!("http://{http}{path}")
}

/// GET, returning (status, JSON body).
pub async fn get_json(http: SocketAddr, path: &str) -> (u16, Value) {
    let response = reqwest::get(url(http, path)).await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// POST /publish with this JSON body, returning (status, JSON body).
pub async fn post_publish(http: SocketAddr, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url(http, "/publish"))
        .json(body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// Publishes `payloads` on `topic` as UTF-8 over HTTP; returns (first, last).
pub async fn http_publish(http: SocketAddr, topic: &str, payloads: &[&str]) -> (u64, u64) {
    let events: Vec<Value> = payloads
        .iter()
        .map(|p| json!({"topic": topic, "payload": p}))
        .collect();
    let (status, body) = post_publish(http, &json!({ "events": events })).await;
    assert_eq!(status, 200, "{body}");
    (
        body["first_sequence"].as_u64().unwrap(),
        body["last_sequence"].as_u64().unwrap(),
    )
}

/// One Server-Sent Events frame.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SseFrame {
    pub event: Option<String>,
    pub id: Option<String>,
    pub retry: Option<u64>,
    pub data: String,
    pub comments: Vec<String>,
}

impl SseFrame {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("JSON data")
    }
}

/// Reads an SSE response frame by frame.
pub struct SseClient {
    pub status: u16,
    pub content_type: String,
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl SseClient {
    pub async fn connect(http: SocketAddr, path: &str, last_event_id: Option<&str>) -> Self {
        let mut request = reqwest::Client::new().get(url(http, path));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("GET /events");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Self {
            status,
            content_type,
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next frame, or None at the end of the stream. Panics after `PROMPTLY`.
    pub async fn next(&mut self) -> Option<SseFrame> {
        timeout(PROMPTLY, self.next_frame())
            .await
            .expect("an SSE frame within the time limit")
    }

    /// The next frame that carries data (skipping keep-alive comments).
    pub async fn next_data(&mut self) -> Option<SseFrame> {
        loop {
            let frame = self.next().await?;
            if !frame.data.is_empty() || frame.event.is_some() {
                return Some(frame);
            }
        }
    }

    async fn next_frame(&mut self) -> Option<SseFrame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                return Some(parse_frame(&raw));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
                Some(Err(_)) | None => return None,
            }
        }
    }
}

fn parse_frame(raw: &str) -> SseFrame {
    let mut frame = SseFrame::default();
    let mut data = Vec::new();
    for line in raw.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            frame.comments.push(comment.trim().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => frame.event = Some(value.to_owned()),
            "id" => frame.id = Some(value.to_owned()),
            "retry" => frame.retry = value.parse().ok(),
            "data" => data.push(value.to_owned()),
            _ => {}
        }
    }
    frame.data = data.join("\n");
    frame
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn ws_connect(http: SocketAddr, path: &str) -> Ws {
    let (ws, _) = connect_async(format!("ws://{http}{path}"))
        .await
        .expect("WebSocket handshake");
    ws
}

pub async fn ws_send(ws: &mut Ws, message: Value) {
    ws.send(WsMessage::text(message.to_string()))
        .await
        .expect("send");
}

/// The next JSON message (pings are answered by tungstenite and skipped here); None when the
/// socket closed, with the close frame's code if any.
pub async fn ws_next(ws: &mut Ws) -> Result<Value, Option<u16>> {
    timeout(PROMPTLY, async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(text))) => {
                    return Ok(serde_json::from_str(text.as_str()).expect("JSON message"));
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    return Err(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(None),
            }
        }
    })
    .await
    .expect("a WebSocket message within the time limit")
}

/// Waits for the next message of `kind`, skipping others.
pub async fn ws_next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let message = ws_next(ws).await.expect("socket open");
        if message["type"] == kind {
            return message;
        }
    }
}

pub fn seqs(events: &Value) -> Vec<u64> {
    events
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect()
}

/// Short for tests that wait on nothing in particular.
pub const BRIEFLY: Duration = Duration::from_millis(100);
