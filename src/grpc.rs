//! The one gRPC server assembly both services use, so they behave the same on the wire and a
//! rule is added once: the service itself, gRPC health (SERVING / NOT_SERVING), reflection in
//! both protocol versions, message limits and compression, a request guard (the producer's
//! bearer tokens), and a graceful shutdown with a bounded grace period. Connections (TLS,
//! HTTP/2 settings and keepalives, connection limits, sockets set up for low-latency pushes)
//! are [`crate::serve`]'s.
//!
//! [`GrpcServer::serve`] takes the service's `stop` token, the one its workers (stream tasks,
//! the consumer's reader) listen to, and cancels it *whatever* ends the server: the shutdown
//! future, a worker cancelling it, or the listener going away. A caller awaits its workers after
//! `serve` returns, so their final state (the consumer's checkpoint) is always saved.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
};
use tokio_stream::{Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;
use tonic::{
    Status,
    body::Body,
    codec::CompressionEncoding,
    server::NamedService,
    service::Routes,
    transport::server::{Connected, TcpConnectInfo, TcpIncoming, TlsConnectInfo},
};
use tower::ServiceExt as _;

use crate::serve::{self, ConnLimits, ConnStats, Protocols};
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

/// How often an idle HTTP/2 connection is pinged, and how long a ping may go unanswered.
/// Load balancers drop idle connections (AWS ELB after 60 s); pings keep a quiet stream alive
/// and find a dead peer without waiting for the kernel's TCP timeout.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// See [`HTTP2_KEEPALIVE_INTERVAL`].
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every pushpull gRPC server is configured with.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest message decoded or encoded, both directions. tonic's own default (4 MiB in,
    /// unlimited out) would refuse a large Publish before the service could say why.
    pub max_message_bytes: usize,
    /// After shutdown starts, how long open connections get before [`GrpcServer::serve`]
    /// returns anyway: tonic waits for every connection to close, and a client that never reads
    /// could hold it open forever.
    pub shutdown_grace: Duration,
    /// Connection limits, HTTP/2 settings and timeouts.
    pub limits: ConnLimits,
    /// Serve under TLS with this configuration (its ALPN is set to `h2`); plaintext without.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl ServerOptions {
    /// Plaintext, default connection limits: tests and tools.
    pub fn plain(max_message_bytes: usize, shutdown_grace: Duration) -> Self {
        Self {
            max_message_bytes,
            shutdown_grace,
            limits: ConnLimits::default(),
            tls: None,
        }
    }
}

/// Decides, before a call reaches its service, whether it may proceed: the producer's bearer
/// tokens. Sees the method's path (`/pushpull.v1.ProducerService/Publish`) and the request's
/// headers (gRPC metadata); an `Err` status is the call's answer.
pub type Guard = Arc<dyn Fn(&str, &http::HeaderMap) -> Result<(), Status> + Send + Sync>;

/// A generated service server whose message limits and compression the assembly sets, so
/// every service gets the same ones. Implemented for the servers this crate generates.
pub trait Configurable: Sized {
    /// The server with both message limits set to `max_message_bytes`, gzip accepted, and
    /// gzip sent to clients that accept it.
    fn configured(self, max_message_bytes: usize) -> Self;
}

macro_rules! configurable {
    ($($server:ident)::+) => {
        impl<T> Configurable for $($server)::+<T> {
            fn configured(self, max_message_bytes: usize) -> Self {
                self.max_decoding_message_size(max_message_bytes)
                    .max_encoding_message_size(max_message_bytes)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .send_compressed(CompressionEncoding::Gzip)
            }
        }
    };
}

configurable!(crate::wire::server::producer_service_server::ProducerServiceServer);
configurable!(crate::pb::producer_service_server::ProducerServiceServer);
configurable!(crate::pb::consumer_service_server::ConsumerServiceServer);
configurable!(crate::pb::webhook_service_server::WebhookServiceServer);

/// The health of one served service (and of the server as a whole, service `""`). Cheap to
/// clone: a service that loses what it depends on can report NOT_SERVING while it is out.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    /// The served services: the server's own, then any added with [`GrpcServer::with_service`].
    services: Vec<&'static str>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("services", &self.services)
            .finish()
    }
}

impl Health {
    /// SERVING, for the services and for the server.
    pub async fn set_serving(&self) {
        self.set(ServingStatus::Serving).await;
    }

    /// NOT_SERVING, for the services and for the server: load balancers and container
    /// healthchecks stop sending it work.
    pub async fn set_not_serving(&self) {
        self.set(ServingStatus::NotServing).await;
    }

    async fn set(&self, status: ServingStatus) {
        for name in std::iter::once("").chain(self.services.iter().copied()) {
            self.reporter.set_service_status(name, status).await;
        }
    }
}

