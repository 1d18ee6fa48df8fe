//! The reading loop: push (one Subscribe stream) or pull (Poll, interval or long), with one
//! cursor that survives every disconnect, and every move to another producer of the same log.
//!
//! The loop is a small state machine. A *session* is one connection's worth of calls to one
//! producer; it ends with `Ok` when the consumer stops, or with the `Status` that broke it.
//! After a failed session the reader moves on to the next producer of `--producer`, with the
//! same cursor ([`crate::producers::Rotation`] decides which, and when a whole round has failed);
//! it backs off (capped, jittered, and at least the status's RetryInfo delay, within the cap)
//! only once every producer has failed in a row, which with one producer is after every
//! failure. An OUT_OF_RANGE that the status itself explains is no failure: its
//! `google.rpc.ErrorInfo` says whether the cursor expired (and how many events are gone) or
//! belongs to another log, and [`after_out_of_range`] turns that into the next cursor with no
//! extra call. Every response goes through [`Reader::accept`], which checks the
//! log identity, drops duplicates, spots gaps and moves the cursor. Neither has I/O, so tests
//! drive them directly.
//!
//! Logs name things as the proto does (`after_sequence`, `log_id`, `code` as `UNAVAILABLE`),
//! leave out a field that has no value yet rather than print `None`, write names and numbers
//! bare and free text (`detail`) quoted, and say each thing once:
//! the first failure of an outage is a WARN (a producer shutting down, an INFO), its repeats
//! are DEBUG until the reader is connected again. A failure that moves the reader to another
//! producer says from which to which (`from_producer`, `to_producer`), and why.

use std::time::{Duration, SystemTime};

use pushpull::{
    errors::{ErrorInfo, ErrorReason, key},
    pb,
    time::proto_duration,
};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;
use tracing::{debug, info, warn};

use crate::{
    backoff::Backoff,
    checkpoint::{self, Checkpoint},
    config::{Config, Mode},
    producers::{Producers, Step},
    stats::{Received, Stats, latency},
};

/// Deadline of an interval poll (it returns at once unless the producer is in trouble).
const POLL_TIMEOUT: Duration = Duration::from_secs(10);
/// A long poll's deadline is its `max_wait` plus this, so the producer's own empty answer
/// arrives before the client gives up.
const LONG_POLL_TIMEOUT_MARGIN: Duration = Duration::from_secs(10);

/// A `tracing` event at one of two levels chosen at run time (a callsite's level is static, so
/// this expands to both): `at_level!(if first { warn } else { debug }, fields.., "message")`.
macro_rules! at_level {
    (if $cond:ident { $first:ident } else { $other:ident }, $($event:tt)+) => {
        if $cond {
            tracing::$first!($($event)+)
        } else {
            tracing::$other!($($event)+)
        }
    };
}

/// The innermost error under a status: for a transport failure the OS error ("Connection
/// refused"), which its message ("tcp connect error") does not say.
fn root_cause(status: &Status) -> Option<String> {
    let mut cause = std::error::Error::source(status)?;
    while let Some(next) = cause.source() {
        cause = next;
    }
    Some(cause.to_string())
}

/// Where the consumer is: which log, and the last sequence it has processed there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The log the cursor belongs to; `None` until the first response (or from a checkpoint).
    pub log_id: Option<String>,
    /// Events with sequence > `after` come next. `None`: start at the head; `Some(0)`: from the
    /// oldest retained event.
    pub after: Option<u64>,
}

impl Cursor {
    /// The cursor as saved: only once it names both a log and a sequence.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        Some(Checkpoint {
            log_id: self.log_id.clone()?,
            after_sequence: self.after?,
        })
    }
}

/// Where a response's events came from, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The mode's own way of reading: a Subscribe stream, a poll of the poll modes, a webhook.
    Read,
    /// A Poll of webhook mode for what no webhook brought (counted in `events_backfilled` too).
    Backfill,
}

/// What [`Reader::poll_once`] brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Polled {
    pub accepted: Accepted,
    /// The producer holds more after this response (it was full): poll again at once.
    pub more_waiting: bool,
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

/// What to do after the producer refused the cursor with OUT_OF_RANGE: decided by
/// [`after_out_of_range`] from the status's `ErrorInfo` and the cursor alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutOfRange {
    /// The refusal comes from another log than the cursor's: the producer restarted with a new
    /// log, where the old cursor means nothing. Start over from its oldest event, at once.
    NewLog { log_id: String },
    /// The cursor expired on its own log: `missed` events are gone. Count them, continue after
    /// `resume_after` (just before the oldest retained event), at once. `log_id` is the log the
    /// numbers belong to, adopted if the cursor had none yet (`--from N`).
    Expired {
        log_id: String,
        missed: u64,
        resume_after: u64,
    },
    /// The cursor is beyond the head of its own log (or of a log it was never checked against,
    /// as `--from N` is): retry after backoff, since the log may grow to it.
    Ahead { head: Option<u64> },
    /// The status does not say what happened: retry the same cursor after backoff.
    Unexplained { why: &'static str },
}

