//! The JetStream store through the real binaries, under the faults it is built for: a producer
//! killed, the stream's leader killed, the whole NATS cluster stopped and started again, and
//! retention by the stream's limits; and two producers publishing into one stream at once.
//!
//! Each cluster test runs a [`Rig`]: three `nats-server` processes ([`NatsCluster`]), a stream
//! of three replicas, two producer processes on it (A and B), a push and a poll consumer
//! process reading from the oldest event with `--producer A,B`, and publishers calling Publish
//! through A and through B with payloads unique to each call (`published.rs`). A call that
//! fails is recorded as not acknowledged: its events may be in the log, once and whole, or not
//! at all. After the fault, a last call through each producer, and then [`Rig::finish`] checks
//! what every test promises:
//! - the log read by Poll from A and from B is the same, gapless from 1, and every
//!   acknowledged event is in it exactly once, at the sequence its answer gave, byte for byte;
//!   nothing is there twice;
//! - each consumer received exactly the log: every event once (`events_received` is the head),
//!   nothing missed, no duplicate dropped, one log.
//!
//! The consumer binary comes from `testkit::process::workspace_binary`: cargo gives a
//! package's tests only its own binaries. Timings are printed, never asserted, except one
//! generous bound on how long publishing stops when the stream's leader is killed.

use std::{net::SocketAddr, time::Duration};

use pushpull::{
    errors::{ErrorInfo, ErrorReason, key},
    pb::{self, consumer_service_client::ConsumerServiceClient},
};
use rand::{Rng as _, rngs::StdRng};
use testkit::{NatsCluster, NatsServer, ServiceProcess};
use tokio::{task::JoinHandle, time::Instant};
use tonic::{Code, Status};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{helpers::*, published::*};

const PRODUCER: &str = env!("CARGO_BIN_EXE_producer");
const PRODUCER_SERVICE: &str = "pushpull.v1.ProducerService";

/// Calls acknowledged before a fault, and for each publisher after it (to show publishing
/// resumed).
const CALLS_AROUND_A_FAULT: usize = 20;

/// The ids of the publishers [`Rig::publish_through_both`] starts: 0 starts on A, 1 on B.
const PUBLISHERS: [u32; 2] = [0, 1];

/// Publishers rest this long between calls: a few hundred calls a test, not thousands, on a
/// machine of two cores that also runs three NATS servers and four services.
const PACE: Duration = Duration::from_millis(10);

// ------------------------------------------------------------------------------- the tests

/// SIGKILL producer A while publishers publish through both: the consumers reading A fail
/// over to B with their cursors, the publisher that used A goes on through B, and nothing
/// acknowledged is lost. A, started again, serves the same log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_killed_loses_nothing_and_its_readers_fail_over() {
    let mut rig = Rig::start("KILL_PRODUCER").await;
    rig.publish_through_both(fault_failure);
    rig.published.wait_for_acks(CALLS_AROUND_A_FAULT).await;
    rig.consumers_past(1).await;

    rig.producers[0].sigkill();
    let killed = Instant::now();
    rig.producers[0].wait_exit(PROMPTLY).await.expect("killed");

    // Publisher 0 published through A: it goes on through B.
    rig.published
        .wait_for_acks_since(killed, &PUBLISHERS, CALLS_AROUND_A_FAULT)
        .await;
    let b = url(&rig.producers[1]);
    for consumer in &rig.consumers {
        consumer
            .wait_for("reading from B after a failover", |s| {
                s.current_producer == b && s.failovers >= 1 && s.connected
            })
            .await;
    }

    rig.producers[0].restart().await;
    let stats = rig.finish("after producer A was killed").await;
    for stats in stats {
        assert!(stats.failovers >= 1, "{stats:#?}");
        assert_eq!(stats.current_producer, b, "{stats:#?}");
    }
}

