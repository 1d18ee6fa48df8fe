use pushpull::pb;
use tokio_stream::StreamExt as _;
use tonic_reflection::pb::{v1, v1alpha};

use crate::helpers::*;

const PRODUCER_SERVICE: &str = "pushpull.v1.ProducerService";

#[tokio::test]
async fn health_reports_serving_overall_and_for_the_producer_service() {
    let producer = spawn_producer(&[]).await;
    testkit::assert_serving(producer.addr, PRODUCER_SERVICE).await;
}

#[tokio::test]
async fn reflection_v1_lists_the_services() {
    let producer = spawn_producer(&[]).await;
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(channel(producer.addr).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected response {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [PRODUCER_SERVICE, "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    // The descriptors are shared with the consumer; only what this server serves is listed.
    assert!(
        !names.iter().any(|n| n == "pushpull.v1.ConsumerService"),
        "{names:?}"
    );
}

#[tokio::test]
async fn reflection_v1alpha_lists_and_describes_the_services() {
    let producer = spawn_producer(&[]).await;
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(
        channel(producer.addr).await,
    );
    use v1alpha::server_reflection_request::MessageRequest;
    let requests = vec![
        v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "pushpull.v1.ConsumerService".into(),
            )),
        },
    ];
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    use v1alpha::server_reflection_response::MessageResponse;
    match responses.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            assert!(list.service.iter().any(|s| s.name == PRODUCER_SERVICE));
        }
        other => panic!("unexpected {other:?}"),
    }
    match responses.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            assert!(!files.file_descriptor_proto.is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
    // The generated types are the same ones reflection describes.
    let _ = pb::ReadMode::Push;
}
