//! Hostile clients on raw sockets: garbage for a preface, nothing at all, a gRPC length prefix
//! that lies, headers over the limit, a flood of reset streams. Each costs its sender its call
//! or its connection, bounded in time, and nothing else: after each attack an ordinary client
//! beside it still publishes and polls promptly.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use prost::Message as _;
use pushpull::pb::{self, producer_service_client::ProducerServiceClient};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    time::{Instant, timeout},
};
use tonic::transport::Channel;

use crate::helpers::*;

/// How long the producer gets to close a connection it should close. Generous: what is checked
/// is that it closes at all, not how fast (the first-request timeout has its own bound).
const CLOSED_WITHIN: Duration = Duration::from_secs(5);

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads from `socket` until the producer closes it (end of file, or a reset); returns what the
/// producer sent before. Panics if it is still open after [`CLOSED_WITHIN`].
async fn until_closed(socket: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut received = Vec::new();
    let closed = timeout(CLOSED_WITHIN, async {
        let mut buf = [0; 4096];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{what}: the connection is still open after {CLOSED_WITHIN:?}; the producer sent {:?}",
        String::from_utf8_lossy(&received)
    );
    received
}

/// The ordinary client is served: a Publish, and a Poll that sees it, each within `PROMPTLY`.
async fn assert_still_serving(client: &ProducerServiceClient<Channel>, after: &str) {
    let mut client = client.clone();
    let published = timeout(
        PROMPTLY,
        client.publish(pb::PublishRequest {
            events: vec![new_event("ordinary", b"still here")],
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("after {after}: Publish took over {PROMPTLY:?}"))
    .unwrap_or_else(|status| panic!("after {after}: Publish failed: {status:?}"))
    .into_inner();
    let polled = timeout(
        PROMPTLY,
        client.poll(poll_request(Some(published.last_sequence - 1))),
    )
    .await
    .unwrap_or_else(|_| panic!("after {after}: Poll took over {PROMPTLY:?}"))
    .unwrap_or_else(|status| panic!("after {after}: Poll failed: {status:?}"))
    .into_inner();
    assert_eq!(
        sequences(&polled.events),
        [published.last_sequence],
        "after {after}"
    );
}

/// The log's head, as a Poll reports it.
async fn head(client: &ProducerServiceClient<Channel>) -> u64 {
    client
        .clone()
        .poll(poll_request(None))
        .await
        .expect("poll")
        .into_inner()
        .head_sequence
}

/// A client whose connection opens with its first call, so it never sits idle before its
/// first request (which a short `--first-request-timeout` would punish).
fn lazy_client(addr: SocketAddr) -> ProducerServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("an address makes a valid URI")
        .connect_lazy();
    ProducerServiceClient::new(channel)
}

/// `/metrics`' `pushpull_producer_connections_refused` for `port` and `reason`.
async fn refused(http: SocketAddr, port: &str, reason: &str) -> u64 {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics' text");
    let series = format!(
        "pushpull_producer_connections_refused_total{{port=\"{port}\",reason=\"{reason}\"}} "
    );
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"));
    value.parse().expect("a counter's value")
}

/// The grpc-status of a raw call's answer: from its headers (a trailers-only answer) or its
/// trailers, reading and releasing whatever body comes before.
async fn grpc_status(response: h2::client::ResponseFuture) -> Result<String, h2::Error> {
    let response = response.await?;
    let from_headers = response.headers().get("grpc-status").cloned();
    let status = match from_headers {
        Some(status) => status,
        None => {
            let mut body = response.into_body();
            while let Some(data) = body.data().await {
                let data = data?;
                let _ = body.flow_control().release_capacity(data.len());
            }
            body.trailers()
                .await?
                .and_then(|trailers| trailers.get("grpc-status").cloned())
                .expect("a gRPC answer ends with a grpc-status")
        }
    };
    Ok(status.to_str().expect("an ASCII status").to_owned())
}

#[tokio::test]
async fn garbage_instead_of_a_preface_or_a_request_line_gets_its_connection_closed() {
    let producer = spawn_http_producer(&[]).await;
    let http = producer.http.unwrap();

    // The gRPC port speaks HTTP/2 only: this is no preface (a TLS ClientHello's first bytes,
    // then text).
    let mut socket = TcpStream::connect(producer.addr).await.unwrap();
    socket
        .write_all(b"\x16\x03\x01\x02\x00 certainly not HTTP/2\r\n\r\n\0\0\0\0\0\0\0\0")
        .await
        .unwrap();
    until_closed(&mut socket, "garbage on the gRPC port").await;
    assert_still_serving(&producer.client, "garbage on the gRPC port").await;

    // The HTTP port: a request line, then a header line without a colon.
    let mut socket = TcpStream::connect(http).await.unwrap();
    socket
        .write_all(b"GET /poll HTTP/1.1\r\nHost: pushpull\r\nno colon on this line\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut socket, "a malformed HTTP/1 request").await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "a malformed request gets a 400 or nothing: {answer:?}"
    );
    assert_still_serving(&producer.client, "a malformed HTTP/1 request").await;
}

#[tokio::test]
async fn a_connection_with_no_request_is_closed_after_the_first_request_timeout() {
    let producer = spawn_http_producer(&["--first-request-timeout", "300ms"]).await;
    let http = producer.http.unwrap();
    let started = Instant::now();

    let mut silent = TcpStream::connect(producer.addr).await.unwrap();
    let mut partial_preface = TcpStream::connect(producer.addr).await.unwrap();
    partial_preface.write_all(&PREFACE[..10]).await.unwrap();
    let mut silent_http = TcpStream::connect(http).await.unwrap();
    // A complete HTTP/2 handshake (preface, SETTINGS), and then no request.
    let (_idle, idle_connection) = h2_connect(producer.addr).await;

    until_closed(&mut silent, "a connection that sends nothing").await;
    until_closed(&mut partial_preface, "a partial preface").await;
    until_closed(&mut silent_http, "nothing on the HTTP port").await;
    let idle_ended = timeout(CLOSED_WITHIN, idle_connection).await;
    assert!(
        idle_ended.is_ok(),
        "an HTTP/2 connection with no request is still open after {CLOSED_WITHIN:?}"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "closed after {elapsed:?}, for a first-request timeout of 300ms"
    );

    assert_still_serving(&lazy_client(producer.addr), "connections with no request").await;
    // The helper's own client connected eagerly and made no call either: four on gRPC.
    assert_eq!(refused(http, "grpc", "no_request").await, 4);
    assert_eq!(refused(http, "http", "no_request").await, 1);
}

#[tokio::test]
async fn a_grpc_length_prefix_that_lies_fails_the_call_and_appends_nothing() {
    let producer = spawn_producer(&[]).await;
    producer.publish("t", &["before"]).await;
    let request = pb::PublishRequest {
        events: vec![new_event("t", b"an event that must not be appended")],
    }
    .encode_to_vec();
    let (mut h2, _connection) = h2_connect(producer.addr).await;

    let cases: [(&str, Bytes); 2] = [
        (
            "a length prefix claiming 1000 bytes, before 10",
            grpc_frame_claiming(1000, &request[..10]),
        ),
        (
            "a length prefix cut after 3 of its 5 bytes",
            grpc_frame_claiming(request.len(), &request).slice(..3),
        ),
    ];
    for (what, body) in cases {
        let head_before = head(&producer.client).await;
        h2 = h2.ready().await.expect("the connection takes a call");
        let (response, mut stream) = h2.send_request(grpc_head("Publish"), false).unwrap();
        stream.send_data(body, true).unwrap();
        let status = timeout(PROMPTLY, grpc_status(response))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within {PROMPTLY:?}"))
            .unwrap_or_else(|err| panic!("{what}: the call failed in HTTP/2: {err}"));
        assert_eq!(status, (tonic::Code::Internal as i32).to_string(), "{what}");
        assert_eq!(
            head(&producer.client).await,
            head_before,
            "{what}: appended"
        );
        assert_still_serving(&producer.client, what).await;
    }
}

#[tokio::test]
async fn headers_over_the_limit_are_refused() {
    let producer = spawn_producer(&["--max-header-bytes", "16384"]).await;
    let (h2, connection) = h2_connect(producer.addr).await;
    let mut head = grpc_head("Poll");
    // Mixed text: HPACK's Huffman code shrinks it by a quarter at most, still far over 16 KiB.
    let padding: String = ('a'..='z')
        .chain('A'..='Z')
        .chain('0'..='9')
        .cycle()
        .take(64 * 1024)
        .collect();
    head.headers_mut()
        .insert("x-padding", padding.parse().expect("a valid header value"));

    let mut h2 = h2.ready().await.expect("the connection takes a call");
    let (response, mut stream) = h2.send_request(head, false).unwrap();
    let _ = stream.send_data(grpc_frame(&poll_request(None)), true);
    let answer = timeout(CLOSED_WITHIN, response)
        .await
        .unwrap_or_else(|_| panic!("no answer to 64 KiB of headers within {CLOSED_WITHIN:?}"));
    eprintln!("64 KiB of headers: {answer:?}");
    match answer {
        Ok(response) => assert_eq!(
            response.status(),
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "64 KiB of headers were taken"
        ),
        Err(err) => {
            assert!(
                err.is_go_away() || err.is_reset(),
                "refused by a GOAWAY or a reset, not {err:?}"
            );
            if err.is_go_away() {
                let ended = timeout(CLOSED_WITHIN, connection).await;
                assert!(
                    ended.is_ok(),
                    "the connection is still open after its GOAWAY"
                );
            }
        }
    }
    drop(h2);
    assert_still_serving(&producer.client, "64 KiB of headers").await;
}

#[tokio::test]
async fn a_flood_of_reset_streams_ends_that_connection_only() {
    let producer = spawn_producer(&[]).await;
    let (mut h2, connection) = h2_connect(producer.addr).await;
    let deadline = Instant::now() + CLOSED_WITHIN;
    let mut reset = 0;
    // Each stream is opened and reset at once, before the server gets to accept it: the
    // "rapid reset" attack (CVE-2023-44487), which costs the server work and the client nothing.
    while reset < 5_000 && Instant::now() < deadline {
        h2 = match h2.ready().await {
            Ok(h2) => h2,
            Err(_) => break,
        };
        let Ok((_response, mut stream)) = h2.send_request(grpc_head("Subscribe"), false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        reset += 1;
        if reset % 100 == 0 {
            // Let the connection's task write what is queued, as a real attacker's socket would.
            tokio::task::yield_now().await;
        }
    }
    let ended = timeout(CLOSED_WITHIN, connection)
        .await
        .unwrap_or_else(|_| {
            panic!("the connection survived {reset} reset streams for {CLOSED_WITHIN:?}")
        })
        .expect("the connection's task");
    let err = ended.expect_err("the producer ends the connection with an error");
    // Its GOAWAY says ENHANCE_YOUR_CALM; a client still writing may see its socket closed
    // before it reads that.
    assert!(
        err.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || err.is_io(),
        "after {reset} reset streams: {err:?}"
    );
    eprintln!("rapid reset: the producer ended the connection after {reset} reset streams ({err})");
    assert_still_serving(&producer.client, "a flood of reset streams").await;
}
