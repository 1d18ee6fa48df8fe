//! The conformance suite and the JetStream store's own checks, against a real `nats-server`
//! (one node; `.ci/install.d/40-nats.sh` installs it). Each test gets a stream of its own.

use std::sync::{Arc, atomic::AtomicUsize};

use testkit::nats::NatsServer;

use super::*;
use crate::{
    log::EventLog,
    store::conformance::{self, Fixture, Options},
};

fn stream_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "T{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn options(server: &NatsServer, stream: &str, retention: Retention) -> JetStreamOptions {
    JetStreamOptions {
        urls: vec![server.url()],
        stream: stream.to_owned(),
        replicas: 1,
        retention,
        connect_timeout: Duration::from_secs(10),
    }
}

/// A log on a server of its own (a server per test: statics are never dropped, so a shared
/// one would outlive the test binary).
pub(crate) async fn open(options: Options) -> Fixture {
    let server = NatsServer::start().await;
    let tail = Arc::new(Tail::new(options.cache_bytes));
    let store = JetStreamStore::open(
        self::options(&server, &stream_name(), options.retention),
        Arc::clone(&tail),
        StoreMetrics::default(),
    )
    .await
    .expect("opens");
    Fixture {
        log: EventLog::new(Arc::new(store), tail, options.limits),
        guard: Box::new(server),
    }
}

conformance::suite!(crate::store::jetstream::tests::open);

fn keep_all() -> Retention {
    Retention {
        max_events: usize::MAX,
        max_bytes: usize::MAX,
        max_age: None,
    }
}

const LIMITS: crate::log::PublishLimits = crate::log::PublishLimits {
    max_events: 10_000,
    max_payload_bytes: 1 << 20,
};

async fn producer(server: &NatsServer, stream: &str) -> EventLog {
    metered_producer(server, stream).await.0
}

/// A producer and its store's metrics.
async fn metered_producer(server: &NatsServer, stream: &str) -> (EventLog, StoreMetrics) {
    let tail = Arc::new(Tail::new(crate::log::DEFAULT_CACHE_BYTES));
    let metrics = StoreMetrics::default();
    let store = JetStreamStore::open(
        options(server, stream, keep_all()),
        Arc::clone(&tail),
        metrics.clone(),
    )
    .await
    .expect("opens");
    (EventLog::new(Arc::new(store), tail, LIMITS), metrics)
}

fn events(n: usize, tag: &str) -> Vec<crate::log::NewEvent> {
    (0..n)
        .map(|i| crate::log::NewEvent {
            topic: format!("t.{tag}").into(),
            payload: bytes::Bytes::from(format!("{tag}-{i}")),
        })
        .collect()
}