/// SIGKILL the node that leads the stream: the two left elect a new leader, Publish goes on
/// within seconds (the longest stretch without an acknowledgement is printed, and bounded
/// generously), and nothing acknowledged is lost. The node, started again, catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leader_killed_loses_nothing_and_publishing_resumes() {
    let mut rig = Rig::start("KILL_LEADER").await;
    rig.publish_through_both(fault_failure);
    rig.published.wait_for_acks(CALLS_AROUND_A_FAULT).await;
    rig.consumers_past(1).await;

    let leader = rig.cluster.wait_stream_leader(&rig.stream).await;
    rig.cluster.node(leader).kill();
    let killed = Instant::now();
    let new_leader = rig.cluster.wait_stream_leader(&rig.stream).await;
    assert_ne!(new_leader, leader, "a killed node leads nothing");
    rig.published
        .wait_for_acks_since(killed, &PUBLISHERS, CALLS_AROUND_A_FAULT)
        .await;

    let times = rig.published.ack_times();
    let stalled = longest_pause(&times, killed);
    eprintln!(
        "killed leader {}: {} leads now; from the last acknowledgement before the kill to the \
         first after it {:?}; the longest stretch without one since {stalled:?}",
        rig.cluster.node(leader).name(),
        rig.cluster.node(new_leader).name(),
        first_pause(&times, killed)
    );
    assert!(
        stalled < Duration::from_secs(30),
        "publishing stopped for {stalled:?} after the leader was killed"
    );

    // Back while publishing goes on: it catches up from the new leader.
    rig.cluster.node(leader).restart().await;
    rig.cluster.wait_ready().await;
    rig.finish("after the stream's leader was killed").await;
    // Publishing has stopped: every node holds the stream to the same last message, and its
    // leader counts both other replicas current.
    rig.cluster.wait_stream_current(&rig.stream).await;
}

/// Stop every NATS node (SIGTERM), then start them all again. While they are down, Publish
/// fails with UNAVAILABLE naming what is down and both producers report NOT_SERVING; the
/// readers stay attached (the push consumer's stream, heartbeats coming from the producer; the
/// poll consumer's calls, answered from the producer's tail). Once NATS is back, everything
/// resumes by itself: SERVING, Publish, the consumers.
///
/// On nats-server 2.9.10 (Debian's) this failed about once in 12 runs under load: after the
/// restart one replica held other messages than the leader's at the same stream sequences
/// (most likely the server's count of failed conditional publishes drifting between replicas,
/// which later releases fix, e.g. nats-io/nats-server#4365), a producer
/// following that replica stopped with a corrupt-log error, and its last call was never
/// answered. The failure message shows each node's view of the stream. With nats-server
/// 2.15.1, what CI installs, it passed 40 rounds in a row (`PUSHPULL_NATS_SERVER` runs the
/// tests on another server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_restarted_stops_publish_not_readers_and_everything_resumes() {
    let mut rig = Rig::start("RESTART_CLUSTER").await;
    rig.publish_through_both(fault_failure);
    rig.published.wait_for_acks(CALLS_AROUND_A_FAULT).await;
    rig.consumers_past(1).await;
    let before: Vec<pb::GetStatsResponse> = rig.consumer_stats().await;

    let nodes = rig.cluster.nodes();
    tokio::join!(nodes[0].stop(), nodes[1].stop(), nodes[2].stop());
    let stopped = Instant::now();

    for (i, producer) in rig.producers.iter().enumerate() {
        wait_health(producer.addr, ServingStatus::NotServing).await;
        let id = (100 + i as u32, 0);
        let batch = random_batch(&mut rig.rng, &format!("{}/{}", id.0, id.1), 3, 10);
        rig.published.register(id, &batch);
        let status = publish_batch(&client(producer.addr).await, &batch)
            .await
            .expect_err("a Publish with every NATS node down");
        assert_store_down(&status, &rig.stream);
        eprintln!("producer {i} while NATS is down: {}", status.message());
    }
    let during: Vec<pb::GetStatsResponse> = rig.consumer_stats().await;
    let down_for = stopped.elapsed();

    tokio::join!(nodes[0].restart(), nodes[1].restart(), nodes[2].restart());
    rig.cluster.wait_ready().await;
    let restarted = Instant::now();
    for producer in &rig.producers {
        wait_health(producer.addr, ServingStatus::Serving).await;
    }
    let serving_after = restarted.elapsed();
    rig.published
        .wait_for_acks_since(restarted, &PUBLISHERS, CALLS_AROUND_A_FAULT)
        .await;
    eprintln!(
        "NATS stopped; NOT_SERVING and Publish refused on both producers within {down_for:?}; \
         both SERVING again {serving_after:?} after the restarted cluster was ready"
    );

    // The readers stayed attached: the push consumer's stream and the poll consumer's calls
    // went on (answered from the producers' tails) with no reconnect, before, during and after.
    let after = rig.finish("after the cluster restarted").await;
    for ((before, during), after) in before.iter().zip(&during).zip(&after) {
        assert!(
            during.connected,
            "connected while NATS was down: {during:#?}"
        );
        assert_eq!(
            (after.reconnects, after.failovers),
            (before.reconnects, before.failovers),
            "no reconnect while NATS was down: {after:#?}"
        );
    }
}

