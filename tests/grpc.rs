//! The one gRPC server assembly, served for real on port 0: health, the bounded grace period,
//! and that whatever ends the server (a worker, a listener that dies) stops the workers.

use std::time::Duration;

use pushpull::{
    grpc::{GrpcServer, ServeError, ServerOptions},
    pb::{self, consumer_service_server::ConsumerServiceServer},
};
use testkit::{PROMPTLY, channel, closable_incoming};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, HealthCheckResponse, health_client::HealthClient},
};

#[derive(Clone)]
struct Nothing;

#[tonic::async_trait]
impl pb::consumer_service_server::ConsumerService for Nothing {
    async fn get_stats(
        &self,
        _: tonic::Request<pb::GetStatsRequest>,
    ) -> Result<tonic::Response<pb::GetStatsResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::GetStatsResponse::default()))
    }
}

fn options() -> ServerOptions {
    ServerOptions::plain(1 << 20, Duration::from_secs(30))
}

fn server(options: ServerOptions) -> GrpcServer {
    GrpcServer::new(ConsumerServiceServer::new(Nothing), options).unwrap()
}

async fn health_client(addr: std::net::SocketAddr) -> HealthClient<tonic::transport::Channel> {
    HealthClient::new(channel(addr).await)
}

/// A health Watch on `service` ("" for the server), past its first answer, which must be
/// SERVING. A Watch is a stream that never ends by itself: only the grace period ends it.
async fn watching(addr: std::net::SocketAddr, service: &str) -> Streaming<HealthCheckResponse> {
    let mut watch = health_client(addr)
        .await
        .watch(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_status(&mut watch).await, ServingStatus::Serving as i32);
    watch
}

/// The next status a Watch reports.
async fn next_status(watch: &mut Streaming<HealthCheckResponse>) -> i32 {
    tokio::time::timeout(PROMPTLY, watch.message())
        .await
        .expect("a status change")
        .unwrap()
        .expect("the Watch is still open")
        .status
}

#[tokio::test]
async fn a_listener_that_closes_stops_the_workers_and_says_so() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (incoming, acceptor) = closable_incoming(listener);
    let stop = CancellationToken::new();
    let serving = tokio::spawn(server(options()).serve_incoming(
        incoming,
        std::future::pending(),
        stop.clone(),
    ));
    let status = health_client(addr)
        .await
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    assert!(!stop.is_cancelled());

    acceptor.abort();
    let served = tokio::time::timeout(PROMPTLY, serving)
        .await
        .expect("serve returns once the listener closed")
        .unwrap();
    assert!(
        matches!(served, Err(ServeError::ListenerClosed)),
        "{served:?}"
    );
    assert!(stop.is_cancelled(), "the workers were told to stop");
}

#[tokio::test]
async fn a_listener_that_closes_under_an_open_stream_stops_the_workers_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (incoming, acceptor) = closable_incoming(listener);
    let stop = CancellationToken::new();
    let options = ServerOptions {
        shutdown_grace: Duration::from_millis(500),
        ..options()
    };
    let serving = tokio::spawn(server(options).serve_incoming(
        incoming,
        std::future::pending(),
        stop.clone(),
    ));
    // tonic, which waits for every connection to close once it stops accepting, would wait
    // for this Watch forever.
    let mut watch = watching(addr, "").await;

    acceptor.abort();
    tokio::time::timeout(PROMPTLY, stop.cancelled())
        .await
        .expect("the workers are told to stop while the stream is still open");
    assert_eq!(
        next_status(&mut watch).await,
        ServingStatus::NotServing as i32
    );
    let served = tokio::time::timeout(PROMPTLY, serving)
        .await
        .expect("serve returns after the grace period")
        .unwrap();
    assert!(
        matches!(served, Err(ServeError::ListenerClosed)),
        "{served:?}"
    );
}

#[tokio::test]
async fn a_worker_cancelling_stop_ends_the_server_and_health_watchers_see_not_serving() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let options = ServerOptions {
        shutdown_grace: Duration::from_millis(300),
        ..options()
    };
    let serving =
        tokio::spawn(server(options).serve(listener, std::future::pending(), stop.clone()));
    let mut watch = watching(addr, "pushpull.v1.ConsumerService").await;

    stop.cancel();
    assert_eq!(
        next_status(&mut watch).await,
        ServingStatus::NotServing as i32
    );
    let served = tokio::time::timeout(PROMPTLY, serving)
        .await
        .expect("the grace period bounds the wait")
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
}
