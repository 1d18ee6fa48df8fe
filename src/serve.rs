//! Serving connections ourselves (hyper-util), for gRPC and HTTP alike, rather than through
//! tonic's `Server` or `axum::serve`: neither exposes what a server facing untrusted clients
//! needs, and both sides need the same rules.
//!
//! - **HTTP/2's per-stream send buffer** ([`ConnLimits::stream_send_buffer`]): h2 buffers up
//!   to 400 KiB per stream by default, on top of the response being written, for a client that
//!   stopped reading; tonic's builder never lowers it.
//! - **A connection limit** ([`ConnLimits::max_connections`]): a connection over it is answered
//!   (`RESOURCE_EXHAUSTED` on gRPC, 503 on HTTP, both naming `--max-connections`) and closed, so
//!   the client learns why instead of timing out.
//! - **A first-request timeout** ([`ConnLimits::first_request_timeout`]): a connection that
//!   completes no TLS handshake, sends no HTTP/2 preface or never finishes its first request's
//!   headers is closed, instead of holding a slot forever.
//! - **TLS on every port** (`rustls` through `tokio-rustls`), with optional client
//!   certificates; the peer's certificates reach handlers as tonic's `TlsConnectInfo`, as they
//!   would through tonic's own server.
//! - HTTP/2 limits on streams per connection, header size and reset floods (the "rapid reset"
//!   attack, CVE-2023-44487), set explicitly rather than inherited.
//!
//! Each request carries the connection's tonic connect info (so `Request::remote_addr()` works
//! in gRPC handlers) and axum's `ConnectInfo<SocketAddr>` (so HTTP handlers can extract it).

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_stream::StreamExt as _;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Code, body::Body, transport::server::Connected};
use tower::ServiceExt as _;
use tracing::{debug, warn};

use crate::{
    errors::{ErrorInfo, ErrorReason, key},
    grpc::{HTTP2_KEEPALIVE_INTERVAL, HTTP2_KEEPALIVE_TIMEOUT, Incoming},
};

/// The flag that sets [`ConnLimits::max_connections`], named in refusals.
pub const MAX_CONNECTIONS_FLAG: &str = "--max-connections";

/// How many over-limit connections may be in the middle of being refused at once. Past that
/// they are closed without an answer: refusing must not itself become the resource an attacker
/// exhausts.
const MAX_REFUSING: usize = 64;

/// How long an over-limit connection gets to send its first request and read the refusal.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Connection-level limits, the same on every port of both services.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections served at once; one more is answered with a refusal and closed.
    pub max_connections: usize,
    /// HTTP/2 streams (calls) open at once on one connection: a Subscribe each, a poll each.
    /// Sent to clients in SETTINGS; a client that opens more gets them refused by HTTP/2
    /// (`REFUSED_STREAM`), which tonic and grpc clients queue or retry.
    pub max_streams_per_connection: u32,
    /// Bytes HTTP/2 buffers for one stream beyond what the client's flow-control window lets
    /// through. With the one response being written, this is what a subscriber that stops
    /// reading costs the server.
    pub stream_send_buffer: usize,
    /// Largest request header block (HTTP/2 header list, HTTP/1 head), in bytes.
    pub max_header_bytes: u32,
    /// A connection gets this long to finish its TLS handshake and its first request's
    /// headers; HTTP/1 gets it again for each request's headers.
    pub first_request_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_streams_per_connection: 1_024,
            stream_send_buffer: 64 * 1024,
            max_header_bytes: 16 * 1024,
            first_request_timeout: Duration::from_secs(10),
        }
    }
}

/// rustls' server configuration, for [`serving_flags`](crate::serving_flags)'s users.
pub type TlsServerConfig = rustls::ServerConfig;

/// The duration syntax of every flag (`10s`, `500ms`), for
/// [`serving_flags`](crate::serving_flags)'s users.
pub fn parse_duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

/// Which HTTP versions a port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// gRPC: HTTP/2 only (and `h2` by ALPN under TLS).
    Http2,
    /// The HTTP side: HTTP/1.1 (browsers' SSE and WebSocket) and HTTP/2.
    Http1And2,
}

impl Protocols {
    /// The ALPN protocols a TLS handshake offers, most preferred first.
    pub fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Protocols::Http2 => vec![b"h2".to_vec()],
            Protocols::Http1And2 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }
}

/// What a server's connections did, for metrics; cheap to clone, counted lock-free.
#[derive(Debug, Default, Clone)]
pub struct ConnStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    open: AtomicU64,
    accepted: AtomicU64,
    refused_over_limit: AtomicU64,
    closed_before_request: AtomicU64,
    tls_failed: AtomicU64,
}