/// `--retention-events 50` becomes the stream's `max_msgs`: after 500 single-event Publish
/// calls, a cursor at 1 has expired, and the refusal names the oldest retained sequence, the
/// same from every producer (one started afterwards too); from there on every event is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_the_streams_limits_expires_old_cursors_naming_the_oldest() {
    let server = NatsServer::start().await;
    let urls = server.url();
    let flags = jetstream_flags(&urls, "RETAIN", "1");
    let flags: Vec<&str> = flags
        .iter()
        .map(String::as_str)
        .chain(["--retention-events", "50"])
        .collect();
    let (a, b) = tokio::join!(
        ServiceProcess::producer(PRODUCER, &flags),
        ServiceProcess::producer(PRODUCER, &flags)
    );
    let clients = [client(a.addr).await, client(b.addr).await];
    let mut sent = Vec::new();
    for i in 0..500u64 {
        let payload = format!("retained-{i}");
        let response = publish_batch(
            &clients[i as usize % 2],
            &[new_event("r", payload.as_bytes())],
        )
        .await
        .unwrap_or_else(|status| panic!("Publish {i}: {status:?}"));
        assert_eq!(response.first_sequence, response.last_sequence);
        sent.push((response.first_sequence, payload));
    }
    sent.sort();
    let head = sent.last().expect("500 calls").0;
    assert_eq!(head, 500, "one event per call, from 1");

    let late = ServiceProcess::producer(PRODUCER, &flags).await;
    let mut oldest = Vec::new();
    for client in clients.iter().chain([&client(late.addr).await]) {
        wait_head(client, head).await;
        let status = client
            .clone()
            .poll(poll_request(Some(1)))
            .await
            .expect_err("a cursor at 1 after 500 events, 50 retained");
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
        let info = ErrorInfo::from_status(&status).expect("an ErrorInfo");
        assert_eq!(info.reason, ErrorReason::CursorExpired, "{status:?}");
        assert_eq!(info.field(), Some("after_sequence"));
        assert_eq!(info.get_u64(key::HEAD_SEQUENCE), Some(head));
        let first = info
            .get_u64(key::OLDEST_SEQUENCE)
            .expect("the oldest retained sequence");
        assert!(first > 1, "retention dropped the first events: {info:?}");
        assert_eq!(info.get_u64(key::MISSED), Some(first - 2), "{info:?}");
        oldest.push(first);

        let retained = read_from(client, first - 1, head).await;
        let want: Vec<(u64, String)> = sent[first as usize - 1..].to_vec();
        let got: Vec<(u64, String)> = retained
            .iter()
            .map(|e| (e.sequence, String::from_utf8_lossy(&e.payload).into_owned()))
            .collect();
        assert_eq!(got, want, "every event from the oldest retained on");
    }
    eprintln!("oldest retained, as A, B and a later producer say: {oldest:?}");
    assert!(oldest.iter().all(|&o| o == oldest[0]), "{oldest:?}");
    assert!(
        head - oldest[0] + 1 >= 50,
        "at least --retention-events are kept: {oldest:?}"
    );
}

/// Two producers publishing at once into one stream of three replicas, several callers each,
/// calls of varying sizes: one log, gapless, the same read from either; every call's events
/// consecutive, and the acknowledged ranges tiling 1..=head. The producers really did collide:
/// their renumbering counters say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_producers_publishing_at_once_make_one_gapless_log() {
    let mut rig = Rig::start("TWO_PRODUCERS").await;
    for id in 0..4 {
        let publisher = Publisher {
            id,
            addrs: vec![rig.producers[id as usize % 2].addr],
            seed: rig.rng.random(),
            max_events: 40,
            max_random: 2000,
            pace: Duration::ZERO,
            failure: |status| panic!("no fault here: every Publish is answered: {status:?}"),
        };
        rig.publishers.push(rig.published.spawn(publisher));
    }
    rig.published.wait_for_acks(300).await;

    rig.finish("two producers at once").await;
    let mut ranges: Vec<(u64, u64)> = rig
        .published
        .lock()
        .values()
        .filter_map(|c| c.acked)
        .collect();
    ranges.sort_unstable();
    let mut next = 1;
    for &(first, last) in &ranges {
        assert_eq!(first, next, "the acknowledged ranges tile the log");
        next = last + 1;
    }
    let mut conflicts = 0.0;
    for producer in &rig.producers {
        conflicts += metric(
            producer,
            "pushpull_producer_jetstream_publish_conflicts_total",
        )
        .await;
    }
    eprintln!(
        "{} calls, {} events; {conflicts} messages renumbered after the other producer's",
        ranges.len(),
        next - 1
    );
    assert!(
        conflicts > 0.0,
        "two producers publishing at once collided at least once"
    );
}