/// Decides what an OUT_OF_RANGE means for `cursor`, from the `ErrorInfo` it carried (`None`
/// when it carried none: an older producer, or a proxy answering for it).
///
/// The producer's own numbers are used as they are: this is not a second copy of the log's
/// expiry rule. The one check of our own is that the cursor only moves forward, so a confused
/// answer can cost events counted as missed, never events read twice.
pub fn after_out_of_range(cursor: &Cursor, info: Option<&ErrorInfo>) -> OutOfRange {
    let unexplained = |why| OutOfRange::Unexplained { why };
    let Some(info) = info else {
        return unexplained("the status carries no google.rpc.ErrorInfo from pushpull");
    };
    let expired = match info.reason {
        ErrorReason::CursorExpired => true,
        ErrorReason::CursorAhead => false,
        _ => return unexplained("the ErrorInfo reason is not about the cursor"),
    };
    let Some(log_id) = info.get(key::LOG_ID) else {
        return unexplained("the ErrorInfo names no log_id");
    };
    if cursor
        .log_id
        .as_deref()
        .is_some_and(|known| known != log_id)
    {
        return OutOfRange::NewLog {
            log_id: log_id.to_owned(),
        };
    }
    if !expired {
        return OutOfRange::Ahead {
            head: info.get_u64(key::HEAD_SEQUENCE),
        };
    }
    let (Some(after), Some(oldest), Some(missed)) = (
        info.get_u64(key::AFTER_SEQUENCE),
        info.get_u64(key::OLDEST_SEQUENCE),
        info.get_u64(key::MISSED),
    ) else {
        return unexplained("the ErrorInfo lacks after_sequence, oldest_sequence or missed");
    };
    if cursor.after != Some(after) {
        return unexplained("the ErrorInfo is about another cursor than the reader's");
    }
    match oldest.checked_sub(1) {
        Some(resume_after) if resume_after > after => OutOfRange::Expired {
            log_id: log_id.to_owned(),
            missed,
            resume_after,
        },
        _ => unexplained("the ErrorInfo's oldest_sequence is not past the cursor"),
    }
}

/// When the reader calls the producer again after a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// At once: the cursor was fixed, nothing is wrong with the producer.
    Now,
    /// After the backoff delay.
    Backoff,
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
            backoff_initial: c.backoff_initial,
            backoff_max: c.backoff_max,
        }
    }
}

/// Reads the producer's log until stopped.
pub struct Reader {
    /// The producers of `--producer`, and the one in use.
    producers: Producers,
    settings: ReaderSettings,
    cursor: Cursor,
    stats: Stats,
    backoff: Backoff,
    connected: bool,
    /// Webhook mode: whether the producer has our subscription (the registration succeeded).
    /// GetStats' `connected` is `connected && registered`; always true in the other modes.
    registered: bool,
    /// The producer (its index), code and reason of each failure logged since the reader was
    /// last connected: a repeat is logged at DEBUG, so an outage reads as one line per
    /// producer, not one per attempt.
    failures: Vec<(usize, Code, Option<ErrorReason>)>,
    /// Where processed cursors go to be saved (`--checkpoint`); the writer task behind it does
    /// the file I/O, off this task.
    checkpoints: Option<checkpoint::Latest>,
}

impl Reader {
    /// A reader starting at `cursor` (from a checkpoint or `--from`), offering the cursors it
    /// processes to `checkpoints` when given.
    pub fn new(
        producers: Producers,
        settings: ReaderSettings,
        cursor: Cursor,
        stats: Stats,
        checkpoints: Option<checkpoint::Latest>,
    ) -> Self {
        if let Some(log_id) = &cursor.log_id {
            stats.set_log(log_id, false);
        }
        stats.set_cursor(cursor.after);
        let backoff = Backoff::new(settings.backoff_initial, settings.backoff_max);
        Self {
            registered: settings.mode != Mode::Webhook,
            producers,
            settings,
            cursor,
            stats,
            backoff,
            connected: false,
            failures: Vec::new(),
            checkpoints,
        }
    }

