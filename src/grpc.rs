//! Server plumbing both services share, so they behave the same on the wire: reflection in both
//! protocol versions, the health service, and sockets set up for low-latency pushes.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// How often an idle HTTP/2 connection is pinged, and how long a ping may go unanswered.
/// Load balancers drop idle connections (AWS ELB after 60 s); pings keep a quiet stream alive
/// and find a dead peer without waiting for the kernel's TCP timeout.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// See [`HTTP2_KEEPALIVE_INTERVAL`].
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The accepted-connection stream for a listener the caller bound (port 0 in tests).
///
/// `TCP_NODELAY` is set because tonic sets it only on listeners it binds itself; with Nagle's
/// algorithm on, a small push waits for the previous segment's ACK and gains milliseconds.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// gRPC reflection, `grpc.reflection.v1`, listing `served` (the server's own service, e.g.
/// `pushpull.v1.ProducerService`), `grpc.health.v1.Health` and reflection itself.
pub fn reflection_v1(
    served: &str,
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
pub fn reflection_v1alpha(
    served: &str,
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
fn reflection_builder(served: &str) -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(served)
        .with_service_name("grpc.health.v1.Health")
}
