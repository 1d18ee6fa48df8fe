//! The file store through the real binary: `kill -9` at random moments, SIGTERM under load, the
//! data directory's lock, a full disk. Every test reads the log back afterwards and compares it,
//! byte for byte, with what the producer acknowledged; "it restarted" is never the assertion.
//!
//! Clients reach the producer through a [`Proxy`], as through a load balancer: a restarted
//! producer listens on a new port, the proxy is pointed at it, and the clients reconnect to the
//! address they always had.
//!
//! What the publishers sent and the check of the log against it are in `published.rs`. Random
//! choices (batch sizes, payloads, when to kill) come from one seed, printed at the start;
//! `PUSHPULL_TEST_SEED=N` replays a run.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use clap::Parser as _;
use pushpull::{
    errors::{ErrorInfo, ErrorReason},
    pb::{self, consumer_service_client::ConsumerServiceClient},
};
use rand::Rng as _;
use testkit::{Proxy, Served, ServiceProcess, bind};
use tokio::{task::JoinHandle, time::Instant};
use tonic::{Code, Status};

use crate::{helpers::*, published::*};

const PRODUCER: &str = env!("CARGO_BIN_EXE_producer");

/// How many times the crash test kills the producer.
const KILLS: usize = 6;

// ------------------------------------------------------------------------------- the tests

/// `kill -9` at random moments while publishers publish and consumers read: after every
/// restart, every acknowledged event is at its sequence byte for byte, the sequences are
/// gapless from 1, nothing a reader was shown has gone, batches are whole, and `log_id` is the
/// same; at the end, a push and a poll consumer (with checkpoints) read exactly the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_event_with_fsync_always() {
    crash_test("always").await;
}

/// `--fsync never` promises the same across a process crash: the events are written to the OS
/// before the Publish is answered, and the OS outlives the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_event_with_fsync_never() {
    crash_test("never").await;
}