/// Why [`GrpcServer::serve`] returned an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The listener stopped yielding connections although nobody asked the server to stop.
    #[error("the gRPC listener closed while the service was running")]
    ListenerClosed,
}

/// What [`GrpcServer`] serves: a generated service server, configured by the assembly.
pub trait Served:
    Configurable
    + tonic::codegen::Service<
        tonic::codegen::http::Request<tonic::body::Body>,
        Error = std::convert::Infallible,
        Response = tonic::codegen::http::Response<tonic::body::Body>,
        Future: Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Served for S where
    S: Configurable
        + tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Error = std::convert::Infallible,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// One service (or a few, [`GrpcServer::with_service`]), with health and reflection beside it,
/// ready to serve.
pub struct GrpcServer {
    name: &'static str,
    routes: Routes,
    health: Health,
    options: ServerOptions,
    guard: Option<Guard>,
    stats: ConnStats,
}

impl GrpcServer {
    /// Assembles `service` (configured with `options`' limits) with health, reporting SERVING
    /// once serving starts, and reflection v1 and v1alpha listing the served services and
    /// health.
    pub fn new<S: Served>(service: S, options: ServerOptions) -> Result<Self, ServeError> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let routes =
            Routes::new(health_service).add_service(service.configured(options.max_message_bytes));
        Ok(Self {
            name: S::NAME,
            routes,
            health: Health {
                reporter,
                services: vec![S::NAME],
            },
            options,
            guard: None,
            stats: ConnStats::default(),
        })
    }

    /// Serves `service` too, on the same port, with the same limits, health and reflection
    /// (the producer's WebhookService beside its ProducerService). Add services before taking
    /// [`GrpcServer::health`], so that handle reports for them all.
    pub fn with_service<S: Served>(mut self, service: S) -> Self {
        self.routes = self
            .routes
            .add_service(service.configured(self.options.max_message_bytes));
        self.health.services.push(S::NAME);
        self
    }

    /// Every call passes `guard` first (health and reflection too: the guard decides which
    /// paths it leaves open).
    pub fn with_guard(mut self, guard: Guard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// The counters of the connections this server will serve (for metrics).
    pub fn connection_stats(&self) -> ConnStats {
        self.stats.clone()
    }

    /// The health handle, for the service to report NOT_SERVING while it cannot work.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Serves on `listener` (bound by the caller, port 0 in tests) until `shutdown` resolves or
    /// `stop` is cancelled; see [`GrpcServer::serve_incoming`].
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        stop: CancellationToken,
    ) -> Result<(), ServeError> {
        self.serve_incoming(incoming(listener), shutdown, stop)
            .await
    }

    /// Serves connections from `incoming` until `shutdown` resolves or `stop` is cancelled,
    /// then reports NOT_SERVING, cancels `stop` (open streams and long polls end with it),
    /// refuses new calls and waits up to the grace period for connections to close. `stop` is
    /// cancelled whatever ends the server: when `incoming` ends, at once, not when the last
    /// open connection closes (a health Watch never does).
    pub async fn serve_incoming(
        self,
        incoming: impl Incoming,
        shutdown: impl Future<Output = ()> + Send + 'static,
        stop: CancellationToken,
    ) -> Result<(), ServeError> {
        let Self {
            name,
            routes,
            health,
            options,
            guard,
            stats,
        } = self;
        let routes = routes
            .add_service(reflection_v1(&health.services)?)
            .add_service(reflection_v1alpha(&health.services)?)
            .prepare();
        let service = Guarded { routes, guard };
        let server = serve::Server::new(
            "grpc",
            Protocols::Http2,
            options.tls.as_deref().cloned(),
            options.limits,
        )
        .with_stats(stats);
        health.set_serving().await;
        // The serving loop cancels `stop` whatever ends it (shutdown, or `incoming` ending),
        // which stops the workers and starts the grace period.
        let serving = {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = shutdown => {}
                    () = stop.cancelled() => {}
                }
                info!(
                    service = %name,
                    "shutting down: refusing new calls, ending open streams"
                );
                stop.cancel();
            }
        };
        tokio::spawn(serving);
        // Known at once, not when the last connection has closed (a health Watch never does):
        // the end of `incoming` itself marks it, and cancels `stop`.
        let listener_closed = CancellationToken::new();
        let incoming = incoming.chain(tokio_stream::iter(std::iter::from_fn({
            let (listener_closed, stop) = (listener_closed.clone(), stop.clone());
            move || {
                warn!(service = %name, "the listener closed; stopping");
                listener_closed.cancel();
                stop.cancel();
                None
            }
        })));
        let server = server.serve(incoming, service, stop.clone());
        let grace = options.shutdown_grace;
        let served = tokio::select! {
            _ = server => Ok(()),
            // However `stop` was cancelled (the listener closing included), health watchers
            // hear NOT_SERVING at once, not when the grace period is over.
            () = async {
                stop.cancelled().await;
                health.set_not_serving().await;
                tokio::time::sleep(grace).await;
            } => {
                warn!(
                    service = %name,
                    grace = %humantime::format_duration(grace),
                    "connections still open after the shutdown grace period; stopping anyway"
                );
                Ok(())
            }
        };
        health.set_not_serving().await;
        stop.cancel();
        match served {
            Ok(()) if listener_closed.is_cancelled() => Err(ServeError::ListenerClosed),
            other => other,
        }
    }
}

