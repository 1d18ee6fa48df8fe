use std::collections::BTreeMap;

use prost::Message as _;
use prost_types::FileDescriptorProto;
use pushpull::pb;
use tokio_stream::StreamExt as _;
use tonic_reflection::pb::{
    v1,
    v1alpha::{
        self, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse,
    },
};

use crate::helpers::*;

/// The generated server's name, which reflection must list and describe.
const PRODUCER_SERVICE: &str = pb::producer_service_server::SERVICE_NAME;

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

/// Sends `requests` to reflection v1alpha (the version grpcurl 1.8 speaks) in one stream and
/// returns the answers, in order.
async fn reflect_v1alpha(
    producer: &TestProducer,
    requests: impl IntoIterator<Item = MessageRequest>,
) -> Vec<MessageResponse> {
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(
        channel(producer.addr).await,
    );
    let requests: Vec<_> = requests
        .into_iter()
        .map(|message| v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(message),
        })
        .collect();
    let count = requests.len();
    let responses = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let responses: Vec<_> = responses
        .take(count)
        .map(|r| r.unwrap().message_response.expect("an answer"))
        .collect()
        .await;
    assert_eq!(responses.len(), count);
    responses
}

/// The file descriptors in the answers to `FileContainingSymbol` requests, decoded.
fn descriptors(answers: Vec<MessageResponse>, symbols: &[&str]) -> Vec<FileDescriptorProto> {
    let mut files = Vec::new();
    for (answer, symbol) in answers.into_iter().zip(symbols) {
        match answer {
            MessageResponse::FileDescriptorResponse(response) => {
                for encoded in response.file_descriptor_proto {
                    files.push(FileDescriptorProto::decode(encoded.as_slice()).unwrap());
                }
            }
            other => panic!("{symbol}: unexpected {other:?}"),
        }
    }
    files
}

#[tokio::test]
async fn reflection_v1alpha_lists_and_describes_the_services() {
    let producer = spawn_producer(&[]).await;
    let symbols = [
        PRODUCER_SERVICE,
        "pushpull.v1.ReadMode",
        "pushpull.v1.ErrorReason",
    ];
    let mut answers = reflect_v1alpha(
        &producer,
        std::iter::once(MessageRequest::ListServices(String::new()))
            .chain(symbols.map(|s| MessageRequest::FileContainingSymbol(s.into()))),
    )
    .await;
    match answers.remove(0) {
        MessageResponse::ListServicesResponse(list) => {
            assert!(list.service.iter().any(|s| s.name == PRODUCER_SERVICE));
        }
        other => panic!("unexpected {other:?}"),
    }
    let files = descriptors(answers, &symbols);

    // What reflection describes is what the Rust types were generated from: a client generated
    // from reflection (grpcurl, a dynamic client) sees the same names and numbers.
    let services: Vec<String> = files
        .iter()
        .flat_map(|f| {
            f.service
                .iter()
                .map(move |s| format!("{}.{}", f.package(), s.name()))
        })
        .collect();
    assert!(
        services.iter().any(|s| s == PRODUCER_SERVICE),
        "{PRODUCER_SERVICE} not in {services:?}"
    );
    assert_same_enum(&files, "ReadMode", |n| {
        pb::ReadMode::try_from(n).ok().map(|m| m.as_str_name())
    });
    assert_same_enum(&files, "ErrorReason", |n| {
        pb::ErrorReason::try_from(n).ok().map(|r| r.as_str_name())
    });
}

/// Asserts that enum `name` of package pushpull.v1, as `files` describe it, has exactly the
/// values (name and number) of the generated enum, which `generated` maps from a number.
fn assert_same_enum(
    files: &[FileDescriptorProto],
    name: &str,
    generated: impl Fn(i32) -> Option<&'static str>,
) {
    let described = files
        .iter()
        .filter(|f| f.package() == "pushpull.v1")
        .flat_map(|f| &f.enum_type)
        .find(|e| e.name() == name)
        .unwrap_or_else(|| panic!("reflection does not describe {name}"));
    let described: BTreeMap<i32, &str> = described
        .value
        .iter()
        .map(|v| (v.number(), v.name()))
        .collect();
    // Generated enums cannot be listed; every number a proto of ours could plausibly use is
    // tried instead.
    let generated: BTreeMap<i32, &str> = (-16..1024)
        .filter_map(|n| Some((n, generated(n)?)))
        .collect();
    assert_eq!(described, generated, "{name}: described vs generated");
}

#[tokio::test]
async fn reflection_describes_the_error_details_so_grpcurl_can_print_them() {
    let producer = spawn_producer(&[]).await;
    let symbols = ["ErrorInfo", "BadRequest", "RetryInfo"];
    let answers = reflect_v1alpha(
        &producer,
        symbols.map(|s| MessageRequest::FileContainingSymbol(format!("google.rpc.{s}"))),
    )
    .await;
    let files = descriptors(answers, &symbols);
    for symbol in symbols {
        assert!(
            files
                .iter()
                .filter(|f| f.package() == "google.rpc")
                .any(|f| f.message_type.iter().any(|m| m.name() == symbol)),
            "google.rpc.{symbol} is not described"
        );
    }
}