async fn crash_test(fsync: &str) {
    let mut rng = seeded_rng();
    // Small segments, so kills land around segment rolls too.
    let flags = [
        "--store",
        "file",
        "--fsync",
        fsync,
        "--segment-bytes",
        "65536",
    ];
    let mut producer = ServiceProcess::producer(PRODUCER, &flags).await;
    let log_id = producer
        .log_id
        .clone()
        .expect("the serving line has a log_id");
    let proxy = Proxy::start(producer.addr).await;
    let reader = client(proxy.addr).await;
    let published = Published::default();
    let publishers: Vec<_> = (0..3)
        .map(|id| published.spawn(publisher(proxy.addr, id, rng.random())))
        .collect();
    let seen = Subscriber::spawn(proxy.addr);
    let checkpoints = tempfile::tempdir().expect("a checkpoint directory");
    let consumers = [
        TestConsumer::spawn(&proxy, "push", checkpoints.path()).await,
        TestConsumer::spawn(&proxy, "poll", checkpoints.path()).await,
    ];

    for kill in 1..=KILLS {
        let acked = published.acked_calls();
        published.wait_for_acks(acked + 5).await;
        let delay = Duration::from_millis(rng.random_range(50..=400));
        tokio::time::sleep(delay).await;

        producer.sigkill();
        let status = producer.restart().await;
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "kill {kill}: {status:?}"
        );
        assert_eq!(producer.log_id.as_deref(), Some(&*log_id), "kill {kill}");
        proxy.retarget(producer.addr);
        let opened = producer
            .wait_for_log("the store's recovery", |l| {
                l["message"] == "file store opened"
            })
            .await;
        eprintln!("kill {kill}: {opened}");
        for warning in producer
            .log_text()
            .lines()
            .filter(|l| l.contains("\"WARN\""))
        {
            eprintln!("kill {kill}: {warning}");
        }

        let paused = published.pause().await;
        let log = read_log(&reader, &log_id).await;
        published.check(&log, &format!("after kill {kill} ({delay:?})"));
        seen.check_within(&log, &format!("after kill {kill}"));
        drop(paused);
        eprintln!(
            "kill {kill} after {delay:?}: {} events, {} calls acknowledged",
            log.len(),
            published.acked_calls()
        );
    }

    if let Err(err) = published.stop(publishers).await {
        panic!("{err}\nthe producer's log:\n{}", producer.log_text());
    }
    let log = read_log(&reader, &log_id).await;
    published.check(&log, "at the end");
    let head = log.len() as u64;
    assert!(head > 0);
    for consumer in consumers {
        consumer.assert_read_exactly(head, &log_id).await;
    }
    seen.wait_until(head).await;
    seen.assert_read_exactly(&log, &log_id);
    producer.sigterm();
    let status = producer
        .wait_exit(PROMPTLY)
        .await
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// SIGTERM while publishers publish and subscribers are attached: the producer stops cleanly,
/// starts again on the same directory with the same `log_id`, and every subscriber resumes from
/// its last sequence: each ends with every event of the log once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_resume_across_a_sigterm_restart_with_nothing_lost_or_repeated() {
    let mut rng = seeded_rng();
    let mut producer = ServiceProcess::producer(PRODUCER, &["--store", "file"]).await;
    let log_id = producer
        .log_id
        .clone()
        .expect("the serving line has a log_id");
    let proxy = Proxy::start(producer.addr).await;
    let published = Published::default();
    let publishers: Vec<_> = (0..2)
        .map(|id| published.spawn(publisher(proxy.addr, id, rng.random())))
        .collect();
    let subscribers: Vec<_> = (0..3).map(|_| Subscriber::spawn(proxy.addr)).collect();
    published.wait_for_acks(20).await;
    for subscriber in &subscribers {
        subscriber.wait_until(1).await;
    }

    producer.sigterm();
    producer.wait_exit(PROMPTLY).await;
    let stopped_log = producer.log_text();
    let status = producer.restart().await;
    assert!(
        status.success(),
        "a SIGTERM exits 0: {status:?}; its log:\n{stopped_log}"
    );
    assert_eq!(producer.log_id.as_deref(), Some(&*log_id));
    proxy.retarget(producer.addr);
    let acked = published.acked_calls();
    published.wait_for_acks(acked + 20).await;

    if let Err(err) = published.stop(publishers).await {
        panic!(
            "{err}\nthe stopped producer's log:\n{stopped_log}\nthe restarted one's:\n{}",
            producer.log_text()
        );
    }
    let log = read_log(&client(proxy.addr).await, &log_id).await;
    published.check(&log, "after the restart");
    for subscriber in &subscribers {
        subscriber.wait_until(log.len() as u64).await;
        subscriber.assert_read_exactly(&log, &log_id);
        let state = subscriber.state();
        assert!(
            state.ends.contains(&Code::Unavailable),
            "the stream ended with UNAVAILABLE at the restart: {:?}",
            state.ends
        );
    }
}

/// A second producer on the same directory refuses to start, naming it, and the first keeps
/// serving. The lock goes with the process: after a `kill -9`, and after a clean stop, the
/// directory opens again.
#[tokio::test]
async fn a_second_producer_on_the_same_data_dir_refuses_to_start() {
    let mut first = ServiceProcess::producer(PRODUCER, &["--store", "file"]).await;
    let dir = first.data_dir().expect("a data dir").to_owned();
    let dir_flag = dir.display().to_string();
    let client_first = client(first.addr).await;
    publish_one(&client_first, "before").await;

    let (status, log) =
        ServiceProcess::producer_refused(PRODUCER, &["--store", "file", "--data-dir", &dir_flag])
            .await;

    assert!(!status.success(), "{status:?}; its log:\n{log}");
    assert!(
        log.contains(&dir_flag),
        "the refusal names the directory {dir_flag}:\n{log}"
    );
    testkit::assert_serving(first.addr, "pushpull.v1.ProducerService").await;
    let (first_sequence, _) = publish_one(&client_first, "after the refusal").await;
    assert_eq!(first_sequence, 2);

    first.sigkill();
    first.restart().await;
    let log_id = first.log_id.clone();
    let events = read_log(&client(first.addr).await, log_id.as_deref().unwrap()).await;
    assert_eq!(payloads(&events), ["before", "after the refusal"]);

    first.sigterm();
    assert!(first.wait_exit(PROMPTLY).await.expect("exits").success());
    let mut again =
        ServiceProcess::producer(PRODUCER, &["--store", "file", "--data-dir", &dir_flag]).await;
    assert_eq!(again.log_id, log_id, "the same log, reopened");
    again.sigterm();
    let status = again.wait_exit(PROMPTLY).await.expect("exits");
    assert!(
        status.success(),
        "{status:?}; its log:\n{}",
        again.log_text()
    );
}