/// What `serve_incoming` accepts as a connection: a byte stream tonic can serve and ask for its
/// peer (a `TcpStream`, a TLS stream, an in-memory duplex in a test).
pub trait Connection:
    AsyncRead
    + AsyncWrite
    + Connected<ConnectInfo: PeerAddr + Clone + Send + Sync + 'static>
    + Unpin
    + Send
    + 'static
{
}

impl<T> Connection for T where
    T: AsyncRead
        + AsyncWrite
        + Connected<ConnectInfo: PeerAddr + Clone + Send + Sync + 'static>
        + Unpin
        + Send
        + 'static
{
}

/// The peer's address in a connection's connect info, where it has one (for logs and
/// handlers; an in-memory test connection has none).
pub trait PeerAddr {
    fn peer_addr(&self) -> Option<SocketAddr>;
}

impl PeerAddr for TcpConnectInfo {
    fn peer_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }
}

impl PeerAddr for () {
    fn peer_addr(&self) -> Option<SocketAddr> {
        None
    }
}

impl<T: PeerAddr> PeerAddr for TlsConnectInfo<T> {
    fn peer_addr(&self) -> Option<SocketAddr> {
        self.get_ref().peer_addr()
    }
}

/// The routes behind the guard: a call the guard refuses is answered with its status and
/// never reaches a service.
#[derive(Clone)]
struct Guarded {
    routes: Routes,
    guard: Option<Guard>,
}

impl tower::Service<http::Request<Body>> for Guarded {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Routes (an axum router) is always ready; each call clones it.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if let Some(guard) = &self.guard
            && let Err(status) = guard(request.uri().path(), request.headers())
        {
            let (parts, ()) = status.into_http::<()>().into_parts();
            let response = http::Response::from_parts(parts, Body::empty());
            return Box::pin(async move { Ok(response) });
        }
        Box::pin(self.routes.clone().oneshot(request))
    }
}

/// What `serve_incoming` serves: a stream of accepted connections (or accept errors, which
/// tonic logs and skips), such as [`incoming`]'s.
pub trait Incoming:
    Stream<Item = Result<<Self as Incoming>::Connection, <Self as Incoming>::Error>> + Send
{
    type Connection: Connection;
    type Error: Into<Box<dyn std::error::Error + Send + Sync>>;
}

impl<S, C, E> Incoming for S
where
    S: Stream<Item = Result<C, E>> + Send,
    C: Connection,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Connection = C;
    type Error = E;
}

/// The accepted-connection stream for a listener the caller bound (port 0 in tests).
///
/// `TCP_NODELAY` is set because tonic sets it only on listeners it binds itself; with Nagle's
/// algorithm on, a small push waits for the previous segment's ACK and gains milliseconds.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// gRPC reflection, `grpc.reflection.v1`, listing `served` (the server's own services, e.g.
/// `pushpull.v1.ProducerService`), `grpc.health.v1.Health` and reflection itself.
fn reflection_v1(
    served: &[&'static str],
) -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    reflection_builder(served)
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()
}

/// gRPC reflection, `grpc.reflection.v1alpha`: grpcurl up to 1.8.7 speaks only this version.
fn reflection_v1alpha(
    served: &[&'static str],
) -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    reflection_builder(served)
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
        .build_v1alpha()
}

/// Both services share one descriptor set, so the services listed are named explicitly: by
/// default reflection would list every service in it, and `grpcurl list` on the consumer would
/// show a ProducerService it does not serve.
///
/// The `google.rpc` error details (`ErrorInfo`, `BadRequest`, `RetryInfo`) are described too, so
/// that a reflection client such as grpcurl can decode the details of every error status
/// instead of printing them as raw bytes.
fn reflection_builder(served: &[&'static str]) -> tonic_reflection::server::Builder<'static> {
    served.iter().fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health"),
        |builder, name| builder.with_service_name(*name),
    )
}
