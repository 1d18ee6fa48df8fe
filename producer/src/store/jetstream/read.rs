//! Reads older than the tail cache: find the message holding the first sequence asked for,
//! then direct-get messages from there, a few in flight at once.
//!
//! Finding the message: log sequences grow with stream sequences, so the index (positions
//! the follower and earlier reads saw) brackets it, and a binary search of direct gets between
//! the two nearest known messages finds it. A reader catching up reads on from where its last
//! read ended: the message after the last one it read, which the search asks for first, and
//! which the read then uses rather than getting it again.
//!
//! Only as many gets are sent as the read is expected to need (from the size of the last
//! message read): a get sent beyond that is answered, bytes and all, and thrown away. Before
//! that bound, a catch-up of 1,000-event reads over 1,000-event messages sent five gets per
//! read and used one: the producer took 373–393 bytes per event from NATS, a raw ordered
//! consumer 92 (`pushpull-bench --only jetstream`).

use bytes::Bytes;
use futures_util::{StreamExt, stream::FuturesOrdered};

use super::{Shared, body, body::Span};
use crate::store::{ReadRange, Record, StoreError};

/// Direct gets in flight while a read goes through consecutive messages.
const WINDOW: usize = 4;

pub(super) async fn read(shared: &Shared, range: ReadRange) -> Result<Vec<Record>, StoreError> {
    let position = *shared.lock_position();
    let expired = || StoreError::Expired {
        from: range.from,
        oldest: shared.lock_position().bounds.oldest,
    };
    if range.from < position.bounds.oldest {
        return Err(expired());
    }
    let to = range.to.min(position.bounds.head);
    if range.from > to {
        return Ok(Vec::new());
    }
    let Some(start) = locate(shared, range.from, position.stream_seq).await? else {
        return Err(expired());
    };
    let mut out = Collected {
        records: Vec::new(),
        bytes: 0,
        range,
        to,
        wanted: (to - range.from + 1).min(range.max_records as u64),
    };
    // Events the next message is expected to hold: as many as the last one.
    let mut per_message = start.span.events.max(1);
    let mut next = start.stream_seq;
    if let Some(payload) = start.payload {
        next += 1;
        if out.take(shared, start.stream_seq, start.span, &payload)? {
            return Ok(out.records);
        }
    }
    let mut inflight = FuturesOrdered::new();
    loop {
        while inflight.len() < WINDOW
            && next <= position.stream_seq
            && out.expected(inflight.len(), per_message) < out.wanted
        {
            inflight.push_back(shared.get(next));
            next += 1;
        }
        let Some(got) = inflight.next().await else {
            break;
        };
        let Some((stream_seq, span, payload)) = got? else {
            // Removed by retention while this read went on.
            if out.records.is_empty() {
                return Err(expired());
            }
            break;
        };
        shared.index_insert(stream_seq, span);
        if span.events > 0 {
            per_message = span.events;
        }
        if out.take(shared, stream_seq, span, &payload)? {
            break;
        }
    }
    Ok(out.records)
}

/// What a read has collected, and within what.
struct Collected {
    records: Vec<Record>,
    bytes: usize,
    range: ReadRange,
    /// The last sequence to read (the range's end, or the head).
    to: u64,
    /// Records the read can return at most.
    wanted: u64,
}

impl Collected {
    /// Takes the records of one message that the read wants; true once it has all it wants.
    fn take(
        &mut self,
        shared: &Shared,
        stream_seq: u64,
        span: Span,
        payload: &Bytes,
    ) -> Result<bool, StoreError> {
        if span.events == 0 {
            return Ok(false);
        }
        for record in body::records(span, payload).map_err(|d| shared.corrupt(stream_seq, d))? {
            if record.sequence < self.range.from {
                continue;
            }
            if record.sequence > self.to || self.full() {
                return Ok(true);
            }
            self.bytes += record.encoded.len();
            self.records.push(record);
        }
        Ok(span.last() >= self.to || self.full())
    }

    fn full(&self) -> bool {
        self.records.len() >= self.range.max_records
            || (self.bytes >= self.range.max_bytes && !self.records.is_empty())
    }

    /// Records expected once the gets in flight are answered.
    fn expected(&self, inflight: usize, per_message: u64) -> u64 {
        self.records.len() as u64 + inflight as u64 * per_message
    }
}

/// The message holding a sequence: where it is, what it holds, and its body if finding it
/// meant getting it.
struct Located {
    stream_seq: u64,
    span: Span,
    payload: Option<Bytes>,
}

/// The message holding log sequence `sequence`, or `None` when retention has removed it.
/// `last` is the last stream sequence committed.
async fn locate(shared: &Shared, sequence: u64, last: u64) -> Result<Option<Located>, StoreError> {
    loop {
        // The index's lock is let go before the position's is taken (the follower takes
        // them the other way round).
        let found = shared.lock_index().find(sequence);
        let (mut lo, mut hi, mut next_first) = match found {
            Ok((stream_seq, span)) => {
                return Ok(Some(Located {
                    stream_seq,
                    span,
                    payload: None,
                }));
            }
            Err((below, above)) => (
                below.map_or(shared.lock_position().first_stream_seq, |(s, _)| s + 1),
                above.map_or(last, |s| s - 1),
                // Reading on from a message read before: the next message holds the next
                // sequence (only the genesis holds none, and it comes first).
                below.is_some_and(|(_, span)| span.last() + 1 == sequence),
            ),
        };
        // Binary search between the two nearest known messages.
        loop {
            if lo > hi {
                return Err(shared.corrupt(lo, format!("no message holds log sequence {sequence}")));
            }
            let mid = if std::mem::take(&mut next_first) {
                lo
            } else {
                lo + (hi - lo) / 2
            };
            match shared.get(mid).await? {
                None => {
                    // Gone: retention removes from the front, so everything below is too.
                    if mid >= last {
                        return Ok(None);
                    }
                    lo = mid + 1;
                }
                Some((stream_seq, span, payload)) => {
                    shared.index_insert(stream_seq, span);
                    if span.contains(sequence) {
                        return Ok(Some(Located {
                            stream_seq,
                            span,
                            payload: Some(payload),
                        }));
                    }
                    if span.events == 0 || span.last() < sequence {
                        lo = stream_seq + 1;
                    } else {
                        hi = stream_seq - 1;
                    }
                }
            }
            if lo > hi {
                // Not bracketed as the index said (thinned meanwhile): look again.
                break;
            }
        }
        if shared.lock_position().bounds.oldest > sequence {
            return Ok(None);
        }
    }
}