async fn read_everything(log: &EventLog) -> Vec<crate::log::Event> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let batch = log
            .read::<crate::log::Event>(
                after,
                &crate::log::TopicFilter::default(),
                crate::log::ReadLimits {
                    max_events: 1000,
                    max_bytes: usize::MAX,
                },
            )
            .await
            .unwrap();
        if batch.events.is_empty() {
            return out;
        }
        after = batch.next_after;
        out.extend(batch.events);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_producers_on_one_stream_make_one_gapless_log() {
    let (server, stream) = (NatsServer::start().await, stream_name());
    // Opened at once on a new stream: both find it empty and publish the genesis; one stays.
    let ((a, a_metrics), (b, b_metrics)) = tokio::join!(
        metered_producer(&server, &stream),
        metered_producer(&server, &stream)
    );
    assert_eq!(a.log_id(), b.log_id(), "the log_id comes from the stream");
    let publish = |log: EventLog, tag: &'static str| async move {
        let mut acks = Vec::new();
        for i in 0..40 {
            let n = 1 + (i % 7);
            let (first, last) = log.append(events(n, tag)).await.unwrap();
            assert_eq!(
                last - first + 1,
                n as u64,
                "a Publish's events are consecutive"
            );
            acks.push((first, last, tag, n));
        }
        acks
    };
    let (acks, more) = tokio::join!(
        tokio::spawn(publish(a.clone(), "a")),
        tokio::spawn(publish(b.clone(), "b"))
    );
    let mut acks = acks.unwrap();
    acks.extend(more.unwrap());
    acks.sort();
    // The acknowledged ranges tile 1..=head with no gap and no overlap.
    let mut next = 1;
    for (first, last, _, _) in &acks {
        assert_eq!(*first, next, "acks: {acks:?}");
        next = last + 1;
    }
    let head = next - 1;
    // Each has committed its own Publish calls; the other's last ones may still be on their
    // way through its follower.
    for log in [&a, &b] {
        let mut watch = log.watch_head();
        tokio::time::timeout(testkit::PROMPTLY, watch.wait_for(|h| *h >= head))
            .await
            .expect("each producer follows the stream")
            .unwrap();
    }
    let from_a = read_everything(&a).await;
    let from_b = read_everything(&b).await;
    assert_eq!(from_a.len() as u64, head);
    assert_eq!(from_a, from_b, "the same log whichever producer is read");
    // Each Publish's events sit together, in its order.
    for (first, last, tag, n) in acks {
        let got: Vec<_> = from_a[(first - 1) as usize..last as usize]
            .iter()
            .map(|e| String::from_utf8(e.payload.to_vec()).unwrap())
            .collect();
        let want: Vec<_> = (0..n).map(|i| format!("{tag}-{i}")).collect();
        assert_eq!(got, want);
    }
    // They did collide, and each renumbering is counted.
    let conflicts = a_metrics.jetstream_conflicts.get() + b_metrics.jetstream_conflicts.get();
    assert!(conflicts > 0, "two producers at once collided");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_producer_reads_the_log_others_wrote_from_the_stream() {
    let (server, stream) = (NatsServer::start().await, stream_name());
    let a = producer(&server, &stream).await;
    for i in 0..30 {
        a.append(events(1 + i % 3, "x")).await.unwrap();
    }
    let written = read_everything(&a).await;
    // A producer started later has nothing of it cached: every read goes to the stream.
    let late = producer(&server, &stream).await;
    assert_eq!(late.bounds(), a.bounds());
    assert_eq!(read_everything(&late).await, written);
    assert_eq!(late.log_id(), a.log_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_the_stream_split_messages_anywhere_and_read_on() {
    let (server, stream) = (NatsServer::start().await, stream_name());
    let a = producer(&server, &stream).await;
    // Messages of 7 events each (one Publish at a time): reads of 1, 3, 7, 10 events start and
    // end inside messages, at their edges, and across several.
    for _ in 0..12 {
        a.append(events(7, "m")).await.unwrap();
    }
    let written = read_everything(&a).await;
    let late = producer(&server, &stream).await;
    for max_events in [1, 3, 7, 10, 1000] {
        for start in [0, 1, 6, 7, 8, 40] {
            let (mut after, mut got) = (start, Vec::new());
            loop {
                let batch = late
                    .read::<crate::log::Event>(
                        after,
                        &crate::log::TopicFilter::default(),
                        crate::log::ReadLimits {
                            max_events,
                            max_bytes: usize::MAX,
                        },
                    )
                    .await
                    .unwrap();
                if batch.events.is_empty() {
                    break;
                }
                assert!(batch.events.len() <= max_events);
                after = batch.next_after;
                got.extend(batch.events);
            }
            assert_eq!(
                got,
                written[start as usize..],
                "reads of {max_events} from after {start}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_with_other_limits_is_refused_naming_them() {
    let (server, stream) = (NatsServer::start().await, stream_name());
    let _first = producer(&server, &stream).await;
    let mut other = options(&server, &stream, keep_all());
    other.retention.max_events = 500;
    other.retention.max_age = Some(Duration::from_secs(3600));
    let err = JetStreamStore::open(other, Arc::new(Tail::new(0)), StoreMetrics::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("stream {stream} exists")), "{err}");
    assert!(
        err.contains("max_msgs is -1, --retention-events asks for 500"),
        "{err}"
    );
    assert!(err.contains("--retention-age"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_larger_than_one_message_is_refused_whole() {
    let (server, stream) = (NatsServer::start().await, stream_name());
    let log = producer(&server, &stream).await;
    log.append(events(1, "ok")).await.unwrap();
    // 9 events of 1 MiB: more than the server's 8 MB max_payload.
    let big: Vec<_> = (0..9)
        .map(|_| crate::log::NewEvent {
            topic: "big".into(),
            payload: bytes::Bytes::from(vec![7u8; 1 << 20]),
        })
        .collect();
    let err = log.append(big).await.unwrap_err();
    assert!(
        matches!(&err, crate::error::Error::PayloadTooLarge { field, .. } if field == "events"),
        "{err:?}"
    );
    assert_eq!(log.bounds(), (1, 1), "nothing of it was stored");
    assert_eq!(log.append(events(2, "after")).await.unwrap(), (2, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_calls_queued_together_share_one_message() {
    let (server, stream) = (NatsServer::start().await, stream_name());
    let log = producer(&server, &stream).await;
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(events(2, &format!("c{i}"))).await.unwrap() })
        })
        .collect();
    let mut ranges = Vec::new();
    for call in calls {
        ranges.push(call.await.unwrap());
    }
    ranges.sort();
    assert_eq!(ranges.first(), Some(&(1, 2)));
    assert_eq!(ranges.last(), Some(&(99, 100)));
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let info = js
        .get_stream(&stream)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    // The genesis plus fewer messages than calls: concurrent calls were grouped.
    assert!(
        info.state.messages < 51,
        "{} messages for 50 concurrent Publish calls",
        info.state.messages
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_fails_publish_naming_it_and_everything_resumes_when_it_is_back() {
    let (server, stream) = (NatsServer::start().await, stream_name());
    let log = producer(&server, &stream).await;
    assert_eq!(log.append(events(3, "before")).await.unwrap(), (1, 3));
    assert_eq!(log.store().unavailable(), None);
    let mut head = log.watch_head();

    server.stop().await;
    let err = log.append(events(1, "down")).await.unwrap_err();
    assert!(
        matches!(&err, crate::error::Error::StorageUnavailable { detail, .. }
            if detail.contains("NATS") && detail.contains(&server.url())),
        "{err:?}"
    );
    let deadline = Instant::now() + testkit::PROMPTLY;
    while log.store().unavailable().is_none() {
        assert!(Instant::now() < deadline, "still reported available");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(log.store().unavailable().unwrap().contains("NATS"));
    // What was committed is still served from the cache meanwhile.
    assert_eq!(read_everything(&log).await.len(), 3);

    server.restart().await;
    let deadline = Instant::now() + testkit::PROMPTLY;
    let appended = loop {
        match log.append(events(2, "after")).await {
            Ok(range) => break range,
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "publishing did not resume: {err}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(appended, (4, 5), "numbering goes on where it was");
    tokio::time::timeout(testkit::PROMPTLY, head.wait_for(|h| *h >= 5))
        .await
        .expect("the follower resumes")
        .unwrap();
    let deadline = Instant::now() + testkit::PROMPTLY;
    while log.store().unavailable().is_some() {
        assert!(Instant::now() < deadline, "still reported unavailable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let payloads: Vec<_> = read_everything(&log)
        .await
        .iter()
        .map(|e| String::from_utf8(e.payload.to_vec()).unwrap())
        .collect();
    assert_eq!(
        payloads,
        ["before-0", "before-1", "before-2", "after-0", "after-1"]
    );
}

/// A message that claims sequences after a gap, right after the message that ends at the head
/// (no message in between, so retention cannot have removed them): the log is broken. The
/// producer stops following and says so, instead of taking the gap for retention and moving
/// its oldest sequence past events that other producers serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_between_consecutive_messages_breaks_the_log_and_is_not_retention() {
    let (server, stream) = (NatsServer::start().await, stream_name());
    let log = producer(&server, &stream).await;
    assert_eq!(log.append(events(3, "a")).await.unwrap(), (1, 3));

    // Someone else's message, numbered 7..=8 where 4 comes next.
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let batch = NewBatch {
        events: vec![("t.x".into(), bytes::Bytes::from_static(b"x")); 2],
    };
    let (body, _) = body::encode(7, &[batch], SystemTime::now());
    let mut headers = HeaderMap::new();
    Span {
        first: 7,
        events: 2,
    }
    .write_headers(&mut headers);
    js.publish_with_headers(format!("pushpull.{stream}"), headers, body)
        .await
        .unwrap()
        .await
        .unwrap();

    let deadline = Instant::now() + testkit::PROMPTLY;
    let why = loop {
        if let Some(why) = log.store().unavailable() {
            break why;
        }
        assert!(Instant::now() < deadline, "the broken log went unnoticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(why.contains("sequences 4..=6 are in no message"), "{why}");
    assert_eq!(
        log.bounds(),
        (1, 3),
        "nothing of it was taken in, oldest included"
    );
}
