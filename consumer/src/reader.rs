//! The reading loop: push (one Subscribe stream) or pull (Poll, interval or long), with one
//! cursor that survives every disconnect.
//!
//! The loop is a small state machine. A *session* is one connection's worth of calls; it ends
//! with `Ok` when the consumer stops, or with the `Status` that broke it. Between sessions the
//! reader backs off (capped, jittered) and, when the producer said OUT_OF_RANGE, asks it where
//! the log now starts to count exactly what was missed. Every response goes through
//! [`Reader::accept`], which checks the log identity, drops duplicates, spots gaps and moves the
//! cursor; it has no I/O, so tests drive it directly.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use pushpull::{
    pb::{self, producer_service_client::ProducerServiceClient},
    time::proto_duration,
};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Status, transport::Channel};
use tracing::{debug, error, info, warn};

use crate::{
    backoff::Backoff,
    checkpoint::{self, Checkpoint},
    config::{Config, Mode},
    stats::{Received, Stats, latency},
};

/// Deadline of an interval poll (it returns at once unless the producer is in trouble).
const POLL_TIMEOUT: Duration = Duration::from_secs(10);
/// A long poll's deadline is its `max_wait` plus this, so the producer's own empty answer
/// arrives before the client gives up.
const LONG_POLL_TIMEOUT_MARGIN: Duration = Duration::from_secs(10);

/// Where the consumer is: which log, and the last sequence it has processed there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The log the cursor belongs to; `None` until the first response (or from a checkpoint).
    pub log_id: Option<String>,
    /// Events with sequence > `after` come next. `None`: start at the head; `Some(0)`: from the
    /// oldest retained event.
    pub after: Option<u64>,
}

/// What [`Reader::accept`] made of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Events processed (possibly none); carry on.
    Processed,
    /// The response came from a different log than the cursor's: it was discarded and the
    /// cursor now points at the new log's oldest event. Ask again.
    LogChanged,
}

/// The settings the loop needs, from [`Config`].
#[derive(Debug, Clone)]
pub struct ReaderSettings {
    pub mode: Mode,
    pub topics: Vec<String>,
    pub poll_interval: Duration,
    pub max_wait: Duration,
    pub max_events: u32,
    pub stream_idle_timeout: Duration,
    pub checkpoint: Option<PathBuf>,
    pub checkpoint_interval: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl From<&Config> for ReaderSettings {
    fn from(c: &Config) -> Self {
        Self {
            mode: c.mode,
            topics: c.topics.clone(),
            poll_interval: c.poll_interval,
            max_wait: c.max_wait,
            max_events: c.max_events,
            stream_idle_timeout: c.stream_idle_timeout,
            checkpoint: c.checkpoint.clone(),
            checkpoint_interval: c.checkpoint_interval,
            backoff_initial: c.backoff_initial,
            backoff_max: c.backoff_max,
        }
    }
}

/// Reads the producer's log until stopped.
pub struct Reader {
    client: ProducerServiceClient<Channel>,
    settings: ReaderSettings,
    cursor: Cursor,
    stats: Stats,
    backoff: Backoff,
    connected: bool,
    /// The last cursor written to the checkpoint file, and when.
    saved: Option<(Cursor, Instant)>,
}

impl Reader {
    /// A reader starting at `cursor` (from a checkpoint or `--from`).
    pub fn new(
        client: ProducerServiceClient<Channel>,
        settings: ReaderSettings,
        cursor: Cursor,
        stats: Stats,
    ) -> Self {
        if let Some(log_id) = &cursor.log_id {
            stats.set_log(log_id, false);
        }
        stats.set_cursor(cursor.after);
        let backoff = Backoff::new(settings.backoff_initial, settings.backoff_max);
        Self {
            client,
            settings,
            cursor,
            stats,
            backoff,
            connected: false,
            saved: None,
        }
    }

