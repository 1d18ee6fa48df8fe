//! The JetStream section of the report: its targets, its Markdown tables, its JSON, and what
//! `pushpull-bench check` requires of it.

use std::{fmt::Write as _, time::Duration};

use serde_json::json;

use super::{Results, Target, nats_version, or_dash, per_event_us, rates, yes};
use crate::{
    jetstream::{CatchUpJsRun, JetStreamResults, PublishJsRun, Publisher, Raw, Source},
    scenarios::{mib, ms},
    storage::{Backend, Replicas},
};

/// The goal of issue 10: the producer adds at most this much to JetStream's own per-event cost.
const COST_RATIO_GOAL: f64 = 1.2;
/// Push p99 through JetStream with replicas 3, at the latency runs' rate.
const PUSH_P99_GOAL: Duration = Duration::from_millis(5);

const BOTH: [Replicas; 2] = [Replicas::One, Replicas::Three];

fn publish_run(
    js: &JetStreamResults,
    publisher: Publisher,
    publishers: usize,
) -> Option<&PublishJsRun> {
    js.publish
        .iter()
        .find(|p| p.publisher == publisher && p.publishers == publishers)
}

/// The producer on JetStream and raw JetStream with the same batching (one message per
/// 1,000-event batch, as many in flight as callers), for `replicas` and `publishers`.
fn cost_pair(
    js: &JetStreamResults,
    replicas: Replicas,
    publishers: usize,
) -> (Option<&PublishJsRun>, Option<&PublishJsRun>) {
    (
        publish_run(
            js,
            Publisher::Producer(Backend::JetStream(replicas)),
            publishers,
        ),
        publish_run(js, Publisher::Raw(Raw::Batch, replicas), publishers),
    )
}

/// Producer per-event cost over raw JetStream's: (1 / producer rate) / (1 / raw rate).
fn cost_ratio(producer: &PublishJsRun, raw: &PublishJsRun) -> f64 {
    raw.rate() / producer.rate().max(1e-9)
}

