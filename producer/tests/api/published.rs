//! What the fault tests' publishers sent, and the check that the log holds exactly that: every
//! Publish call a test made, acknowledged or not, with payloads unique to the call, so any event
//! in the log can be traced to its call. The crash tests of the file store (`durable.rs`) and of
//! the JetStream store (`jetstream.rs`) share it: one rule for "no acknowledged event lost,
//! nothing twice, no gap".
//!
//! Random choices (batch sizes, payloads) come from one seed, printed at the start;
//! `PUSHPULL_TEST_SEED=N` replays a run.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use pushpull::{
    errors::{ErrorInfo, ErrorReason},
    pb,
};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use tokio::{sync::RwLock, task::JoinHandle, time::Instant};
use tonic::Status;

use crate::helpers::*;

/// Bound for a whole phase that is many steps of "should take milliseconds" (a catch-up, a
/// round of publishing): a hit means a hang.
pub const PHASE: Duration = Duration::from_secs(30);

pub type ProducerClient =
    pushpull::pb::producer_service_client::ProducerServiceClient<tonic::transport::Channel>;

/// Every Publish call the test made, acknowledged or not; shared by the publisher tasks.
#[derive(Clone, Default)]
pub struct Published {
    calls: Arc<Mutex<HashMap<CallId, Call>>>,
    /// Publishers hold it (read) for each call; a check of the log takes it (write), so the
    /// log holds still while it is read, with no call in flight.
    gate: Arc<RwLock<()>>,
    stop: Arc<AtomicBool>,
}

/// (publisher, call number): written into every payload of the call.
pub type CallId = (u32, u32);

pub struct Call {
    pub events: Vec<pb::NewEvent>,
    /// The (first, last) sequence the producer answered; `None` while in flight, or when the
    /// call failed (then the events may or may not be in the log, but all or none).
    pub acked: Option<(u64, u64)>,
    /// When the answer came.
    pub acked_at: Option<Instant>,
}

/// What a publisher sends, and to whom.
pub struct Publisher {
    /// Written into its payloads: unique among the test's publishers.
    pub id: u32,
    /// The producers it publishes through: the first until a call fails, then the next (round
    /// the list), as a client of several producers of one log would.
    pub addrs: Vec<SocketAddr>,
    pub seed: u64,
    /// Events per call: 1 to this many.
    pub max_events: usize,
    /// Random bytes after each payload's unique prefix: 0 to this many.
    pub max_random: usize,
    /// A rest between calls (zero: none), to keep the number of calls modest.
    pub pace: Duration,
    /// Called with each failed call's status: panics if the failure is not one the test's fault
    /// explains (such as [`assert_lost_connection`]).
    pub failure: fn(&Status),
}

