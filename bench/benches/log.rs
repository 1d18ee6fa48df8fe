//! Micro-benchmarks of the event log's hot paths: append (one Publish's worth of events) and
//! read (one Subscribe or Poll batch), with no gRPC around them.
//!
//! `cargo bench -p pushpull-bench --bench log`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use producer::{
    log::{Event, EventLog, NewEvent, PublishLimits, ReadLimits, TopicFilter},
    store::Retention,
};
use pushpull::wire::EncodedEvent;
use tokio::runtime::Runtime;

const PAYLOAD: [u8; 64] = [b'x'; 64];

fn log(retention: usize) -> EventLog {
    EventLog::memory_with_log_id(
        "bench".into(),
        Retention {
            max_events: retention,
            max_bytes: usize::MAX,
            max_age: None,
        },
        PublishLimits {
            max_events: 10_000,
            max_payload_bytes: 1024,
        },
    )
}

fn batch(n: usize) -> Vec<NewEvent> {
    let payload = Bytes::from_static(&PAYLOAD);
    (0..n)
        .map(|_| NewEvent {
            topic: "bench".into(),
            payload: payload.clone(),
        })
        .collect()
}

/// The memory store's calls complete at once; a current-thread runtime drives them.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
}

fn append(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("append");
    for n in [1usize, 100, 10_000] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            // Retention keeps the log at a steady size, so eviction is part of the cost.
            let log = log(1_000_000);
            b.iter_batched(
                || batch(n),
                |events| black_box(rt.block_on(log.append(events))),
                criterion::BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let rt = runtime();
    let log = log(1_000_000);
    for _ in 0..100 {
        rt.block_on(log.append(batch(10_000))).expect("valid batch");
    }
    let all = TopicFilter::default();
    let other = TopicFilter::new(vec!["other".into()]).expect("valid topic");
    let mut group = c.benchmark_group("read");
    for n in [1usize, 1_000] {
        let limits = ReadLimits {
            max_events: n,
            max_bytes: 4 * 1024 * 1024,
        };
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("all topics", n), &n, |b, _| {
            let mut after = 0;
            b.iter(|| {
                let batch = rt
                    .block_on(log.read::<Event>(after, &all, limits))
                    .expect("valid cursor");
                after = if batch.caught_up() {
                    0
                } else {
                    batch.next_after
                };
                black_box(batch)
            });
        });
    }
    let limits = ReadLimits {
        max_events: 1_000,
        max_bytes: 4 * 1024 * 1024,
    };
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("encoded (what gRPC sends)/1000", |b| {
        let mut after = 0;
        b.iter(|| {
            let batch = rt
                .block_on(log.read::<EncodedEvent>(after, &all, limits))
                .expect("valid cursor");
            after = if batch.caught_up() {
                0
            } else {
                batch.next_after
            };
            black_box(batch)
        });
    });
    group.throughput(Throughput::Elements(65_536));
    group.bench_function("filter skips 65,536 events", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(log.read::<Event>(0, &other, limits))
                    .expect("valid cursor"),
            )
        });
    });
    group.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