/// A full disk: Publish fails with RESOURCE_EXHAUSTED (STORAGE_FULL) naming the directory, and
/// nothing of the refused batch is stored; reads keep working; once space is freed, Publish
/// works again with no gap in the sequences; and after a restart the log is whole.
#[tokio::test]
async fn a_full_disk_refuses_publish_then_recovers_once_space_is_freed() {
    let Some(disk) = Tmpfs::mount("2m") else {
        return;
    };
    // Room taken on the small disk, freed later.
    let filler = disk.path().join("filler");
    std::fs::write(&filler, vec![0xAA; 512 * 1024]).expect("write the filler");
    let dir = disk.path().join("data");
    let dir_flag = dir.display().to_string();
    let flags = [
        "--store",
        "file",
        "--data-dir",
        &dir_flag,
        "--segment-bytes",
        "262144",
    ];
    let mut producer = ServiceProcess::producer(PRODUCER, &flags).await;
    let log_id = producer.log_id.clone().expect("a log_id");
    let client = client(producer.addr).await;
    let mut rng = seeded_rng();
    let mut acked: Vec<pb::Event> = Vec::new();

    let mut refusal = None;
    for call in 0..200 {
        let batch = random_batch(&mut rng, &format!("fill-{call}"), 16, 4000);
        match publish_batch(&client, &batch).await {
            Ok(response) => {
                assert_eq!(response.first_sequence, acked.len() as u64 + 1);
                acked.extend(as_events(response.first_sequence, &batch));
            }
            Err(status) => {
                refusal = Some(status);
                break;
            }
        }
    }

    let status = refusal.expect("the 2 MiB disk fills within 200 calls of 64 KiB");
    assert!(!acked.is_empty(), "some calls fit before the disk filled");
    assert_storage_full(&status, &dir_flag);
    eprintln!("full after {} events: {}", acked.len(), status.message());
    let log = read_log(&client, &log_id).await;
    assert_same_events(&log, &acked, "while the disk is full");
    testkit::assert_serving(producer.addr, "pushpull.v1.ProducerService").await;

    std::fs::remove_file(&filler).expect("remove the filler");
    let batch = random_batch(&mut rng, "after-freeing", 4, 1000);
    let deadline = Instant::now() + PROMPTLY;
    let response = loop {
        match publish_batch(&client, &batch).await {
            Ok(response) => break response,
            Err(status) if Instant::now() < deadline => {
                assert_storage_full(&status, &dir_flag);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("still refused {PROMPTLY:?} after space was freed: {status:?}"),
        }
    };
    assert_eq!(
        response.first_sequence,
        acked.len() as u64 + 1,
        "no gap after the refusal"
    );
    acked.extend(as_events(response.first_sequence, &batch));
    assert_same_events(&read_log(&client, &log_id).await, &acked, "after freeing");

    producer.sigterm();
    producer.restart().await;
    assert_eq!(producer.log_id.as_deref(), Some(&*log_id));
    let client = crate::helpers::client(producer.addr).await;
    assert_same_events(&read_log(&client, &log_id).await, &acked, "after a restart");
    producer.sigterm();
    assert!(producer.wait_exit(PROMPTLY).await.expect("exits").success());
}

// ------------------------------------------------------------------------------- publishers

/// A publisher of calls of 1–50 events through `addr` (the proxy), whose calls may fail only
/// as a killed or restarted producer makes them fail.
fn publisher(addr: SocketAddr, id: u32, seed: u64) -> Publisher {
    Publisher {
        id,
        addrs: vec![addr],
        seed,
        max_events: 50,
        max_random: 200,
        pace: Duration::ZERO,
        failure: assert_lost_connection,
    }
}

async fn publish_one(client: &ProducerClient, payload: &str) -> (u64, u64) {
    let response = publish_batch(client, &[new_event("t", payload.as_bytes())])
        .await
        .expect("publish");
    (response.first_sequence, response.last_sequence)
}

/// The events `batch` became at `first`.. (what reading them back must give).
fn as_events(first: u64, batch: &[pb::NewEvent]) -> Vec<pb::Event> {
    batch
        .iter()
        .zip(first..)
        .map(|(event, sequence)| pb::Event {
            sequence,
            topic: event.topic.clone(),
            payload: event.payload.clone(),
            produced_at: None,
        })
        .collect()
}

fn assert_storage_full(status: &Status, dir: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let info = ErrorInfo::from_status(status).expect("an ErrorInfo");
    assert_eq!(info.reason, ErrorReason::StorageFull, "{status:?}");
    assert!(
        status.message().contains(dir),
        "the message names the data dir {dir}: {:?}",
        status.message()
    );
}

fn payloads(events: &[pb::Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect()
}

/// `log` is exactly `expected`: the same sequences, topics and payloads.
fn assert_same_events(log: &[pb::Event], expected: &[pb::Event], when: &str) {
    let key = |e: &pb::Event| (e.sequence, e.topic.clone(), e.payload.clone());
    assert_eq!(log.len(), expected.len(), "{when}: how many events");
    for (got, want) in log.iter().zip(expected) {
        assert_eq!(key(got), key(want), "{when}: seq {}", want.sequence);
    }
}

// ------------------------------------------------------------------------------- subscribers

/// A gRPC Subscribe reader that records every event it is shown, and resubscribes from its
/// last sequence after every end of its stream.
struct Subscriber {
    state: Arc<Mutex<SubscriberState>>,
    task: JoinHandle<()>,
}

#[derive(Default, Clone)]
struct SubscriberState {
    events: Vec<pb::Event>,
    /// Every log_id a response carried, with how many responses carried it.
    log_ids: BTreeMap<String, usize>,
    /// How each stream ended (a broken connection shows as its code too).
    ends: Vec<Code>,
}

impl Subscriber {
    fn spawn(addr: SocketAddr) -> Self {
        let state = Arc::new(Mutex::new(SubscriberState::default()));
        let recorder = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let client = client(addr).await;
            let deadline = Instant::now() + Duration::from_secs(300);
            for _ in 0..100_000 {
                assert!(Instant::now() < deadline, "a subscriber ran for 300 s");
                let last = lock(&recorder).events.last().map_or(0, |e| e.sequence);
                let request = pb::SubscribeRequest {
                    after_sequence: Some(last),
                    topics: Vec::new(),
                };
                let mut stream = match client.clone().subscribe(request).await {
                    Ok(response) => response.into_inner(),
                    Err(status) => {
                        assert_lost_connection(&status);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let end = loop {
                    match stream.message().await {
                        Ok(Some(response)) => {
                            let mut state = lock(&recorder);
                            *state.log_ids.entry(response.log_id).or_default() += 1;
                            state.events.extend(response.events);
                        }
                        Ok(None) => break Code::Ok,
                        Err(status) => {
                            assert_lost_connection(&status);
                            break status.code();
                        }
                    }
                };
                lock(&recorder).ends.push(end);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Self { state, task }
    }

    fn state(&self) -> SubscriberState {
        assert!(
            !self.task.is_finished(),
            "the subscriber task ended (it panics on failure)"
        );
        lock(&self.state).clone()
    }

    /// Waits until the subscriber has been shown sequence `head`.
    async fn wait_until(&self, head: u64) {
        let deadline = Instant::now() + PHASE;
        loop {
            let last = self.state().events.last().map_or(0, |e| e.sequence);
            if last >= head {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the subscriber is at {last}, not {head}, after {PHASE:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Everything the subscriber was shown is in `log`, byte for byte: a reader never sees an
    /// event a crash takes back.
    fn check_within(&self, log: &[pb::Event], when: &str) {
        for event in self.state().events {
            let stored = log.get(event.sequence as usize - 1);
            assert_eq!(
                stored.map(|e| (&e.topic, &e.payload)),
                Some((&event.topic, &event.payload)),
                "{when}: a subscriber was shown seq {}, which the log no longer has as shown",
                event.sequence
            );
        }
    }

    /// The subscriber was shown exactly `log`: every event once, in order, all from `log_id`.
    fn assert_read_exactly(&self, log: &[pb::Event], log_id: &str) {
        let state = self.state();
        let seen: Vec<u64> = state.events.iter().map(|e| e.sequence).collect();
        let expected: Vec<u64> = (1..=log.len() as u64).collect();
        assert!(
            seen == expected,
            "the subscriber saw {} events, not 1..={} once each",
            seen.len(),
            log.len()
        );
        assert_same_events(&state.events, log, "the subscriber's events");
        assert_eq!(
            state.log_ids.keys().collect::<Vec<_>>(),
            [log_id],
            "every response from the one log"
        );
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<SubscriberState>) -> std::sync::MutexGuard<'_, SubscriberState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

// ------------------------------------------------------------------------------- consumers

/// The consumer service, run in this process (the same `consumer::run_with` its binary runs),
/// reading through the proxy with a checkpoint file, from the oldest event.
struct TestConsumer {
    mode: &'static str,
    checkpoint: PathBuf,
    stats: ConsumerServiceClient<tonic::transport::Channel>,
    server: Served<consumer::RunError>,
}

impl TestConsumer {
    async fn spawn(proxy: &Proxy, mode: &'static str, dir: &Path) -> Self {
        let checkpoint = dir.join(format!("{mode}.cursor"));
        let url = proxy.url();
        let config = consumer::Config::parse_from([
            "consumer",
            "--producer",
            &url,
            "--mode",
            mode,
            "--from",
            "earliest",
            "--checkpoint",
            &checkpoint.display().to_string(),
            "--checkpoint-interval",
            "100ms",
            "--poll-interval",
            "50ms",
            "--backoff-initial",
            "10ms",
            "--backoff-max",
            "100ms",
            "--summary-interval",
            "0s",
        ]);
        let (grpc, addr) = bind().await;
        let listeners = consumer::Listeners {
            grpc,
            metrics: None,
        };
        let server = Served::spawn(|shutdown| consumer::run_with(config, listeners, shutdown));
        Self {
            mode,
            checkpoint,
            stats: ConsumerServiceClient::new(channel(addr).await),
            server,
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

    /// Waits for the consumer to reach `head`, then checks it read every event of the log
    /// once (it started from the oldest, before the first event), stops it, and checks its
    /// final checkpoint.
    async fn assert_read_exactly(self, head: u64, log_id: &str) {
        let deadline = Instant::now() + PHASE;
        let stats = loop {
            let stats = self.stats().await;
            if stats.last_sequence >= head {
                break stats;
            }
            assert!(
                Instant::now() < deadline,
                "{} consumer at {} of {head} after {PHASE:?}: {stats:#?}",
                self.mode,
                stats.last_sequence
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mode = self.mode;
        assert_eq!(stats.last_sequence, head, "{mode}: {stats:#?}");
        assert_eq!(
            stats.events_received, head,
            "{mode}: every event once: {stats:#?}"
        );
        assert_eq!(stats.events_missed, 0, "{mode}: {stats:#?}");
        assert_eq!(stats.duplicates_dropped, 0, "{mode}: {stats:#?}");
        assert_eq!(
            stats.log_changes, 0,
            "{mode}: one log throughout: {stats:#?}"
        );
        assert_eq!(stats.log_id, log_id, "{mode}");
        // A kill always cuts the push consumer's stream. A poll consumer only notices a kill
        // that lands while a poll is out: one that falls between two polls (a restart can
        // take less than the poll interval) is never seen, so it need not have reconnected.
        if mode == "push" {
            assert!(
                stats.reconnects >= 1,
                "{mode} reconnected after the kills: {stats:#?}"
            );
        }

        let checkpoint = self.checkpoint.clone();
        self.server
            .stop()
            .await
            .expect("the consumer stops cleanly");
        let saved = std::fs::read_to_string(&checkpoint).expect("a checkpoint");
        assert_eq!(
            saved,
            format!("log_id={log_id}\nafter_sequence={head}\n"),
            "{mode}: the checkpoint"
        );
    }
}

// ------------------------------------------------------------------------------- a small disk

/// A tmpfs mounted on a temporary directory, unmounted when dropped (also when the test fails).
/// Needs root (CI is); elsewhere [`Tmpfs::mount`] says why it cannot and the test is skipped,
/// except under CI (`CI=true`), where that is a failure.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("a mount point");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(Self { dir }),
            other => {
                let why = match other {
                    Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                    Err(err) => err.to_string(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI must run the disk-full test, but mount -t tmpfs failed: {why}"
                );
                eprintln!("SKIPPED: the disk-full test needs to mount a tmpfs (root): {why}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let path = self.dir.path();
        let unmounted = std::process::Command::new("umount").arg(path).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            // Still busy (a producer not yet reaped): detach it now, freed once unused.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(path)
                .status();
        }
    }
}