impl Published {
    /// A publisher: calls with unique payloads, one after the other, until [`Self::stop`]. A
    /// call that fails on the way (a producer was killed, its store was out) is not retried:
    /// the next call has new payloads, so an event is never published twice.
    pub fn spawn(&self, publisher: Publisher) -> JoinHandle<()> {
        let published = self.clone();
        tokio::spawn(async move {
            let Publisher { id, addrs, .. } = &publisher;
            let mut rng = StdRng::seed_from_u64(publisher.seed);
            let mut clients = Vec::new();
            for &addr in addrs {
                clients.push(client(addr).await);
            }
            let mut via = 0;
            let deadline = Instant::now() + Duration::from_secs(300);
            for call in 0..1_000_000u32 {
                if published.stop.load(Ordering::Relaxed) {
                    return;
                }
                assert!(Instant::now() < deadline, "publisher {id} never stopped");
                let size = rng.random_range(1..=publisher.max_events);
                let batch = random_batch(
                    &mut rng,
                    &format!("{id}/{call}"),
                    size,
                    publisher.max_random,
                );
                let open = published.gate.read().await;
                published.register((*id, call), &batch);
                // PHASE, not PROMPTLY: an fdatasync behind other processes' heavy writes on a
                // shared disk has been seen to take seconds, and a JetStream Publish waits out
                // a leader election.
                match tokio::time::timeout(PHASE, publish_batch(&clients[via], &batch)).await {
                    Ok(Ok(response)) => {
                        let range = (response.first_sequence, response.last_sequence);
                        published.acked((*id, call), range);
                        drop(open);
                        if !publisher.pace.is_zero() {
                            tokio::time::sleep(publisher.pace).await;
                        }
                    }
                    Ok(Err(status)) => {
                        (publisher.failure)(&status);
                        drop(open);
                        via = (via + 1) % clients.len();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(_) => panic!(
                        "publisher {id}'s call {call} ({size} events) to {} hung for {PHASE:?}",
                        addrs[via]
                    ),
                }
            }
        })
    }

    /// Records a call the test makes itself (not through a publisher): `id` must be unique,
    /// and `events` from [`random_batch`] with `id` in their payloads.
    pub fn register(&self, id: CallId, events: &[pb::NewEvent]) {
        let call = Call {
            events: events.to_vec(),
            acked: None,
            acked_at: None,
        };
        self.lock().insert(id, call);
    }

    /// Records the answer to call `id`.
    pub fn acked(&self, id: CallId, range: (u64, u64)) {
        let mut calls = self.lock();
        let call = calls.get_mut(&id).expect("registered");
        call.acked = Some(range);
        call.acked_at = Some(Instant::now());
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CallId, Call>> {
        // A check that failed holding it poisons it; the other tasks need not fail for that.
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn acked_calls(&self) -> usize {
        self.lock().values().filter(|c| c.acked.is_some()).count()
    }

    /// Calls of `publisher` acknowledged after `since`.
    pub fn acked_since(&self, since: Instant, publisher: u32) -> usize {
        self.lock()
            .iter()
            .filter(|(id, c)| id.0 == publisher && c.acked_at.is_some_and(|at| at > since))
            .count()
    }

    /// When each acknowledgement came, in order.
    pub fn ack_times(&self) -> Vec<Instant> {
        let mut times: Vec<Instant> = self.lock().values().filter_map(|c| c.acked_at).collect();
        times.sort_unstable();
        times
    }

    /// Waits until `count` calls have been acknowledged in all.
    pub async fn wait_for_acks(&self, count: usize) {
        let deadline = Instant::now() + PHASE;
        while self.acked_calls() < count {
            assert!(
                Instant::now() < deadline,
                "only {} of {count} calls acknowledged within {PHASE:?}",
                self.acked_calls()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until each of `publishers` has had `count` calls acknowledged after `since`: each
    /// of them publishes again after a fault.
    pub async fn wait_for_acks_since(&self, since: Instant, publishers: &[u32], count: usize) {
        let deadline = Instant::now() + PHASE;
        for &publisher in publishers {
            while self.acked_since(since, publisher) < count {
                assert!(
                    Instant::now() < deadline,
                    "publisher {publisher}: {} of {count} calls acknowledged after the fault, \
                     within {PHASE:?}",
                    self.acked_since(since, publisher)
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Holds the publishers off (once their calls in flight are answered) until dropped.
    pub async fn pause(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        tokio::time::timeout(PHASE + PROMPTLY, self.gate.write())
            .await
            .expect("the calls in flight are answered")
    }

    /// Stops the publishers; an error says what went wrong in one (each panics on failure).
    pub async fn stop(&self, publishers: Vec<JoinHandle<()>>) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        for publisher in publishers {
            match tokio::time::timeout(PHASE + PROMPTLY, publisher).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(format!("a publisher failed: {err:?}")),
                Err(_) => {
                    return Err(format!(
                        "a publisher did not stop within {:?}",
                        PHASE + PROMPTLY
                    ));
                }
            }
        }
        Ok(())
    }

    /// The log holds exactly what was published, with no call in flight: sequences gapless
    /// from 1; each event is one a call sent, byte for byte; each call that is in the log is
    /// there whole, once, in order (acknowledged or not); each acknowledged call is there at
    /// the sequences it was given.
    pub fn check(&self, log: &[pb::Event], when: &str) {
        let calls = self.lock();
        let mut found: HashMap<CallId, (u64, usize)> = HashMap::new();
        for (index, event) in log.iter().enumerate() {
            assert_eq!(
                event.sequence,
                index as u64 + 1,
                "{when}: a gap or disorder"
            );
            let (id, i) = call_of(&event.payload)
                .unwrap_or_else(|| panic!("{when}: seq {} is no one's: {event:?}", event.sequence));
            let call = calls.get(&id).unwrap_or_else(|| {
                panic!("{when}: seq {} from unknown call {id:?}", event.sequence)
            });
            let sent = &call.events[i];
            assert_eq!(
                (&event.topic, &event.payload),
                (&sent.topic, &sent.payload),
                "{when}: seq {} differs from what call {id:?} sent",
                event.sequence
            );
            let (first, count) = found.entry(id).or_insert((event.sequence, 0));
            assert_eq!(
                event.sequence,
                *first + i as u64,
                "{when}: call {id:?} is not whole, in order, once (event {i} at seq {})",
                event.sequence
            );
            *count += 1;
        }
        for (id, call) in calls.iter() {
            let in_log = found.get(id);
            if let Some(&(first, count)) = in_log {
                let acked = if call.acked.is_some() {
                    "acknowledged"
                } else {
                    "not acknowledged"
                };
                assert_eq!(
                    count,
                    call.events.len(),
                    "{when}: call {id:?} ({acked}) only partly in the log: at {first}.., of {} events",
                    log.len()
                );
            }
            if let Some((first, last)) = call.acked {
                assert_eq!(
                    in_log.map(|&(f, c)| (f, f + c as u64 - 1)),
                    Some((first, last)),
                    "{when}: acknowledged call {id:?} is not where it was acknowledged \
                     (the log has {} events)",
                    log.len()
                );
            }
        }
    }
}

/// `count` events on a few topics, with payloads unique to the call: `"{call}/{i}/"`, then
/// up to `max_random` random bytes.
pub fn random_batch(
    rng: &mut StdRng,
    call: &str,
    count: usize,
    max_random: usize,
) -> Vec<pb::NewEvent> {
    (0..count)
        .map(|i| {
            let mut payload = format!("{call}/{i}/").into_bytes();
            let random: Vec<u8> = (0..rng.random_range(0..=max_random))
                .map(|_| rng.random())
                .collect();
            payload.extend(random);
            pb::NewEvent {
                topic: format!("t{}", rng.random_range(0..4)),
                payload: Bytes::from(payload),
            }
        })
        .collect()
}

/// The call and index a payload from [`random_batch`] came from (`"P/C/I/..."`).
fn call_of(payload: &[u8]) -> Option<(CallId, usize)> {
    let mut parts = payload.splitn(4, |&b| b == b'/');
    let mut number = || std::str::from_utf8(parts.next()?).ok()?.parse::<u64>().ok();
    let publisher = number()?;
    let call = number()?;
    let index = number()?;
    Some(((publisher as u32, call as u32), index as usize))
}

pub async fn publish_batch(
    client: &ProducerClient,
    events: &[pb::NewEvent],
) -> Result<pb::PublishResponse, Status> {
    let request = pb::PublishRequest {
        events: events.to_vec(),
    };
    Ok(client.clone().publish(request).await?.into_inner())
}

/// An error a client sees while the producer is being killed or restarted: a broken or refused
/// connection (no ErrorInfo), or the producer's own SHUTTING_DOWN. Anything else the producer
/// says is a failure of the test.
pub fn assert_lost_connection(status: &Status) {
    if let Some(info) = ErrorInfo::from_status(status) {
        assert_eq!(info.reason, ErrorReason::ShuttingDown, "{status:?}");
    }
}

/// The whole log, by Poll from the oldest event to the head as the first response gives it;
/// every response must carry `log_id`.
pub async fn read_log(client: &ProducerClient, log_id: &str) -> Vec<pb::Event> {
    let mut events = Vec::new();
    let mut after = 0;
    let mut head = None;
    let deadline = Instant::now() + PHASE;
    for _ in 0..100_000 {
        assert!(
            Instant::now() < deadline,
            "the log was not read within {PHASE:?}"
        );
        let response = client
            .clone()
            .poll(pb::PollRequest {
                after_sequence: Some(after),
                max_events: 10_000,
                ..Default::default()
            })
            .await
            .expect("poll")
            .into_inner();
        assert_eq!(response.log_id, log_id, "Poll answers from the same log");
        assert_eq!(response.oldest_sequence, 1, "nothing retention dropped");
        let head = *head.get_or_insert(response.head_sequence);
        events.extend(response.events);
        after = response.next_after_sequence;
        if after >= head {
            events.retain(|e| e.sequence <= head);
            return events;
        }
    }
    panic!("the log was not read in 100,000 polls");
}

/// The test's random number generator, from `PUSHPULL_TEST_SEED` or a new seed, printed.
pub fn seeded_rng() -> StdRng {
    let seed = std::env::var("PUSHPULL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("PUSHPULL_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}