// ------------------------------------------------------------------------------- the rig

/// A NATS cluster of three, a stream of three replicas on it, producers A and B, a push and a
/// poll consumer reading both, and what was published.
struct Rig {
    cluster: NatsCluster,
    stream: String,
    /// A and B, in the order the consumers list them.
    producers: Vec<ServiceProcess>,
    log_id: String,
    consumers: Vec<Consumer>,
    published: Published,
    publishers: Vec<JoinHandle<()>>,
    rng: StdRng,
}

impl Rig {
    async fn start(stream: &str) -> Self {
        let rng = seeded_rng();
        let cluster = NatsCluster::start(3).await;
        let flags = jetstream_flags(&cluster.urls(), stream, "3");
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        // At once, on a stream neither has seen: both create it and publish the genesis.
        let (a, b) = tokio::join!(
            ServiceProcess::producer(PRODUCER, &flags),
            ServiceProcess::producer(PRODUCER, &flags)
        );
        let log_id = a.log_id.clone().expect("a log_id in the serving line");
        assert_eq!(b.log_id.as_deref(), Some(&*log_id), "one stream, one log");
        let producers = vec![a, b];
        let list = format!("{},{}", url(&producers[0]), url(&producers[1]));
        let consumers = vec![
            Consumer::start("push", &list).await,
            Consumer::start("poll", &list).await,
        ];
        Self {
            cluster,
            stream: stream.to_owned(),
            producers,
            log_id,
            consumers,
            published: Published::default(),
            publishers: Vec::new(),
            rng,
        }
    }

    /// Two publishers, one starting on A and one on B, each moving to the other producer when
    /// a call fails.
    fn publish_through_both(&mut self, failure: fn(&Status)) {
        for id in 0..2u32 {
            let mut addrs: Vec<SocketAddr> = self.producers.iter().map(|p| p.addr).collect();
            addrs.rotate_left(id as usize);
            let publisher = Publisher {
                id,
                addrs,
                seed: self.rng.random(),
                max_events: 20,
                max_random: 200,
                pace: PACE,
                failure,
            };
            self.publishers.push(self.published.spawn(publisher));
        }
    }

    /// Waits until both consumers have read past `sequence`.
    async fn consumers_past(&self, sequence: u64) {
        for consumer in &self.consumers {
            consumer
                .wait_for(&format!("sequence {sequence}"), |s| {
                    s.last_sequence >= sequence
                })
                .await;
        }
    }

    async fn consumer_stats(&self) -> Vec<pb::GetStatsResponse> {
        let mut stats = Vec::new();
        for consumer in &self.consumers {
            stats.push(consumer.stats().await);
        }
        stats
    }