/// A snapshot of [`ConnStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnCounts {
    /// Connections being served now.
    pub open: u64,
    /// Connections accepted and served since start (refused ones not included).
    pub accepted: u64,
    /// Connections refused because `max_connections` were open.
    pub refused_over_limit: u64,
    /// Connections closed because no request arrived within the first-request timeout.
    pub closed_before_request: u64,
    /// TLS handshakes that failed (a plaintext client, an untrusted or missing client
    /// certificate, garbage).
    pub tls_failed: u64,
}

impl ConnStats {
    pub fn counts(&self) -> ConnCounts {
        let c = &self.0;
        ConnCounts {
            open: c.open.load(Ordering::Relaxed),
            accepted: c.accepted.load(Ordering::Relaxed),
            refused_over_limit: c.refused_over_limit.load(Ordering::Relaxed),
            closed_before_request: c.closed_before_request.load(Ordering::Relaxed),
            tls_failed: c.tls_failed.load(Ordering::Relaxed),
        }
    }
}

/// A port's serving rules: its protocols, TLS, limits; [`Server::serve`] runs it.
#[derive(Clone)]
pub struct Server {
    /// For logs: which server this is (`grpc`, `http`).
    name: &'static str,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stats: ConnStats,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

impl Server {
    /// A server speaking `protocols`, under TLS when `tls` is given (its ALPN protocols are
    /// set here).
    pub fn new(
        name: &'static str,
        protocols: Protocols,
        tls: Option<rustls::ServerConfig>,
        limits: ConnLimits,
    ) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.first_request_timeout)
            .max_buf_size((limits.max_header_bytes as usize).max(8 * 1024));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_streams_per_connection)
            .max_send_buf_size(limits.stream_send_buffer)
            .max_header_list_size(limits.max_header_bytes)
            .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
            // hyper's defaults, stated: a client resetting streams faster than they are
            // accepted, or making the server reset more than this, loses its connection.
            .max_pending_accept_reset_streams(20)
            .max_local_error_reset_streams(1024);
        if protocols == Protocols::Http2 {
            builder = builder.http2_only();
        }
        let tls = tls.map(|mut config| {
            config.alpn_protocols = protocols.alpn();
            TlsAcceptor::from(Arc::new(config))
        });
        Self {
            name,
            tls,
            limits,
            builder: Arc::new(builder),
            stats: ConnStats::default(),
        }
    }

    /// Counts into `stats` (made before the server, for a metrics registry).
    pub fn with_stats(mut self, stats: ConnStats) -> Self {
        self.stats = stats;
        self
    }

    /// The counters of this server's connections.
    pub fn stats(&self) -> ConnStats {
        self.stats.clone()
    }

    /// Whether connections are served under TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves each connection from `incoming` with `service` until `incoming` ends or `stop`
    /// is cancelled; then asks every connection to close gracefully (HTTP/2 GOAWAY: calls in
    /// flight finish, new ones are refused) and returns once they all have. Returns `true` if
    /// `incoming` ended by itself (the listener died) rather than by `stop`.
    ///
    /// The caller bounds the wait: a client that never reads could hold its connection open.
    pub async fn serve<I, S, B>(self, incoming: I, service: S, stop: CancellationToken) -> bool
    where
        I: Incoming,
        S: tower::Service<Request<Body>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
        let connections = TaskTracker::new();
        let mut incoming = pin!(incoming);
        let ended = loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break false,
                accepted = incoming.next() => accepted,
            };
            let io = match accepted {
                Some(Ok(io)) => io,
                Some(Err(err)) => {
                    // A failed accept (the process out of descriptors, a connection reset
                    // before it was accepted) concerns that connection only.
                    let err: Box<dyn std::error::Error + Send + Sync> = err.into();
                    warn!(server = self.name, %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                None => break true,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                self.stats
                    .0
                    .refused_over_limit
                    .fetch_add(1, Ordering::Relaxed);
                // Too many being refused already: this one is closed unanswered.
                if let Ok(refusing) = refusing.clone().try_acquire_owned() {
                    let refusal = Refusal {
                        limit: self.limits.max_connections,
                    };
                    let served = self.clone().connection(
                        io,
                        ConnService::<S>::Refuse(refusal),
                        stop.clone(),
                    );
                    connections.spawn(async move {
                        let _refusing = refusing;
                        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, served).await;
                    });
                }
                continue;
            };
            let server = self.clone();
            let service = service.clone();
            let stop = stop.clone();
            connections.spawn(async move {
                let _slot = slot;
                let stats = server.stats.clone();
                stats.0.accepted.fetch_add(1, Ordering::Relaxed);
                stats.0.open.fetch_add(1, Ordering::Relaxed);
                server
                    .connection(io, ConnService::Serve(service), stop)
                    .await;
                stats.0.open.fetch_sub(1, Ordering::Relaxed);
            });
        };
        connections.close();
        // Connections still open hear `stop` (each asks its client to go away) and end.
        stop.cancel();
        connections.wait().await;
        ended
    }

    /// One connection: the TLS handshake if any, then HTTP until the client leaves, the
    /// first-request timeout passes without a request, or `stop` (then gracefully).
    async fn connection<C, S, B>(self, io: C, service: ConnService<S>, stop: CancellationToken)
    where
        C: crate::grpc::Connection,
        S: tower::Service<Request<Body>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let peer = crate::grpc::PeerAddr::peer_addr(&io.connect_info());
        let Some(acceptor) = self.tls.clone() else {
            let info = io.connect_info();
            let extensions = Arc::new(move |ext: &mut http::Extensions| {
                ext.insert(info.clone());
            });
            return self.http(io, peer, extensions, service, stop).await;
        };
        let deadline = self.limits.first_request_timeout;
        let tls = match tokio::time::timeout(deadline, acceptor.accept(io)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => {
                self.stats.0.tls_failed.fetch_add(1, Ordering::Relaxed);
                debug!(server = self.name, ?peer, %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                self.stats.0.tls_failed.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .0
                    .closed_before_request
                    .fetch_add(1, Ordering::Relaxed);
                debug!(server = self.name, ?peer, "TLS handshake timed out");
                return;
            }
        };
        let info = tls.connect_info();
        let extensions = Arc::new(move |ext: &mut http::Extensions| {
            ext.insert(info.clone());
        });
        self.http(tls, peer, extensions, service, stop).await;
    }

    async fn http<IO, S, B>(
        self,
        io: IO,
        peer: Option<SocketAddr>,
        extensions: Arc<dyn Fn(&mut http::Extensions) + Send + Sync>,
        service: ConnService<S>,
        stop: CancellationToken,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: tower::Service<Request<Body>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let refusing = matches!(service, ConnService::Refuse(_));
        let started = Arc::new(AtomicBool::new(false));
        let first = Arc::new(tokio::sync::Notify::new());
        let hyper_service = HyperService {
            service,
            slice: self.limits.stream_send_buffer.max(MIN_SLICE),
            peer,
            extensions,
            started: started.clone(),
            first: first.clone(),
        };
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), hyper_service);
        let mut conn = pin!(conn);
        let timeout = tokio::time::sleep(self.limits.first_request_timeout);
        let mut timeout = pin!(timeout);
        let mut waiting_first = true;
        let mut draining = false;
        loop {
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(err) = served {
                        debug!(server = self.name, ?peer, %err, "connection ended with an error");
                    }
                    return;
                }
                () = first.notified(), if waiting_first => {
                    waiting_first = false;
                    // A refused connection gets its one answer, then is asked to go away.
                    if refusing && !draining {
                        conn.as_mut().graceful_shutdown();
                        draining = true;
                    }
                }
                () = timeout.as_mut(), if waiting_first => {
                    if started.load(Ordering::Acquire) {
                        waiting_first = false;
                        continue;
                    }
                    self.stats.0.closed_before_request.fetch_add(1, Ordering::Relaxed);
                    debug!(
                        server = self.name,
                        ?peer,
                        timeout = ?self.limits.first_request_timeout,
                        "closing a connection that sent no complete request in time"
                    );
                    return;
                }
                () = stop.cancelled(), if !draining => {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }
}