    /// The cursor now.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// Runs sessions until `stop` is cancelled. Returning drops the checkpoint handle, which
    /// tells the writer to save the final cursor.
    pub async fn run(mut self, stop: CancellationToken) {
        info!(
            after_sequence = self.cursor.after,
            log_id = self.cursor.log_id.as_deref().map(tracing::field::display),
            producer = %self.producers.current(),
            "reader starting"
        );
        loop {
            let result = match self.settings.mode {
                Mode::Push => self.push_session(&stop).await,
                // Webhook mode is driven by `webhook::run`, which polls through `poll_once`
                // and never calls this; a webhook-mode reader on its own would poll.
                Mode::Poll | Mode::LongPoll | Mode::Webhook => self.poll_session(&stop).await,
            };
            self.set_connected(false);
            let Err(status) = result else { break };
            if stop.is_cancelled() {
                break;
            }
            self.stats.reconnected();
            if status.code() == Code::OutOfRange && self.out_of_range(&status) == Next::Now {
                continue;
            }
            if self.move_on(&status) == Next::Now {
                continue;
            }
            let delay = self.backoff_delay(&status);
            debug!(
                delay_ms = delay.as_millis() as u64,
                "reconnecting after backoff"
            );
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = sleep(delay) => {}
            }
        }
        info!(
            after_sequence = self.cursor.after,
            log_id = self.cursor.log_id.as_deref().map(tracing::field::display),
            "reader stopped"
        );
    }

    /// The next backoff delay after `status`, honouring its RetryInfo (within the cap).
    pub(crate) fn backoff_delay(&mut self, status: &Status) -> Duration {
        let retry_after = status.get_details_retry_info().and_then(|r| r.retry_delay);
        self.backoff.next_delay_honouring(retry_after)
    }

    /// The producers of `--producer`, and the one in use.
    pub(crate) fn producers(&self) -> &Producers {
        &self.producers
    }

    /// The topic filter in use (`--topics`).
    pub(crate) fn topics(&self) -> &[String] {
        &self.settings.topics
    }

    /// Waits until the checkpoint file holds the cursor (at once without `--checkpoint`, where
    /// the cursor in memory is all there is).
    pub(crate) async fn saved(&self) -> Result<(), checkpoint::NotSaved> {
        match &self.checkpoints {
            Some(checkpoints) => checkpoints.saved().await,
            None => Ok(()),
        }
    }

    /// Webhook mode: records whether the producer has our subscription; GetStats' `connected`
    /// follows.
    pub(crate) fn set_registered(&mut self, registered: bool) {
        self.registered = registered;
        self.stats.set_connected(self.connected && registered);
    }

    /// True the first time since the reader was last connected that a failure of `producer`
    /// (an index) with this code and reason is seen.
    fn first_failure_of_its_kind(
        &mut self,
        producer: usize,
        code: Code,
        reason: Option<ErrorReason>,
    ) -> bool {
        let key = (producer, code, reason);
        let new = !self.failures.contains(&key);
        if new {
            self.failures.push(key);
        }
        new
    }

    /// After a failed session (one the status does not explain away): logs it, moves to the
    /// next producer, and says whether to call that one at once or after backoff.
    pub(crate) fn move_on(&mut self, status: &Status) -> Next {
        let step = self.producers.failed();
        self.note_failure(status, step);
        if step.is_failover() {
            self.stats.failed_over(self.producers.url(step.to));
        }
        if step.back_off {
            Next::Backoff
        } else {
            Next::Now
        }
    }

    /// Logs a failed session of producer `step.from`, and the move to `step.to` when it is
    /// another producer; `backoff` says whether the reader waits first (every producer has
    /// failed since the last answer).
    fn note_failure(&mut self, status: &Status, step: Step) {
        let reason = pushpull::errors::reason(status);
        let first = self.first_failure_of_its_kind(step.from, status.code(), reason);
        let from = self.producers.url(step.from);
        let shutting_down = reason == Some(ErrorReason::ShuttingDown);
        if !step.is_failover() {
            if shutting_down {
                at_level!(
                    if first { info } else { debug },
                    after_sequence = self.cursor.after,
                    producer = %from,
                    "the producer is shutting down; reconnecting and resuming from the cursor"
                );
            } else {
                at_level!(
                    if first { warn } else { debug },
                    code = %pushpull::errors::code_name(status.code()),
                    reason = reason.map(|r| tracing::field::display(r.as_str_name())),
                    detail = status.message(),
                    cause = root_cause(status).as_deref(),
                    after_sequence = self.cursor.after,
                    producer = %from,
                    "producer connection failed; reconnecting with backoff (until connected again, further failures are logged at DEBUG)"
                );
            }
            return;
        }
        let to = self.producers.url(step.to);
        if shutting_down {
            at_level!(
                if first { info } else { debug },
                from_producer = %from,
                to_producer = %to,
                after_sequence = self.cursor.after,
                backoff = step.back_off,
                "the producer is shutting down; failing over to the next producer, resuming from the cursor"
            );
            return;
        }
        at_level!(
            if first { warn } else { debug },
            from_producer = %from,
            to_producer = %to,
            code = %pushpull::errors::code_name(status.code()),
            reason = reason.map(|r| tracing::field::display(r.as_str_name())),
            detail = status.message(),
            cause = root_cause(status).as_deref(),
            after_sequence = self.cursor.after,
            backoff = step.back_off,
            "producer failed; failing over to the next producer, resuming from the cursor (until connected again, further failures of this producer are logged at DEBUG)"
        );
    }

    pub(crate) fn set_connected(&mut self, connected: bool) {
        if connected && !self.connected {
            info!(
                after_sequence = self.cursor.after,
                log_id = self.cursor.log_id.as_deref().map(tracing::field::display),
                producer = %self.producers.current(),
                "connected to producer"
            );
            self.backoff.reset();
            self.producers.answered();
            self.failures.clear();
        }
        self.connected = connected;
        self.stats.set_connected(connected && self.registered);
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
            let mut client = self.producers.client();
            let mut stream = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                response = client.subscribe(request) => response?.into_inner(),
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
        let max_wait = long.then_some(self.settings.max_wait);
        loop {
            let started = Instant::now();
            let Some(polled) = self.poll_once(stop, max_wait, None, Source::Read).await? else {
                return Ok(());
            };
            if polled.accepted == Accepted::LogChanged || polled.more_waiting || long {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = sleep_until(started + self.settings.poll_interval) => {}
            }
        }
    }

    /// One Poll from the cursor, waiting up to `max_wait` for events (`None`: answering at
    /// once), for at most `max_events` (`None`: `--max-events`), its response accepted as
    /// coming from `source`. `Ok(None)` once `stop` is cancelled; the status of a failed call
    /// otherwise, for the caller to act on.
    pub async fn poll_once(
        &mut self,
        stop: &CancellationToken,
        max_wait: Option<Duration>,
        max_events: Option<u32>,
        source: Source,
    ) -> Result<Option<Polled>, Status> {
        // Without a cursor yet (`--from latest`), the poll returns at once: it fixes the cursor
        // at the head now instead of whenever the first event arrives.
        let wait = max_wait.filter(|_| self.cursor.after.is_some());
        let deadline = wait.map_or(POLL_TIMEOUT, |w| w + LONG_POLL_TIMEOUT_MARGIN);
        let mut request = Request::new(pb::PollRequest {
            after_sequence: self.cursor.after,
            topics: self.settings.topics.clone(),
            max_events: max_events.map_or(self.settings.max_events, |n| {
                n.clamp(1, self.settings.max_events)
            }),
            max_wait: wait.map(proto_duration),
        });
        request.set_timeout(deadline);
        self.stats.rpc_sent();
        let mut client = self.producers.client();
        let response = tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            response = client.poll(request) => response?.into_inner(),
        };
        self.set_connected(true);
        let more_waiting = response.next_after_sequence < response.head_sequence;
        let accepted = self.accept_from(
            source,
            &response.log_id,
            response.events,
            response.next_after_sequence,
        );
        Ok(Some(Polled {
            accepted,
            more_waiting,
        }))
    }

    /// Acts on an OUT_OF_RANGE as [`after_out_of_range`] decides: moves the cursor and says
    /// whether to call again at once or after backoff.
    pub(crate) fn out_of_range(&mut self, status: &Status) -> Next {
        let info = ErrorInfo::from_status(status);
        match after_out_of_range(&self.cursor, info.as_ref()) {
            OutOfRange::NewLog { log_id } => {
                self.start_over(&log_id);
                Next::Now
            }
            OutOfRange::Expired {
                log_id,
                missed,
                resume_after,
            } => {
                self.adopt_log(&log_id);
                warn!(
                    missed,
                    after_sequence = self.cursor.after,
                    resume_after,
                    "cursor expired: the producer no longer retains the {missed} events after it; counting them as missed and continuing from the oldest retained event"
                );
                self.stats.missed(missed);
                self.cursor.after = Some(resume_after);
                self.stats.set_cursor(self.cursor.after);
                self.offer_checkpoint();
                Next::Now
            }
            OutOfRange::Ahead { head } => {
                let first = self.first_failure_of_its_kind(
                    self.producers.current_index(),
                    Code::OutOfRange,
                    info.map(|i| i.reason),
                );
                at_level!(
                    if first { warn } else { debug },
                    after_sequence = self.cursor.after,
                    head_sequence = head,
                    "the cursor is beyond the head of the producer's log; waiting for the log to reach it"
                );
                Next::Backoff
            }
            OutOfRange::Unexplained { why } => {
                let first = self.first_failure_of_its_kind(
                    self.producers.current_index(),
                    Code::OutOfRange,
                    info.map(|i| i.reason),
                );
                at_level!(
                    if first { warn } else { debug },
                    after_sequence = self.cursor.after,
                    detail = status.message(),
                    why,
                    "the producer refused the cursor (OUT_OF_RANGE) without saying why in a form this consumer reads; retrying the same cursor after backoff"
                );
                Next::Backoff
            }
        }
    }

    /// Checks a response's log against the cursor's. The first log seen is adopted; a different
    /// one means the producer restarted with a new log, so the old cursor is meaningless there.
    fn adopt_log(&mut self, log_id: &str) -> Accepted {
        match &self.cursor.log_id {
            Some(known) if known == log_id => Accepted::Processed,
            Some(_) => {
                self.start_over(log_id);
                Accepted::LogChanged
            }
            None => {
                info!(log_id = %log_id, "reading log");
                self.cursor.log_id = Some(log_id.to_owned());
                self.stats.set_log(log_id, false);
                Accepted::Processed
            }
        }
    }

    /// The producer restarted with the new log `log_id`: the cursor starts over from its oldest
    /// event, and the change is counted.
    fn start_over(&mut self, log_id: &str) {
        warn!(
            old_log_id = self.cursor.log_id.as_deref().map(tracing::field::display),
            new_log_id = %log_id,
            after_sequence = self.cursor.after,
            producer = %self.producers.current(),
            "the producer's log changed (it restarted with a new log, or --producer lists producers of different logs); starting over from the new log's oldest event"
        );
        self.cursor = Cursor {
            log_id: Some(log_id.to_owned()),
            after: Some(0),
        };
        self.stats.set_log(log_id, true);
        self.stats.set_cursor(self.cursor.after);
        self.offer_checkpoint();
    }

    /// Processes one response: drops events at or below the cursor (duplicates), counts gaps
    /// (only without a topic filter, where sequences must be consecutive), records latency and
    /// moves the cursor to `next_after` (past events a filter skipped).
    pub fn accept(&mut self, log_id: &str, events: Vec<pb::Event>, next_after: u64) -> Accepted {
        self.accept_from(Source::Read, log_id, events, next_after)
    }

    /// [`Reader::accept`], counting the events as backfilled when `source` says so.
    pub fn accept_from(
        &mut self,
        source: Source,
        log_id: &str,
        events: Vec<pb::Event>,
        next_after: u64,
    ) -> Accepted {
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
        if source == Source::Backfill {
            received.backfilled = received.events;
        }
        after = after.max(next_after);
        self.cursor.after = Some(after);
        self.stats.record(received, last, latencies, Some(after));
        self.offer_checkpoint();
        Accepted::Processed
    }

    /// Offers the cursor to the checkpoint writer: called wherever the cursor moves, and only
    /// once what it points past has been processed, so a checkpoint is never ahead.
    fn offer_checkpoint(&self) {
        if let (Some(checkpoints), Some(log_id), Some(after)) =
            (&self.checkpoints, &self.cursor.log_id, self.cursor.after)
        {
            checkpoints.offer(log_id, after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushpull::time::timestamp;

    fn reader(topics: Vec<String>, cursor: Cursor) -> (Reader, Stats) {
        reader_of(&["http://127.0.0.1:9"], topics, cursor)
    }

    /// A reader of the producers at `urls` (none of them called by these tests).
    fn reader_of(urls: &[&str], topics: Vec<String>, cursor: Cursor) -> (Reader, Stats) {
        let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        let settings = ReaderSettings {
            mode: Mode::Push,
            topics: topics.clone(),
            poll_interval: Duration::from_secs(1),
            max_wait: Duration::from_secs(1),
            max_events: 100,
            stream_idle_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
        };
        let stats = Stats::new(Mode::Push, urls.clone(), topics);
        let reader = Reader::new(
            Producers::new(&urls, 1024).unwrap(),
            settings,
            cursor,
            stats.clone(),
            None,
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

    fn cursor(log_id: Option<&str>, after: Option<u64>) -> Cursor {
        Cursor {
            log_id: log_id.map(str::to_owned),
            after,
        }
    }

    /// What the producer's `Error::CursorExpired` carries (see errors.proto).
    fn expired(log_id: &str, after: u64, oldest: u64, head: u64) -> ErrorInfo {
        ErrorInfo::new(ErrorReason::CursorExpired)
            .with(key::FIELD, "after_sequence")
            .with(key::AFTER_SEQUENCE, after)
            .with(key::OLDEST_SEQUENCE, oldest)
            .with(key::HEAD_SEQUENCE, head)
            .with(key::LOG_ID, log_id)
            .with(key::MISSED, oldest - 1 - after)
    }

    /// What the producer's `Error::CursorAhead` carries.
    fn ahead(log_id: &str, after: u64, oldest: u64, head: u64) -> ErrorInfo {
        ErrorInfo::new(ErrorReason::CursorAhead)
            .with(key::FIELD, "after_sequence")
            .with(key::AFTER_SEQUENCE, after)
            .with(key::OLDEST_SEQUENCE, oldest)
            .with(key::HEAD_SEQUENCE, head)
            .with(key::LOG_ID, log_id)
    }

    #[test]
    fn an_expired_cursor_moves_just_before_the_oldest_and_counts_the_producers_missed() {
        let info = expired("L", 3, 21, 30);
        let want = OutOfRange::Expired {
            log_id: "L".into(),
            missed: 17,
            resume_after: 20,
        };
        assert_eq!(
            after_out_of_range(&cursor(Some("L"), Some(3)), Some(&info)),
            want
        );
        // `--from 3` with no log yet: the same, and the log is the one the numbers belong to.
        assert_eq!(
            after_out_of_range(&cursor(None, Some(3)), Some(&info)),
            want
        );
    }

    #[test]
    fn missed_is_taken_from_the_producer_not_recomputed() {
        let info = expired("L", 3, 21, 30).with(key::MISSED, 5);
        assert!(matches!(
            after_out_of_range(&cursor(Some("L"), Some(3)), Some(&info)),
            OutOfRange::Expired { missed: 5, .. }
        ));
    }

    #[test]
    fn a_refusal_from_another_log_is_a_new_log_whatever_the_reason() {
        for info in [expired("new", 3, 21, 30), ahead("new", 500, 1, 10)] {
            assert_eq!(
                after_out_of_range(&cursor(Some("old"), Some(500)), Some(&info)),
                OutOfRange::NewLog {
                    log_id: "new".into()
                },
                "{info:?}"
            );
        }
    }

    #[test]
    fn a_cursor_ahead_on_its_own_log_waits_for_the_log_to_grow() {
        let info = ahead("L", 500, 1, 10);
        for c in [cursor(Some("L"), Some(500)), cursor(None, Some(500))] {
            assert_eq!(
                after_out_of_range(&c, Some(&info)),
                OutOfRange::Ahead { head: Some(10) },
                "{c:?}"
            );
        }
    }

    #[test]
    fn refusals_that_do_not_explain_themselves_are_retried_with_the_same_cursor() {
        let c = cursor(Some("L"), Some(3));
        let mut no_missed = expired("L", 3, 21, 30);
        no_missed.metadata.remove(key::MISSED);
        let mut no_log = expired("L", 3, 21, 30);
        no_log.metadata.remove(key::LOG_ID);
        for info in [
            None,
            Some(ErrorInfo::new(ErrorReason::InvalidTopic)),
            Some(no_missed),
            Some(no_log),
            // About another cursor (a stale answer): its numbers do not apply to ours.
            Some(expired("L", 2, 21, 30)),
            // An "expiry" that would move the cursor backwards.
            Some(expired("L", 3, 21, 30).with(key::OLDEST_SEQUENCE, 3)),
        ] {
            assert!(
                matches!(
                    after_out_of_range(&c, info.as_ref()),
                    OutOfRange::Unexplained { .. }
                ),
                "{info:?}"
            );
        }
    }

    fn out_of_range(info: Option<ErrorInfo>) -> Status {
        match info {
            Some(info) => info.into_status(Code::OutOfRange, "refused", None),
            None => Status::out_of_range("refused by a proxy"),
        }
    }

    #[tokio::test]
    async fn the_reader_applies_an_expiry_from_the_status_alone() {
        let (mut r, stats) = reader(vec![], cursor(None, Some(3)));
        let next = r.out_of_range(&out_of_range(Some(expired("L", 3, 21, 30))));
        assert_eq!(next, Next::Now);
        assert_eq!(r.cursor(), &cursor(Some("L"), Some(20)));
        let s = stats.snapshot();
        assert_eq!((s.events_missed, s.log_changes), (17, 0));
        assert_eq!((s.log_id.as_str(), s.after_sequence), ("L", Some(20)));
        // The next response continues without a gap.
        r.accept("L", events(&[21, 22]), 22);
        assert_eq!(stats.snapshot().events_missed, 17);
    }

    #[tokio::test]
    async fn the_reader_starts_over_on_a_new_log_and_counts_the_change_once() {
        let (mut r, stats) = reader(vec![], cursor(Some("old"), Some(500)));
        let next = r.out_of_range(&out_of_range(Some(ahead("new", 500, 1, 10))));
        assert_eq!(next, Next::Now);
        assert_eq!(r.cursor(), &cursor(Some("new"), Some(0)));
        assert_eq!(r.accept("new", events(&[1, 2]), 2), Accepted::Processed);
        let s = stats.snapshot();
        assert_eq!(
            (s.log_changes, s.events_missed, s.events_received),
            (1, 0, 2)
        );
        assert_eq!(s.log_id, "new");
    }

    #[tokio::test]
    async fn the_reader_backs_off_and_keeps_its_cursor_when_not_told_why() {
        for info in [None, Some(ahead("L", 500, 1, 10))] {
            let (mut r, stats) = reader(vec![], cursor(Some("L"), Some(500)));
            assert_eq!(r.out_of_range(&out_of_range(info)), Next::Backoff);
            assert_eq!(r.cursor(), &cursor(Some("L"), Some(500)));
            let s = stats.snapshot();
            assert_eq!((s.events_missed, s.log_changes), (0, 0));
        }
    }

    #[tokio::test]
    async fn every_cursor_move_is_offered_to_the_checkpoint_writer_and_the_last_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        let (latest, writer) = checkpoint::writer(path.clone(), None, Duration::from_secs(3600));
        let writer = tokio::spawn(writer);
        let (mut r, _stats) = reader(vec![], cursor(None, Some(3)));
        r.checkpoints = Some(latest);
        r.out_of_range(&out_of_range(Some(expired("L", 3, 21, 30))));
        r.accept("L", events(&[21, 22]), 22);
        r.accept("L", events(&[23]), 23);
        drop(r);
        writer.await.unwrap();
        assert_eq!(
            checkpoint::load(&path).unwrap(),
            Some(Checkpoint {
                log_id: "L".into(),
                after_sequence: 23
            })
        );
    }

    /// Log output of one test, written by a subscriber installed for this thread only.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    /// Captures DEBUG and up, as `--log-format text` (without time or colour) or `json` writes.
    fn capture(json: bool) -> (Captured, tracing::subscriber::DefaultGuard) {
        let out = Captured::default();
        let writer = {
            let out = out.clone();
            move || out.clone()
        };
        let builder = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .without_time()
            .with_max_level(tracing::Level::DEBUG);
        let guard = if json {
            tracing::subscriber::set_default(builder.json().flatten_event(true).finish())
        } else {
            tracing::subscriber::set_default(builder.finish())
        };
        (out, guard)
    }

    fn shutting_down() -> Status {
        ErrorInfo::new(ErrorReason::ShuttingDown).into_status(
            Code::Unavailable,
            "the producer is shutting down; reconnect and resume from your cursor",
            Some(Duration::from_secs(1)),
        )
    }

    /// What the reader sees of a producer restart, step by step, as `run` drives it: connected,
    /// the stream ends with SHUTTING_DOWN, connections are refused a few times, the new
    /// producer refuses the old cursor (another log), the reader connects again.
    fn producer_restart(r: &mut Reader) {
        r.set_connected(true);
        r.set_connected(false);
        r.move_on(&shutting_down());
        for _ in 0..3 {
            r.move_on(&Status::unavailable("tcp connect error"));
        }
        assert_eq!(
            r.out_of_range(&out_of_range(Some(ahead("new", 500, 1, 10)))),
            Next::Now
        );
        r.set_connected(true);
    }

    #[tokio::test]
    async fn a_producer_restart_logs_one_line_per_event_at_its_level() {
        let (out, _guard) = capture(false);
        let (mut r, _stats) = reader(vec![], cursor(Some("old"), Some(500)));
        producer_restart(&mut r);
        // A new outage is news again.
        r.set_connected(false);
        r.move_on(&Status::unavailable("tcp connect error"));

        let lines = out.lines();
        let at = |level: &str| -> Vec<&String> {
            lines
                .iter()
                .filter(|l| l.trim_start().starts_with(level))
                .collect()
        };
        let (info, warn, debug) = (at("INFO"), at("WARN"), at("DEBUG"));
        assert_eq!(info.len(), 3, "{lines:#?}");
        assert!(info[0].contains("connected to producer after_sequence=500 log_id=old"));
        assert!(
            info[1].contains("the producer is shutting down"),
            "{}",
            info[1]
        );
        assert!(info[2].contains("connected to producer after_sequence=0 log_id=new"));
        assert_eq!(warn.len(), 3, "{lines:#?}");
        assert!(
            warn[0].contains("producer connection failed"),
            "{}",
            warn[0]
        );
        assert!(
            warn[0].contains(r#"code=UNAVAILABLE detail="tcp connect error" after_sequence=500"#),
            "{}",
            warn[0]
        );
        assert!(
            warn[1].contains("old_log_id=old new_log_id=new after_sequence=500"),
            "{}",
            warn[1]
        );
        assert!(
            warn[2].contains("producer connection failed"),
            "{}",
            warn[2]
        );
        assert_eq!(
            debug
                .iter()
                .filter(|l| l.contains("producer connection failed"))
                .count(),
            2,
            "the repeats: {lines:#?}"
        );
        for line in &lines {
            for debug_form in [
                "Some(",
                "None",
                "Cursor {",
                "Unavailable",
                "LongPoll",
                "Push",
            ] {
                assert!(!line.contains(debug_form), "{debug_form} in {line}");
            }
        }
    }

    #[tokio::test]
    async fn a_failure_fails_over_to_the_next_producer_at_once_and_backs_off_after_a_round() {
        let (out, _guard) = capture(false);
        let (mut r, stats) = reader_of(
            &["http://a:1", "http://b:2"],
            vec![],
            cursor(Some("L"), Some(7)),
        );
        r.set_connected(true);
        r.set_connected(false);
        assert_eq!(
            r.move_on(&Status::unavailable("tcp connect error")),
            Next::Now
        );
        let s = stats.snapshot();
        assert_eq!(
            (s.current_producer.as_str(), s.failovers),
            ("http://b:2", 1)
        );
        // B fails too: the whole list failed in a row, so back to A after a backoff.
        assert_eq!(r.move_on(&shutting_down()), Next::Backoff);
        // A fails again: B at once, as the round starts afresh.
        assert_eq!(
            r.move_on(&Status::unavailable("tcp connect error")),
            Next::Now
        );
        // B answers: the cursor is the same, and a failure of B goes on to A at once.
        r.set_connected(true);
        r.set_connected(false);
        assert_eq!(r.move_on(&Status::deadline_exceeded("deadline")), Next::Now);
        let s = stats.snapshot();
        assert_eq!(
            (s.current_producer.as_str(), s.failovers),
            ("http://a:1", 4)
        );
        assert_eq!(r.cursor(), &cursor(Some("L"), Some(7)));

        let lines = out.lines();
        let failovers: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("failing over to the next producer"))
            .collect();
        assert_eq!(failovers.len(), 4, "{lines:#?}");
        assert!(
            failovers[0].trim_start().starts_with("WARN")
                && failovers[0].contains(
                    r#"from_producer=http://a:1 to_producer=http://b:2 code=UNAVAILABLE detail="tcp connect error" after_sequence=7 backoff=false"#
                ),
            "{}",
            failovers[0]
        );
        assert!(
            failovers[1].trim_start().starts_with("INFO")
                && failovers[1].contains("the producer is shutting down")
                && failovers[1].contains("from_producer=http://b:2 to_producer=http://a:1")
                && failovers[1].contains("backoff=true"),
            "{}",
            failovers[1]
        );
        // The same failure of A again before any answer: a repeat, at DEBUG.
        assert!(
            failovers[2].trim_start().starts_with("DEBUG"),
            "{}",
            failovers[2]
        );
        assert!(
            failovers[3].trim_start().starts_with("WARN")
                && failovers[3].contains(
                    "from_producer=http://b:2 to_producer=http://a:1 code=DEADLINE_EXCEEDED"
                ),
            "{}",
            failovers[3]
        );
    }

    #[tokio::test]
    async fn json_logs_carry_the_same_fields_and_omit_the_unknown() {
        let (out, _guard) = capture(true);
        let (mut r, _stats) = reader(vec![], cursor(None, None));
        r.set_connected(true);
        r.set_connected(false);
        r.move_on(&Status::unavailable("tcp connect error"));
        r.accept("L", events(&[7]), 7);
        r.start_over("M");

        let lines: Vec<serde_json::Value> = out
            .lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let find = |message: &str| {
            lines
                .iter()
                .find(|l| l["message"].as_str().unwrap().starts_with(message))
                .unwrap_or_else(|| panic!("no {message:?} in {lines:#?}"))
        };
        let connected = find("connected to producer");
        assert!(connected.get("after_sequence").is_none(), "{connected}");
        assert!(connected.get("log_id").is_none(), "{connected}");
        let failed = find("producer connection failed");
        assert_eq!(failed["code"], "UNAVAILABLE");
        assert!(failed.get("after_sequence").is_none(), "{failed}");
        assert_eq!(find("reading log")["log_id"], "L");
        let changed = find("the producer's log changed");
        assert_eq!(changed["old_log_id"], "L");
        assert_eq!(changed["new_log_id"], "M");
        assert_eq!(changed["after_sequence"], 7);
    }
}