    /// Stops the publishers, makes one last call through each producer, and checks the log
    /// and the consumers (see the module's docs). Returns the consumers' last stats.
    async fn finish(&mut self, when: &str) -> Vec<pb::GetStatsResponse> {
        let publishers = std::mem::take(&mut self.publishers);
        if let Err(err) = self.published.stop(publishers).await {
            panic!("{when}: {err}\n{}", self.logs().await);
        }
        for i in 0..self.producers.len() {
            self.last_call(i).await;
        }
        let head = self
            .published
            .lock()
            .values()
            .filter_map(|c| c.acked.map(|(_, last)| last))
            .max()
            .expect("calls were acknowledged");

        let mut logs = Vec::new();
        for producer in &self.producers {
            let client = client(producer.addr).await;
            wait_head(&client, head).await;
            logs.push(read_log(&client, &self.log_id).await);
        }
        assert_eq!(
            logs[0].len() as u64,
            head,
            "{when}: A's log ends at the head"
        );
        assert!(
            logs[0] == logs[1],
            "{when}: A and B serve different logs ({} and {} events)",
            logs[0].len(),
            logs[1].len()
        );
        self.published.check(&logs[0], when);

        let mut stats = Vec::new();
        for consumer in &self.consumers {
            stats.push(consumer.assert_read_exactly(head, &self.log_id, when).await);
        }
        let calls = self.published.lock().len();
        eprintln!(
            "{when}: {head} events from {} acknowledged calls of {calls}; consumers: {}",
            self.published.acked_calls(),
            stats
                .iter()
                .map(|s| format!(
                    "{:?} reconnects {} failovers {}",
                    s.mode(),
                    s.reconnects,
                    s.failovers
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        stats
    }

    /// A last call through producer `i`, after the fault: tried again (with new payloads)
    /// until one is acknowledged, since a producer may still be reconnecting to NATS.
    async fn last_call(&mut self, i: usize) {
        let client = client(self.producers[i].addr).await;
        let deadline = Instant::now() + PHASE;
        for attempt in 0..1000u32 {
            let id = (200 + i as u32, attempt);
            let batch = random_batch(&mut self.rng, &format!("{}/{}", id.0, id.1), 10, 100);
            self.published.register(id, &batch);
            match publish_batch(&client, &batch).await {
                Ok(response) => {
                    let range = (response.first_sequence, response.last_sequence);
                    self.published.acked(id, range);
                    return;
                }
                Err(status) => {
                    fault_failure(&status);
                    if Instant::now() >= deadline {
                        panic!(
                            "the last call through producer {i} still failed after {PHASE:?}: \
                             {status:?}\n{}",
                            self.logs().await
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("the last call through producer {i} failed 1000 times");
    }

    /// The producers' last log lines and what each NATS node says of the stream, for a
    /// failure message.
    async fn logs(&mut self) -> String {
        let mut all = String::new();
        for (i, producer) in self.producers.iter_mut().enumerate() {
            let text = producer.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let last = &lines[lines.len().saturating_sub(30)..];
            all += &format!("--- producer {i} ---\n{}\n", last.join("\n"));
        }
        for node in self.cluster.nodes() {
            let view = match node.monitor("/jsz?streams=true").await {
                Some(jsz) => testkit::nats::stream_detail_in(&jsz, &self.stream)
                    .map_or("no such stream".into(), |d| {
                        format!("state {} cluster {}", d["state"], d["cluster"])
                    }),
                None => "no answer".into(),
            };
            all += &format!("--- {} ---\n{view}\n", node.name());
        }
        all
    }
}

/// A producer's flags for `stream` on `urls`.
fn jetstream_flags(urls: &str, stream: &str, replicas: &str) -> Vec<String> {
    [
        "--store",
        "jetstream",
        "--nats-urls",
        urls,
        "--nats-stream",
        stream,
        "--nats-replicas",
        replicas,
    ]
    .map(str::to_owned)
    .into()
}

fn url(producer: &ServiceProcess) -> String {
    format!("http://{}", producer.addr)
}

/// A failure a fault explains: a refused or broken connection (no ErrorInfo), the producer
/// shutting down, or its store out of reach (UNAVAILABLE, STORAGE_UNAVAILABLE). Anything else
/// fails the test.
fn fault_failure(status: &Status) {
    if let Some(info) = ErrorInfo::from_status(status) {
        assert!(
            matches!(
                info.reason,
                ErrorReason::ShuttingDown | ErrorReason::StorageUnavailable
            ),
            "{status:?}"
        );
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
}

/// A Publish refused because NATS is down: UNAVAILABLE, STORAGE_UNAVAILABLE, and a message
/// that says so, naming NATS or the stream.
fn assert_store_down(status: &Status, stream: &str) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let info = ErrorInfo::from_status(status).expect("an ErrorInfo");
    assert_eq!(info.reason, ErrorReason::StorageUnavailable, "{status:?}");
    let message = status.message();
    assert!(
        message.contains("NATS") || message.contains(&format!("stream {stream}")),
        "the message names what is down: {message:?}"
    );
}

/// The longest time between two acknowledgements (of `times`, in order) from the last one
/// before `fault` on; `times` must reach past the fault.
fn longest_pause(times: &[Instant], fault: Instant) -> Duration {
    let from = times.partition_point(|&t| t <= fault).saturating_sub(1);
    times[from..]
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default()
}

/// From the last of `times` (acknowledgements, in order) before `fault` to the first after it.
fn first_pause(times: &[Instant], fault: Instant) -> Option<Duration> {
    let after = times.partition_point(|&t| t <= fault);
    Some(*times.get(after)? - *times.get(after.checked_sub(1)?)?)
}

/// Waits until the producer's head has reached `head` (its follower has read that far).
async fn wait_head(client: &ProducerClient, head: u64) {
    let deadline = Instant::now() + PHASE;
    loop {
        let response = client
            .clone()
            .poll(poll_request(None))
            .await
            .expect("poll")
            .into_inner();
        if response.head_sequence >= head {
            assert_eq!(
                response.head_sequence, head,
                "nothing past the last acknowledged"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the producer's head is {}, not {head}, after {PHASE:?}",
            response.head_sequence
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The events after `after` up to `head`, by Poll.
async fn read_from(client: &ProducerClient, mut after: u64, head: u64) -> Vec<pb::Event> {
    let mut events = Vec::new();
    for _ in 0..10_000 {
        if after >= head {
            return events;
        }
        let response = client
            .clone()
            .poll(poll_request(Some(after)))
            .await
            .unwrap_or_else(|status| panic!("poll after {after}: {status:?}"))
            .into_inner();
        after = response.next_after_sequence;
        events.extend(response.events);
    }
    panic!("not at {head} after 10,000 polls");
}

/// Waits until the producer at `addr` reports `want` through `grpc.health.v1.Health`, for
/// the server as a whole and for the producer's service.
async fn wait_health(addr: SocketAddr, want: ServingStatus) {
    let mut health = HealthClient::new(channel(addr).await);
    let deadline = Instant::now() + PHASE;
    loop {
        let mut now = Vec::new();
        for name in ["", PRODUCER_SERVICE] {
            let status = health
                .check(HealthCheckRequest {
                    service: name.into(),
                })
                .await
                .unwrap_or_else(|status| panic!("health check of {name:?}: {status:?}"))
                .into_inner()
                .status;
            now.push(status);
        }
        if now.iter().all(|&s| s == want as i32) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} health is {now:?}, not {want:?}, after {PHASE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample `name` on the producer's `/metrics`.
async fn metric(producer: &ServiceProcess, name: &str) -> f64 {
    let http = producer.http.expect("the producer's HTTP side");
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .and_then(|r| r.error_for_status())
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

// ------------------------------------------------------------------------------- consumers

/// A consumer binary reading from the oldest event, failing over round the producers listed.
struct Consumer {
    mode: &'static str,
    /// Held for as long as the test runs: dropping it kills the consumer.
    _process: ServiceProcess,
    stats: ConsumerServiceClient<tonic::transport::Channel>,
}

impl Consumer {
    async fn start(mode: &'static str, producers: &str) -> Self {
        let program = testkit::process::workspace_binary("pushpull-consumer", "consumer").await;
        let program = program.to_str().expect("a UTF-8 path");
        let process = ServiceProcess::consumer(
            program,
            &[
                "--producer",
                producers,
                "--mode",
                mode,
                "--from",
                "earliest",
                "--poll-interval",
                "50ms",
                "--backoff-initial",
                "10ms",
                "--backoff-max",
                "200ms",
                "--summary-interval",
                "0s",
            ],
        )
        .await;
        let stats = ConsumerServiceClient::new(channel(process.addr).await);
        Self {
            mode,
            _process: process,
            stats,
        }
    }

    async fn stats(&self) -> pb::GetStatsResponse {
        self.stats
            .clone()
            .get_stats(pb::GetStatsRequest {})
            .await
            .expect("GetStats")
            .into_inner()
    }

    /// Polls GetStats until `done` holds; panics with the last stats after [`PHASE`].
    async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&pb::GetStatsResponse) -> bool,
    ) -> pb::GetStatsResponse {
        let deadline = Instant::now() + PHASE;
        loop {
            let stats = self.stats().await;
            if done(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "the {} consumer: no {what} after {PHASE:?}: {stats:#?}",
                self.mode
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the consumer has read up to `head`, then checks it read every event of the
    /// log once (it started from the oldest, before the first event), from one log.
    async fn assert_read_exactly(
        &self,
        head: u64,
        log_id: &str,
        when: &str,
    ) -> pb::GetStatsResponse {
        let stats = self
            .wait_for(&format!("sequence {head}"), |s| s.last_sequence >= head)
            .await;
        let mode = self.mode;
        assert_eq!(stats.last_sequence, head, "{when}, {mode}: {stats:#?}");
        assert_eq!(
            stats.events_received, head,
            "{when}, {mode}: every event once: {stats:#?}"
        );
        assert_eq!(stats.events_missed, 0, "{when}, {mode}: {stats:#?}");
        assert_eq!(stats.duplicates_dropped, 0, "{when}, {mode}: {stats:#?}");
        assert_eq!(stats.log_changes, 0, "{when}, {mode}: {stats:#?}");
        assert_eq!(stats.log_id, log_id, "{when}, {mode}");
        stats
    }
}