/// Per connection: the service, or the refusal an over-limit connection gets.
#[derive(Clone)]
enum ConnService<S> {
    Serve(S),
    Refuse(Refusal),
}

#[derive(Debug, Clone, Copy)]
struct Refusal {
    limit: usize,
}

impl Refusal {
    /// `RESOURCE_EXHAUSTED` for a gRPC call, 503 with our JSON error otherwise, both naming
    /// the limit and its flag.
    fn response(self, request: &Request<Body>) -> Response<Body> {
        let message = format!(
            "the server already serves {} connections, its limit ({MAX_CONNECTIONS_FLAG}); \
             retry later or elsewhere",
            self.limit
        );
        let info = ErrorInfo::new(ErrorReason::TooManyConnections)
            .with(key::LIMIT, self.limit)
            .with(key::FLAG, MAX_CONNECTIONS_FLAG);
        let grpc = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if grpc {
            let status = info.into_status(
                Code::ResourceExhausted,
                message,
                Some(Duration::from_secs(1)),
            );
            let (parts, ()) = status.into_http::<()>().into_parts();
            return Response::from_parts(parts, Body::empty());
        }
        let body = format!(
            "{{\"code\":\"resource_exhausted\",\"reason\":\"{}\",\"message\":\"{message}\",\
             \"metadata\":{{\"flag\":\"{MAX_CONNECTIONS_FLAG}\",\"limit\":\"{}\"}}}}",
            info.reason_name(),
            self.limit
        );
        let mut response = Response::new(Body::new(Full::new(Bytes::from(body))));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

/// Smallest slice [`Sliced`] cuts: HTTP/2's default frame size, so a tiny
/// `--stream-send-buffer` cannot multiply frames.
const MIN_SLICE: usize = 16 * 1024;

/// A response body whose data frames are at most `max` bytes, each a slice of the frame it
/// was cut from (no copy).
///
/// hyper hands HTTP/2 one body frame at a time, and h2 buffers the whole frame whatever
/// [`ConnLimits::stream_send_buffer`] says; then hyper polls the next frame while that one waits
/// for the client's window. gRPC and SSE frames are whole messages (a push response can be
/// `--max-batch-bytes`), so a client that stops reading would hold two of them per stream.
/// Cut to the send buffer, it holds the one message being written, and the next is not made.
struct Sliced {
    body: Body,
    /// What is left of the frame being cut.
    rest: Bytes,
    max: usize,
}

impl Sliced {
    fn new(body: Body, max: usize) -> Self {
        Self {
            body,
            rest: Bytes::new(),
            max,
        }
    }
}

impl http_body::Body for Sliced {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.rest.is_empty() {
            match std::pin::Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
        let len = this.rest.len().min(this.max);
        Poll::Ready(Some(Ok(http_body::Frame::data(this.rest.split_to(len)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let body = self.body.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(body.lower() + rest);
        if let Some(upper) = body.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

/// The hyper service of one connection: marks the first request, adds the connection's
/// extensions, and calls the tower service.
struct HyperService<S> {
    service: ConnService<S>,
    /// Largest data frame a response body hands hyper (see [`Sliced`]).
    slice: usize,
    peer: Option<SocketAddr>,
    extensions: Arc<dyn Fn(&mut http::Extensions) + Send + Sync>,
    started: Arc<AtomicBool>,
    first: Arc<tokio::sync::Notify>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> hyper::service::Service<Request<hyper::body::Incoming>> for HyperService<S>
where
    S: tower::Service<Request<Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn call(&self, request: Request<hyper::body::Incoming>) -> Self::Future {
        if !self.started.swap(true, Ordering::AcqRel) {
            self.first.notify_one();
        }
        let mut request = request.map(Body::new);
        (self.extensions)(request.extensions_mut());
        if let Some(peer) = self.peer {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
        }
        match &self.service {
            ConnService::Serve(service) => {
                let service = service.clone();
                let slice = self.slice;
                Box::pin(async move {
                    let response = service.oneshot(request).await?;
                    Ok(response.map(|body| Body::new(Sliced::new(Body::new(body), slice))))
                })
            }
            ConnService::Refuse(refusal) => {
                let response = refusal.response(&request);
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

/// Defines `ServingFlags`, the flags of [`ConnLimits`] and TLS, with environment variables
/// under `$prefix` (`PRODUCER_`, `CONSUMER_`): the same names and defaults on both binaries,
/// written once. Flatten it into a clap `Parser` with `#[command(flatten)]`.
#[macro_export]
macro_rules! serving_flags {
    ($prefix:literal) => {
        /// TLS and connection limits, on every port this process serves.
        #[derive(Debug, Clone, clap::Args)]
        pub struct ServingFlags {
            /// Serve TLS with this certificate chain (PEM, leaf first) on every port; with
            /// --tls-key. Without both, ports are plaintext.
            #[arg(long, env = concat!($prefix, "TLS_CERT"))]
            pub tls_cert: Option<std::path::PathBuf>,

            /// The private key of --tls-cert (PEM).
            #[arg(long, env = concat!($prefix, "TLS_KEY"))]
            pub tls_key: Option<std::path::PathBuf>,

            /// Mutual TLS: clients must present a certificate signed by a CA in this PEM file;
            /// others are refused in the handshake.
            #[arg(long, env = concat!($prefix, "TLS_CLIENT_CA"))]
            pub tls_client_ca: Option<std::path::PathBuf>,

            /// Connections served at once, per port; one more is answered (gRPC
            /// RESOURCE_EXHAUSTED, HTTP 503, reason TOO_MANY_CONNECTIONS) and closed.
            #[arg(long, env = concat!($prefix, "MAX_CONNECTIONS"), default_value_t = $crate::serve::ConnLimits::default().max_connections)]
            pub max_connections: usize,

            /// HTTP/2 streams (calls: a Subscribe, a poll) open at once on one connection,
            /// announced in SETTINGS; HTTP/2 refuses more (REFUSED_STREAM) and clients queue
            /// them.
            #[arg(long, env = concat!($prefix, "MAX_STREAMS_PER_CONNECTION"), default_value_t = $crate::serve::ConnLimits::default().max_streams_per_connection)]
            pub max_streams_per_connection: u32,

            /// Bytes HTTP/2 buffers per stream beyond the client's flow-control window: with
            /// the response being written, what a client that stops reading costs.
            #[arg(long, env = concat!($prefix, "STREAM_SEND_BUFFER"), default_value_t = $crate::serve::ConnLimits::default().stream_send_buffer)]
            pub stream_send_buffer: usize,

            /// Largest request header block (HTTP/2 header list, HTTP/1 head), in bytes.
            #[arg(long, env = concat!($prefix, "MAX_HEADER_BYTES"), default_value_t = $crate::serve::ConnLimits::default().max_header_bytes)]
            pub max_header_bytes: u32,

            /// A connection that completes no TLS handshake or no first request (HTTP/2
            /// preface and headers) within this is closed.
            #[arg(long, env = concat!($prefix, "FIRST_REQUEST_TIMEOUT"), default_value = "10s", value_parser = $crate::serve::parse_duration)]
            pub first_request_timeout: std::time::Duration,
        }

        impl ServingFlags {
            /// The connection limits these flags set.
            pub fn limits(&self) -> $crate::serve::ConnLimits {
                $crate::serve::ConnLimits {
                    max_connections: self.max_connections,
                    max_streams_per_connection: self.max_streams_per_connection,
                    stream_send_buffer: self.stream_send_buffer,
                    max_header_bytes: self.max_header_bytes,
                    first_request_timeout: self.first_request_timeout,
                }
            }

            /// The TLS files, if TLS is on; an error for an incomplete set.
            pub fn tls_files(&self) -> Result<Option<$crate::tls::ServerFiles>, String> {
                $crate::tls::ServerFiles::from_flags(
                    self.tls_cert.as_deref(),
                    self.tls_key.as_deref(),
                    self.tls_client_ca.as_deref(),
                )
            }

            /// The rustls configuration, read from the files now, if TLS is on.
            pub fn server_tls(
                &self,
            ) -> Result<Option<std::sync::Arc<$crate::serve::TlsServerConfig>>, String> {
                self.tls_files()?
                    .map(|files| {
                        files
                            .server_config()
                            .map(std::sync::Arc::new)
                            .map_err(|e| e.to_string())
                    })
                    .transpose()
            }

            /// Checks what can be checked without reading files.
            pub fn validate(&self) -> Result<(), String> {
                self.tls_files()?;
                if self.max_connections == 0 {
                    return Err("--max-connections must be at least 1".into());
                }
                if self.max_streams_per_connection == 0 {
                    return Err("--max-streams-per-connection must be at least 1".into());
                }
                if self.max_header_bytes < 1024 {
                    return Err("--max-header-bytes must be at least 1024".into());
                }
                Ok(())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use http_body::Body as _;

    use super::*;

    #[tokio::test]
    async fn sliced_bodies_cut_frames_to_the_limit_without_losing_a_byte() {
        let text: String = ('a'..='z').cycle().take(100 * 1024 + 7).collect();
        let mut sliced = Sliced::new(Body::new(Full::new(Bytes::from(text.clone()))), 16 * 1024);
        assert_eq!(sliced.size_hint().exact(), Some(text.len() as u64));

        let mut lengths = Vec::new();
        let mut received = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut sliced).poll_frame(cx))
            .await
            .transpose()
            .expect("no error")
        {
            let data = frame.into_data().expect("only data");
            lengths.push(data.len());
            received.extend_from_slice(&data);
            assert_eq!(
                sliced.size_hint().exact(),
                Some((text.len() - received.len()) as u64)
            );
        }
        assert_eq!(
            lengths,
            [
                16 * 1024,
                16 * 1024,
                16 * 1024,
                16 * 1024,
                16 * 1024,
                16 * 1024,
                4 * 1024 + 7
            ]
        );
        assert_eq!(received, text.as_bytes());
        assert!(sliced.is_end_stream());
    }
}