pub(super) fn targets(r: &Results) -> Vec<Target> {
    let js = &r.jetstream;
    let s = &r.settings.jetstream;
    let not_run = || {
        js.skipped
            .as_ref()
            .map_or("not measured".to_owned(), |why| format!("not run: {why}"))
    };
    let mut t = Vec::new();
    for replicas in BOTH {
        for &publishers in &s.publishers {
            let (producer, raw) = cost_pair(js, replicas, publishers);
            t.push(Target {
                name: format!(
                    "JetStream store (replicas {}), {publishers} publisher(s) × {} events per call: per-event cost ≤ {COST_RATIO_GOAL} × raw JetStream's (one message per batch, {publishers} in flight)",
                    replicas.count(),
                    s.publish_batch
                ),
                measured: match (producer, raw) {
                    (Some(p), Some(raw)) => format!(
                        "{:.3} vs {:.3} M events/s: {:.2} vs {:.2} µs per event ({:.2}×)",
                        p.rate() / 1e6,
                        raw.rate() / 1e6,
                        p.cost_us(),
                        raw.cost_us(),
                        cost_ratio(p, raw)
                    ),
                    _ => not_run(),
                },
                pass: match (producer, raw) {
                    (Some(p), Some(raw)) => Some(cost_ratio(p, raw) <= COST_RATIO_GOAL),
                    _ => None,
                },
            });
        }
    }
    let push = js
        .latency
        .iter()
        .find(|l| l.backend == Backend::JetStream(Replicas::Three));
    let file = js.latency.iter().find(|l| l.backend == Backend::FileAlways);
    t.push(Target {
        name: format!(
            "push p99 at {} events/s through JetStream (replicas 3, loopback) ≤ {} ms",
            s.rate,
            PUSH_P99_GOAL.as_millis()
        ),
        measured: push.map_or_else(not_run, |l| {
            format!(
                "{:.3} ms{}",
                ms(l.push_p99),
                file.map_or(String::new(), |f| format!(
                    " (file store, fsync always: {:.3} ms)",
                    ms(f.push_p99)
                ))
            )
        }),
        pass: push.map(|l| l.push_p99 <= PUSH_P99_GOAL && l.received == l.published),
    });
    t.push(Target {
        name: format!(
            "fan-out through one stream (replicas 3): {} producers × {} subscribers, events published through one, every subscriber on every producer gets every event",
            s.fanout_producers, s.fanout_subscribers
        ),
        measured: js.fanout.as_ref().map_or_else(not_run, |f| {
            f.sides
                .iter()
                .map(|side| {
                    format!(
                        "{} of {} in {:.1} s",
                        side.delivered,
                        side.expected,
                        side.elapsed.as_secs_f64()
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        }),
        pass: js
            .fanout
            .as_ref()
            .map(|f| f.sides.iter().all(|side| side.all_delivered)),
    });
    t
}

pub(super) fn markdown(o: &mut String, r: &Results) {
    let js = &r.jetstream;
    let s = &r.settings.jetstream;
    let tries = r.settings.throughput_tries;
    let _ = writeln!(
        o,
        "\n## JetStream\n\nThe JetStream store (`--store jetstream`) next to the file store (`--fsync always`) and the memory store, and next to JetStream itself driven with `async-nats` from the benchmark process (the engine's own ceiling), in one run on the same 64-byte payloads. nats-server {} on loopback: replicas 1 on one node, replicas 3 on a cluster of three nodes on this machine (every node's store on the same disk). Every run has a stream of its own, deleted after it. Load average (1/5/15 min) during this section: {} at start, {} at end.\n",
        nats_version(),
        or_dash(&js.load_start),
        or_dash(&js.load_end)
    );
    if let Some(why) = &js.skipped {
        let _ = writeln!(o, "Not run: {why}.");
        return;
    }
    if js.publish.is_empty() && js.catchup.is_empty() && js.latency.is_empty() {
        let _ = writeln!(o, "Not run (`--only` left it out, or it failed).");
        return;
    }
    let _ = writeln!(
        o,
        "### Publish throughput\n\n{} events flat out per run ({} for one message per event), after a warm-up of a twentieth of that; each tried {tries} time(s), interleaved, the fastest kept. Producers: {} events per unary Publish from each caller, each caller waiting for its answer. Raw (a): the same bytes as the store's message body (1,000 length-prefixed event encodings), one message per batch, each caller awaiting its acknowledgement before the next (as many messages in flight as callers). Raw (a′): the same, with what the store adds to each message (its two headers, a `Nats-Msg-Id`, `Nats-Expected-Last-Sequence`), so one in flight. Raw (a″): (a′), and each message read back by an ordered consumer on the same connection before the next is sent, as the store answers a Publish only once its follower has read the message back: the store's protocol without the producer. Raw (b): one message per event (one event's encoding), one task, up to {} acknowledgements in flight. Per-event cost = 1 / throughput. Messages: JetStream messages stored (the producer's `jetstream_messages_published`; several concurrent Publish calls share one). nats-server CPU: every node's, over the run and its warm-up.\n",
        s.publish_events, s.per_event_events, s.publish_batch, s.per_event_window
    );
    let _ = writeln!(
        o,
        "| publisher | callers | events per call or message | events/s | tries, M/s | µs per event | × raw (a), same replicas and callers | messages | events per message | producer CPU µs/event | nats-server CPU µs/event |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    let mut order: Vec<&PublishJsRun> = js.publish.iter().collect();
    order.sort_by_key(|p| p.publishers);
    for p in order {
        let raw = match p.publisher {
            Publisher::Producer(Backend::JetStream(r)) => {
                publish_run(js, Publisher::Raw(Raw::Batch, r), p.publishers)
            }
            _ => None,
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.3} M | {} | {:.2} | {} | {} | {} | {} | {:.2} |",
            p.publisher.name(),
            p.publishers,
            p.batch,
            p.rate() / 1e6,
            rates(&p.tries),
            p.cost_us(),
            raw.map_or("–".into(), |raw| format!("{:.2}", cost_ratio(p, raw))),
            if p.messages == 0 {
                "–".into()
            } else {
                p.messages.to_string()
            },
            if p.messages == 0 {
                "–".into()
            } else {
                format!("{:.0}", p.events as f64 / p.messages as f64)
            },
            p.producer_cpu.map_or("–".into(), |c| format!(
                "{:.2}",
                per_event_us(c, p.events)
            )),
            per_event_us(p.nats_cpu, p.events + p.events / 20),
        );
    }
    let _ = writeln!(
        o,
        "\n**Producer cost relative to raw JetStream**: per-event cost is 1 / throughput; the producer on `--store jetstream` is compared with raw (a), which has the same batching (one JetStream message per 1,000-event call, as many calls in flight as callers) and the same bytes, so the ratio is what the producer adds: gRPC in and out, encoding, the group commit's queue, the expected-last-sequence and message id, and waiting for its own follower to read the message back before it answers. Goal: ≤ {COST_RATIO_GOAL}×. The (a′) and (a″) columns split the difference: what the store's headers and one message in flight cost, and what waiting for the read-back costs, before any of the producer's own work.\n\n| replicas | callers | producer events/s | raw (a) events/s | producer µs/event | raw (a) µs/event | ratio | raw (a′) µs/event | raw (a″) µs/event | producer on the memory store µs/event | verdict |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|"
    );
    for replicas in BOTH {
        for &publishers in &s.publishers {
            if let (Some(p), Some(raw)) = cost_pair(js, replicas, publishers) {
                let one_in_flight = |how: Raw| {
                    publish_run(js, Publisher::Raw(how, replicas), 1)
                        .filter(|_| publishers == 1)
                        .map_or("–".into(), |a| format!("{:.2}", a.cost_us()))
                };
                let memory = publish_run(js, Publisher::Producer(Backend::Memory), publishers);
                let ratio = cost_ratio(p, raw);
                let _ = writeln!(
                    o,
                    "| {} | {publishers} | {:.3} M | {:.3} M | {:.2} | {:.2} | {ratio:.2}× | {} | {} | {} | {} |",
                    replicas.count(),
                    p.rate() / 1e6,
                    raw.rate() / 1e6,
                    p.cost_us(),
                    raw.cost_us(),
                    one_in_flight(Raw::AsTheStore),
                    one_in_flight(Raw::ReadBack),
                    memory.map_or("–".into(), |m| format!("{:.2}", m.cost_us())),
                    if ratio <= COST_RATIO_GOAL {
                        "pass"
                    } else {
                        "MISS"
                    }
                );
            }
        }
    }

    let _ = writeln!(
        o,
        "\n### Catch-up\n\nA stream filled with {} events through a producer (one caller, {} events per Publish: one JetStream message each), then read from sequence 0 by one push consumer process (one Subscribe stream) on a producer started afterwards (nothing in its tail cache: every read goes to the stream, by direct gets), and on the producer that wrote it (its `--cache-bytes` holds it all); and, in the benchmark process, by a raw ordered consumer (what the store's follower is) and by raw direct gets of consecutive messages, 4 in flight (the store's read mechanism, nothing wasted), both counting events by the `Pushpull-Events` header. Each tried {tries} time(s), interleaved, the fastest kept. Bytes from NATS: the reader's TCP payload bytes received from the servers (`ss`), per event counted.\n\n| replicas | reader | events counted | seconds | events/s | tries, M/s | × raw ordered consumer | store reads | cache reads | bytes/event from NATS | producer CPU µs/event | consumer CPU µs/event | nats-server CPU µs/event |\n|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        s.catchup_events, s.publish_batch
    );
    for c in &js.catchup {
        let raw = js
            .catchup
            .iter()
            .find(|x| x.source == Source::RawOrdered && x.replicas == c.replicas);
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.3} | {:.2} M | {} | {} | {} | {} | {:.0} | {} | {:.2} | {:.2} |",
            c.replicas.count(),
            c.source.name(),
            c.events,
            c.elapsed.as_secs_f64(),
            c.rate() / 1e6,
            rates(&c.tries),
            raw.map_or("–".into(), |raw| format!(
                "{:.2}",
                c.rate() / raw.rate().max(1e-9)
            )),
            c.store_reads,
            c.cache_reads,
            c.nats_bytes as f64 / c.events.max(1) as f64,
            c.producer_cpu.map_or("–".into(), |p| format!(
                "{:.2}",
                per_event_us(p, c.events)
            )),
            per_event_us(c.consumer_cpu, c.events),
            per_event_us(c.nats_cpu, c.events),
        );
    }

    let _ = writeln!(
        o,
        "\n### Publish and push latency at {} events/s\n\nAs the storage section measures it (`storage::publish_latency_on`): one publisher, one call in flight, what is due every millisecond, for {:.1} s; one push consumer process at the head of the same producer. Publish: sent → answered at the publisher, per call. Push, per event: `produced_at` (set by the producer before it writes) → the consumer's receipt, so through JetStream it includes the publish, the replication and the follower reading the message back. Goal for JetStream replicas 3: push p99 ≤ {} ms.\n\n| store | delivered | Publish calls | publish p50 ms | publish p99 ms | publish p99 by event ms | push p50 ms | push p99 ms |\n|---|--:|--:|--:|--:|--:|--:|--:|",
        s.rate,
        s.window.as_secs_f64(),
        PUSH_P99_GOAL.as_millis()
    );
    for l in &js.latency {
        let _ = writeln!(
            o,
            "| {} | {}/{} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            l.backend.name(),
            l.received,
            l.published,
            l.publish_calls,
            ms(l.publish_p50),
            ms(l.publish_p99),
            ms(l.publish_event_p99),
            ms(l.push_p50),
            ms(l.push_p99),
        );
    }

    if let Some(f) = &js.fanout {
        let _ = writeln!(
            o,
            "\n### Fan-out: {} producers on one stream\n\n{} producers on one stream of replicas {}, {} Subscribe streams on each (generated client, in the benchmark process, {} per HTTP/2 connection), all from the same cursor; {} events published at {} events/s through the first producer for {:.0} s; the other serves them from its own follower. Latency: `produced_at` (at the publishing producer) → receipt. Memory per idle subscriber: RSS with every stream attached and idle, minus RSS before, divided by the count. nats-server CPU over the window: {:.2} s.\n\n| producer | subscribers | delivered | all delivered | seconds to deliver | p50 ms | p99 ms | p99.9 ms | max ms | RSS before → idle MiB | per idle subscriber KB | producer CPU s | producer CPU µs per delivery |\n|---|--:|--:|:-:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
            f.sides.len(),
            f.sides.len(),
            f.replicas.count(),
            s.fanout_subscribers,
            r.settings.streams_per_connection,
            f.published,
            f.rate,
            s.fanout_window.as_secs_f64(),
            f.nats_cpu.as_secs_f64(),
        );
        for (i, side) in f.sides.iter().enumerate() {
            let _ = writeln!(
                o,
                "| {} ({}) | {} | {}/{} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} → {:.1} | {:.1} | {:.2} | {:.2} |",
                i + 1,
                if side.publishing {
                    "published through"
                } else {
                    "following"
                },
                side.subscribers,
                side.delivered,
                side.expected,
                yes(side.all_delivered),
                side.elapsed.as_secs_f64(),
                ms(side.p50),
                ms(side.p99),
                ms(side.p999),
                ms(side.max),
                mib(side.rss_before),
                mib(side.rss_idle),
                side.rss_idle.saturating_sub(side.rss_before) as f64
                    / side.subscribers.max(1) as f64
                    / 1000.0,
                side.producer_cpu.as_secs_f64(),
                per_event_us(side.producer_cpu, side.delivered),
            );
        }
    }
}

pub(super) fn json(js: &JetStreamResults) -> serde_json::Value {
    let us = |d: Duration| d.as_micros() as u64;
    let catchup = |c: &CatchUpJsRun| {
        json!({
            "replicas": c.replicas.count(), "reader": c.source.name(),
            "log_events": c.log_events, "events_per_message": c.events_per_message,
            "events": c.events, "elapsed_us": us(c.elapsed), "events_per_second": c.rate(),
            "tries_events_per_second": c.tries, "store_reads": c.store_reads,
            "cache_reads": c.cache_reads, "bytes_from_nats": c.nats_bytes,
            "producer_cpu_us": c.producer_cpu.map(us), "consumer_cpu_us": us(c.consumer_cpu),
            "nats_cpu_us": us(c.nats_cpu),
        })
    };
    json!({
        "skipped": js.skipped,
        "load_start": js.load_start, "load_end": js.load_end,
        "publish": js.publish.iter().map(|p| json!({
            "publisher": p.publisher.name(),
            "producer": matches!(p.publisher, Publisher::Producer(_)),
            "replicas": match p.publisher {
                Publisher::Producer(Backend::JetStream(r)) | Publisher::Raw(_, r) => Some(r.count()),
                Publisher::Producer(_) => None,
            },
            "callers": p.publishers, "events_per_call": p.batch, "events": p.events,
            "messages": p.messages, "elapsed_us": us(p.elapsed),
            "events_per_second": p.rate(), "tries_events_per_second": p.tries,
            "cost_us_per_event": p.cost_us(),
            "producer_cpu_us": p.producer_cpu.map(us), "nats_cpu_us": us(p.nats_cpu),
        })).collect::<Vec<_>>(),
        "catchup": js.catchup.iter().map(catchup).collect::<Vec<_>>(),
        "latency": js.latency.iter().map(|l| json!({
            "store": l.backend.name(), "rate": l.rate, "published": l.published,
            "received": l.received, "publish_calls": l.publish_calls,
            "publish_p50_us": us(l.publish_p50), "publish_p99_us": us(l.publish_p99),
            "publish_p99_by_event_us": us(l.publish_event_p99),
            "push_p50_us": us(l.push_p50), "push_p99_us": us(l.push_p99),
        })).collect::<Vec<_>>(),
        "fanout": js.fanout.as_ref().map(|f| json!({
            "replicas": f.replicas.count(), "rate": f.rate, "published": f.published,
            "nats_cpu_us": us(f.nats_cpu),
            "producers": f.sides.iter().map(|s| json!({
                "published_through": s.publishing, "subscribers": s.subscribers,
                "delivered": s.delivered, "expected": s.expected,
                "all_delivered": s.all_delivered, "elapsed_us": us(s.elapsed),
                "p50_us": us(s.p50), "p99_us": us(s.p99), "p999_us": us(s.p999),
                "max_us": us(s.max), "rss_before": s.rss_before, "rss_idle": s.rss_idle,
                "producer_cpu_us": us(s.producer_cpu),
            })).collect::<Vec<_>>(),
        })),
    })
}

/// The JetStream section: every publisher measured with a rate, the fresh producer's
/// catch-up read from the stream, every latency run delivered, the fan-out complete on every
/// producer. Not run is accepted outside CI only.
pub(super) fn check(js: &serde_json::Value) -> Result<(), String> {
    if let Some(why) = js["skipped"].as_str() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            return Err(format!("jetstream scenario not run under CI: {why}"));
        }
        eprintln!("jetstream scenario not run: {why}");
        return Ok(());
    }
    let list = |key: &str| js[key].as_array().cloned().unwrap_or_default();
    let publish = list("publish");
    let producers = publish.iter().filter(|p| p["producer"] == true).count();
    let raw = publish.len() - producers;
    if producers < 8
        || raw < 10
        || publish
            .iter()
            .any(|p| p["events_per_second"].as_f64().unwrap_or(0.0) <= 0.0)
    {
        return Err(format!(
            "jetstream publish: expected 4 stores and raw JetStream at 1 and 4 callers, each with a rate: {publish:?}"
        ));
    }
    let catchup = list("catchup");
    if catchup.len() != 8
        || catchup
            .iter()
            .any(|c| c["events"].as_u64().unwrap_or(0) == 0)
        || catchup
            .iter()
            .filter(|c| c["reader"] == Source::FreshProducer.name())
            .any(|c| c["store_reads"].as_u64().unwrap_or(0) == 0)
    {
        return Err(format!(
            "jetstream catch-up: expected 4 readers × 2 replica counts, the fresh producer reading the stream: {catchup:?}"
        ));
    }
    let latency = list("latency");
    if latency.len() != 3
        || latency
            .iter()
            .any(|l| l["received"] != l["published"] || l["published"].as_u64().unwrap_or(0) == 0)
    {
        return Err(format!(
            "jetstream latency: not every event delivered: {latency:?}"
        ));
    }
    let sides = js["fanout"]["producers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if sides.len() < 2 || sides.iter().any(|s| s["all_delivered"] != true) {
        return Err(format!("jetstream fan-out incomplete: {}", js["fanout"]));
    }
    Ok(())
}
