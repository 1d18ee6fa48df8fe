//! Every kind of bad input, the status it gets, and proof the producer keeps serving.

use std::time::Duration;

use bytes::Bytes;
use pushpull::{
    errors::{ErrorInfo, ErrorReason, key},
    pb,
    time::proto_duration,
};
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::helpers::*;

fn publish(events: Vec<pb::NewEvent>) -> pb::PublishRequest {
    pb::PublishRequest { events }
}

fn duration(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

#[tokio::test]
async fn bad_input_gets_a_precise_status_and_loses_nothing() {
    let producer = spawn_producer(&["--retention-events", "10"]).await;
    producer.publish_n("a", 30).await; // oldest retained: 21, head: 30
    let mut client = producer.client.clone();

    let long_topic = "t".repeat(129);
    let oversize = Bytes::from(vec![0u8; 1024 * 1024 + 1]);
    let too_many: Vec<_> = (0..10_001).map(|_| new_event("a", b"")).collect();

    enum Call {
        Publish(pb::PublishRequest),
        Poll(pb::PollRequest),
        Subscribe(pb::SubscribeRequest),
    }
    let poll = |f: fn(&mut pb::PollRequest)| {
        let mut req = pb::PollRequest::default();
        f(&mut req);
        Call::Poll(req)
    };
    // Each case: the call, its status code, the ErrorInfo reason, the field the BadRequest (and
    // ErrorInfo metadata) names, and fragments of the message for people.
    type Case<'a> = (&'a str, Call, Code, ErrorReason, &'a str, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            "empty publish",
            Call::Publish(publish(vec![])),
            Code::InvalidArgument,
            ErrorReason::NoEvents,
            "events",
            &["events is empty"],
        ),
        (
            "empty topic",
            Call::Publish(publish(vec![new_event("", b"x")])),
            Code::InvalidArgument,
            ErrorReason::InvalidTopic,
            "events[0].topic",
            &["events[0].topic \"\"", "[A-Za-z0-9._-]"],
        ),
        (
            "topic with a space",
            Call::Publish(publish(vec![new_event("ok", b""), new_event("a b", b"")])),
            Code::InvalidArgument,
            ErrorReason::InvalidTopic,
            "events[1].topic",
            &["events[1].topic \"a b\""],
        ),
        (
            "topic too long",
            Call::Publish(publish(vec![new_event(&long_topic, b"")])),
            Code::InvalidArgument,
            ErrorReason::InvalidTopic,
            "events[0].topic",
            &["1 to 128 characters"],
        ),
        (
            "payload over the limit",
            Call::Publish(publish(vec![pb::NewEvent {
                topic: "a".into(),
                payload: oversize.clone(),
            }])),
            Code::InvalidArgument,
            ErrorReason::PayloadTooLarge,
            "events[0].payload",
            &["events[0].payload is 1048577 bytes", "limit is 1048576"],
        ),
        (
            "too many events",
            Call::Publish(publish(too_many)),
            Code::InvalidArgument,
            ErrorReason::TooManyEvents,
            "events",
            &["events has 10001 entries", "at most 10000"],
        ),
        (
            "max_events over the limit",
            poll(|r| r.max_events = 10_001),
            Code::InvalidArgument,
            ErrorReason::MaxEventsTooLarge,
            "max_events",
            &["max_events 10001", "1 to 10000"],
        ),
        (
            "max_wait over the limit",
            poll(|r| r.max_wait = duration(61, 0)),
            Code::InvalidArgument,
            ErrorReason::MaxWaitTooLong,
            "max_wait",
            &["max_wait 61s", "at most 60s"],
        ),
        (
            "negative max_wait",
            poll(|r| r.max_wait = duration(-1, 0)),
            Code::InvalidArgument,
            ErrorReason::InvalidMaxWait,
            "max_wait",
            &["max_wait -1s", "negative"],
        ),
        (
            "malformed max_wait",
            poll(|r| r.max_wait = duration(1, -5)),
            Code::InvalidArgument,
            ErrorReason::InvalidMaxWait,
            "max_wait",
            &["max_wait", "sign of seconds"],
        ),
        (
            "invalid filter topic in poll",
            poll(|r| r.topics = vec!["ok".into(), "no/slash".into()]),
            Code::InvalidArgument,
            ErrorReason::InvalidTopic,
            "topics[1]",
            &["topics[1] \"no/slash\""],
        ),
        (
            "expired cursor in poll",
            poll(|r| r.after_sequence = Some(5)),
            Code::OutOfRange,
            ErrorReason::CursorExpired,
            "after_sequence",
            &[
                "after_sequence 5 has expired",
                "oldest_sequence is 21",
                "head_sequence is 30",
            ],
        ),
        (
            "cursor beyond the head in poll",
            poll(|r| r.after_sequence = Some(31)),
            Code::OutOfRange,
            ErrorReason::CursorAhead,
            "after_sequence",
            &[
                "after_sequence 31 is beyond head_sequence 30",
                "oldest_sequence 21",
            ],
        ),
        (
            "expired cursor in subscribe",
            Call::Subscribe(pb::SubscribeRequest {
                after_sequence: Some(19),
                topics: vec![],
            }),
            Code::OutOfRange,
            ErrorReason::CursorExpired,
            "after_sequence",
            &["after_sequence 19 has expired", "oldest_sequence is 21"],
        ),
        (
            "cursor beyond the head in subscribe",
            Call::Subscribe(pb::SubscribeRequest {
                after_sequence: Some(1000),
                topics: vec![],
            }),
            Code::OutOfRange,
            ErrorReason::CursorAhead,
            "after_sequence",
            &["beyond head_sequence 30"],
        ),
        (
            "too many filter topics in subscribe",
            Call::Subscribe(pb::SubscribeRequest {
                after_sequence: None,
                topics: vec!["a".into(); 101],
            }),
            Code::InvalidArgument,
            ErrorReason::TooManyTopics,
            "topics",
            &["topics has 101 entries", "at most 100"],
        ),
    ];

    for (name, call, code, reason, field, fragments) in cases {
        let status = match call {
            Call::Publish(req) => client.publish(req).await.map(|_| ()),
            Call::Poll(req) => client.poll(req).await.map(|_| ()),
            Call::Subscribe(req) => client.subscribe(req).await.map(|_| ()),
        }
        .expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        let info = ErrorInfo::from_status(&status)
            .unwrap_or_else(|| panic!("{name}: no pushpull ErrorInfo in {status:?}"));
        assert_eq!(info.reason, reason, "{name}");
        assert_eq!(info.field(), Some(field), "{name}");
        let violations = status
            .get_details_bad_request()
            .unwrap_or_else(|| panic!("{name}: no BadRequest"))
            .field_violations;
        assert_eq!(violations.len(), 1, "{name}");
        assert_eq!(violations[0].field, field, "{name}");
        if reason == ErrorReason::CursorExpired || reason == ErrorReason::CursorAhead {
            assert_eq!(info.get_u64(key::OLDEST_SEQUENCE), Some(21), "{name}");
            assert_eq!(info.get_u64(key::HEAD_SEQUENCE), Some(30), "{name}");
            assert!(info.get(key::LOG_ID).is_some_and(|id| !id.is_empty()));
        }
        if reason == ErrorReason::CursorExpired {
            let after = info.get_u64(key::AFTER_SEQUENCE).unwrap();
            assert_eq!(info.get_u64(key::MISSED), Some(20 - after), "{name}");
        }
        for fragment in fragments {
            assert!(
                status.message().contains(fragment),
                "{name}: message {:?} lacks {fragment:?}",
                status.message()
            );
        }
    }

    // Nothing was appended by the rejected calls, and the producer still serves.
    let after = client
        .poll(pb::PollRequest {
            after_sequence: Some(20),
            ..Default::default()
        })
        .await
        .expect("still serving")
        .into_inner();
    assert_eq!(
        after.head_sequence, 30,
        "rejected publishes appended nothing"
    );
    assert_eq!(sequences(&after.events), (21..=30).collect::<Vec<_>>());
    assert_eq!(producer.publish("a", &["ok"]).await, (31, 31));
}

#[tokio::test]
async fn cursor_at_oldest_minus_one_and_zero_are_valid() {
    let producer = spawn_producer(&["--retention-events", "10"]).await;
    producer.publish_n("a", 30).await;
    let mut client = producer.client.clone();
    for after in [0, 20, 30] {
        client
            .poll(pb::PollRequest {
                after_sequence: Some(after),
                max_wait: Some(proto_duration(Duration::ZERO)),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("after_sequence {after}: {s:?}"));
    }
}