    /// The cursor now.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// Runs sessions until `stop` is cancelled, then saves the checkpoint.
    pub async fn run(mut self, stop: CancellationToken) {
        info!(mode = ?self.settings.mode, cursor = ?self.cursor, "reader starting");
        loop {
            let result = match self.settings.mode {
                Mode::Push => self.push_session(&stop).await,
                Mode::Poll | Mode::LongPoll => self.poll_session(&stop).await,
            };
            self.set_connected(false);
            let Err(status) = result else { break };
            if stop.is_cancelled() {
                break;
            }
            if status.code() == Code::OutOfRange {
                warn!(
                    after_sequence = ?self.cursor.after,
                    detail = status.message(),
                    "producer refused the cursor; checking where its log stands"
                );
                match self.resync().await {
                    Ok(()) => {
                        self.stats.reconnected();
                        continue;
                    }
                    Err(status) => self.note_failure(&status),
                }
            } else {
                self.note_failure(&status);
            }
            self.stats.reconnected();
            let delay = self.backoff.next_delay();
            debug!(?delay, "reconnecting after backoff");
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = sleep(delay) => {}
            }
        }
        self.save_checkpoint(true);
        info!(cursor = ?self.cursor, "reader stopped");
    }

    fn note_failure(&self, status: &Status) {
        warn!(
            code = ?status.code(),
            detail = status.message(),
            after_sequence = ?self.cursor.after,
            "producer connection failed; will reconnect and resume"
        );
    }

    fn set_connected(&mut self, connected: bool) {
        if connected && !self.connected {
            info!(after_sequence = ?self.cursor.after, "connected to producer");
            self.backoff.reset();
        }
        self.connected = connected;
        self.stats.set_connected(connected);
    }

    /// One Subscribe stream after another (a new one only when the log changed).
    async fn push_session(&mut self, stop: &CancellationToken) -> Result<(), Status> {
        let idle = self.settings.stream_idle_timeout;
        loop {
            let request = pb::SubscribeRequest {
                after_sequence: self.cursor.after,
                topics: self.settings.topics.clone(),
            };
            self.stats.rpc_sent();
            let mut stream = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                response = self.client.subscribe(request) => response?.into_inner(),
            };
            loop {
                let message = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return Ok(()),
                    message = timeout(idle, stream.message()) => message,
                };
                let response = match message {
                    Err(_) => {
                        return Err(Status::unavailable(format!(
                            "no message on the Subscribe stream for {idle:?}, not even a heartbeat"
                        )));
                    }
                    Ok(Err(status)) => return Err(status),
                    Ok(Ok(None)) => {
                        return Err(Status::unavailable(
                            "the producer ended the Subscribe stream",
                        ));
                    }
                    Ok(Ok(Some(response))) => response,
                };
                self.set_connected(true);
                let accepted = self.accept(
                    &response.log_id,
                    response.events,
                    response.next_after_sequence,
                );
                self.save_checkpoint(false);
                if accepted == Accepted::LogChanged {
                    break;
                }
            }
        }
    }

    /// Polls: at the poll interval, or back to back as long polls. A poll that leaves events
    /// waiting (the batch was full) is followed by another at once, so pull catches up fast.
    async fn poll_session(&mut self, stop: &CancellationToken) -> Result<(), Status> {
        let long = self.settings.mode == Mode::LongPoll;
        let (max_wait, deadline) = if long {
            (
                Some(proto_duration(self.settings.max_wait)),
                self.settings.max_wait + LONG_POLL_TIMEOUT_MARGIN,
            )
        } else {
            (None, POLL_TIMEOUT)
        };
        loop {
            let started = Instant::now();
            // Without a cursor yet (`--from latest`), the first poll returns at once: it fixes
            // the cursor at the head now instead of whenever the first event arrives.
            let wait = if self.cursor.after.is_some() {
                max_wait
            } else {
                None
            };
            let mut request = Request::new(pb::PollRequest {
                after_sequence: self.cursor.after,
                topics: self.settings.topics.clone(),
                max_events: self.settings.max_events,
                max_wait: wait,
            });
            request.set_timeout(deadline);
            self.stats.rpc_sent();
            let response = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                response = self.client.poll(request) => response?.into_inner(),
            };
            self.set_connected(true);
            let more_waiting = response.next_after_sequence < response.head_sequence;
            let accepted = self.accept(
                &response.log_id,
                response.events,
                response.next_after_sequence,
            );
            self.save_checkpoint(false);
            if accepted == Accepted::LogChanged || more_waiting || long {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = sleep_until(started + self.settings.poll_interval) => {}
            }
        }
    }

    /// After OUT_OF_RANGE: asks the producer where its log stands (a Poll from the head, which
    /// returns at once) and fixes the cursor. An expired cursor moves to the oldest retained
    /// event and the events in between are counted as missed, exactly; a cursor from another
    /// log starts over on the new one.
    async fn resync(&mut self) -> Result<(), Status> {
        let mut request = Request::new(pb::PollRequest {
            after_sequence: None,
            topics: vec![],
            max_events: 1,
            max_wait: None,
        });
        request.set_timeout(POLL_TIMEOUT);
        self.stats.rpc_sent();
        let info = self.client.poll(request).await?.into_inner();
        if self.adopt_log(&info.log_id) == Accepted::LogChanged {
            return Ok(());
        }
        let Some(after) = self.cursor.after else {
            return Ok(());
        };
        let (oldest, head) = (info.oldest_sequence, info.head_sequence);
        if after != 0 && after + 1 < oldest {
            let missed = oldest - 1 - after;
            warn!(
                missed,
                after_sequence = after,
                oldest_sequence = oldest,
                "cursor expired: the producer no longer retains events {}..={}; counting them as missed and continuing from the oldest",
                after + 1,
                oldest - 1
            );
            self.stats.missed(missed);
            self.cursor.after = Some(oldest - 1);
            self.stats.set_cursor(self.cursor.after);
            return Ok(());
        }
        if after > head {
            error!(
                after_sequence = after,
                head_sequence = head,
                "the cursor is beyond the producer's head on the same log; waiting for the log to reach it"
            );
            return Err(Status::out_of_range(format!(
                "after_sequence {after} is beyond head_sequence {head}"
            )));
        }
        Ok(())
    }

    /// Checks a response's log against the cursor's. The first log seen is adopted; a different
    /// one means the producer restarted with a new log, so the old cursor is meaningless there.
    fn adopt_log(&mut self, log_id: &str) -> Accepted {
        match &self.cursor.log_id {
            Some(known) if known == log_id => Accepted::Processed,
            Some(known) => {
                warn!(
                    old_log_id = %known,
                    new_log_id = log_id,
                    after_sequence = ?self.cursor.after,
                    "the producer's log changed (it restarted); starting over from the new log's oldest event"
                );
                self.cursor = Cursor {
                    log_id: Some(log_id.to_owned()),
                    after: Some(0),
                };
                self.stats.set_log(log_id, true);
                self.stats.set_cursor(self.cursor.after);
                Accepted::LogChanged
            }
            None => {
                info!(log_id, "reading log");
                self.cursor.log_id = Some(log_id.to_owned());
                self.stats.set_log(log_id, false);
                Accepted::Processed
            }
        }
    }

    /// Processes one response: drops events at or below the cursor (duplicates), counts gaps
    /// (only without a topic filter, where sequences must be consecutive), records latency and
    /// moves the cursor to `next_after` (past events a filter skipped).
    pub fn accept(&mut self, log_id: &str, events: Vec<pb::Event>, next_after: u64) -> Accepted {
        if self.adopt_log(log_id) == Accepted::LogChanged {
            return Accepted::LogChanged;
        }
        let received_at = SystemTime::now();
        let unfiltered = self.settings.topics.is_empty();
        // With no cursor yet (`--from latest`), the first response fixes it.
        let mut after = self.cursor.after.unwrap_or_else(|| {
            events
                .first()
                .map_or(next_after, |e| e.sequence.saturating_sub(1))
        });
        let mut received = Received::default();
        let mut last = None;
        let mut latencies = Vec::with_capacity(events.len());
        for event in &events {
            if event.sequence <= after {
                received.duplicates += 1;
                warn!(
                    sequence = event.sequence,
                    after_sequence = after,
                    "duplicate event dropped"
                );
                continue;
            }
            // `after == 0` means "from the oldest": what was evicted before we asked is not a gap.
            if unfiltered && after != 0 && event.sequence > after + 1 {
                let gap = event.sequence - after - 1;
                warn!(
                    gap,
                    after_sequence = after,
                    sequence = event.sequence,
                    "gap in sequences: events missed"
                );
                received.missed += gap;
            }
            debug!(
                sequence = event.sequence,
                topic = %event.topic,
                bytes = event.payload.len(),
                "event"
            );
            after = event.sequence;
            last = Some(event.sequence);
            received.events += 1;
            latencies.push(latency(event, received_at));
        }
        after = after.max(next_after);
        self.cursor.after = Some(after);
        self.stats.record(received, last, latencies, Some(after));
        Accepted::Processed
    }

    /// Writes the cursor to the checkpoint file when it moved and the interval has passed (or
    /// always, with `force`). A failed write is logged, not fatal: reading goes on.
    fn save_checkpoint(&mut self, force: bool) {
        let Some(path) = &self.settings.checkpoint else {
            return;
        };
        let (Some(log_id), Some(after)) = (&self.cursor.log_id, self.cursor.after) else {
            return;
        };
        if let Some((saved, at)) = &self.saved
            && (*saved == self.cursor
                || (!force && at.elapsed() < self.settings.checkpoint_interval))
        {
            return;
        }
        let cp = Checkpoint {
            log_id: log_id.clone(),
            after_sequence: after,
        };
        match checkpoint::save(path, &cp) {
            Ok(()) => {
                debug!(after_sequence = after, "checkpoint saved");
                self.saved = Some((self.cursor.clone(), Instant::now()));
            }
            Err(err) => warn!(%err, "cannot save checkpoint"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushpull::time::timestamp;
    use tonic::transport::Endpoint;

    fn reader(topics: Vec<String>, cursor: Cursor) -> (Reader, Stats) {
        let channel = Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let settings = ReaderSettings {
            mode: Mode::Push,
            topics: topics.clone(),
            poll_interval: Duration::from_secs(1),
            max_wait: Duration::from_secs(1),
            max_events: 100,
            stream_idle_timeout: Duration::from_secs(30),
            checkpoint: None,
            checkpoint_interval: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
        };
        let stats = Stats::new(Mode::Push, "test".into(), topics);
        let reader = Reader::new(
            ProducerServiceClient::new(channel),
            settings,
            cursor,
            stats.clone(),
        );
        (reader, stats)
    }

    fn events(seqs: &[u64]) -> Vec<pb::Event> {
        seqs.iter()
            .map(|&sequence| pb::Event {
                sequence,
                topic: "t".into(),
                payload: Default::default(),
                produced_at: Some(timestamp(SystemTime::now())),
            })
            .collect()
    }

    #[tokio::test]
    async fn drops_duplicates_and_counts_gaps() {
        let (mut r, stats) = reader(vec![], Cursor::default());
        assert_eq!(r.accept("L", events(&[1, 2, 3]), 3), Accepted::Processed);
        assert_eq!(r.accept("L", events(&[2, 3, 4, 7]), 7), Accepted::Processed);
        let s = stats.snapshot();
        assert_eq!(s.events_received, 5);
        assert_eq!(s.duplicates_dropped, 2);
        assert_eq!(s.events_missed, 2, "5 and 6 are missing");
        assert_eq!(s.last_sequence, 7);
        assert_eq!(r.cursor().after, Some(7));
    }

    #[tokio::test]
    async fn filtered_reader_follows_next_after_without_counting_gaps() {
        let (mut r, stats) = reader(vec!["t".into()], Cursor::default());
        r.accept("L", events(&[2, 9]), 12);
        r.accept("L", vec![], 20);
        let s = stats.snapshot();
        assert_eq!((s.events_received, s.events_missed), (2, 0));
        assert_eq!(r.cursor().after, Some(20));
        assert_eq!(s.empty_responses, 1);
    }

    #[tokio::test]
    async fn new_log_discards_response_and_starts_over() {
        let cursor = Cursor {
            log_id: Some("old".into()),
            after: Some(500),
        };
        let (mut r, stats) = reader(vec![], cursor);
        assert_eq!(r.accept("new", events(&[501]), 501), Accepted::LogChanged);
        assert_eq!(
            r.cursor(),
            &Cursor {
                log_id: Some("new".into()),
                after: Some(0)
            }
        );
        assert_eq!(r.accept("new", events(&[1, 2]), 2), Accepted::Processed);
        let s = stats.snapshot();
        assert_eq!(
            (s.events_received, s.log_changes, s.events_missed),
            (2, 1, 0)
        );
        assert_eq!(s.log_id, "new");
    }

    #[tokio::test]
    async fn earliest_does_not_count_evicted_events_as_missed() {
        let cursor = Cursor {
            log_id: None,
            after: Some(0),
        };
        let (mut r, stats) = reader(vec![], cursor);
        r.accept("L", events(&[40, 41]), 41);
        assert_eq!(stats.snapshot().events_missed, 0);
    }
}
