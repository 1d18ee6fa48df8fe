//! Reads older than the tail cache: find the message holding the first sequence asked for,
//! then direct-get messages from there, a few in flight at once.
//!
//! Finding the message: log sequences grow with stream sequences, so the index (positions
//! the follower and earlier reads saw) brackets it, and a binary search of direct gets between
//! the two nearest known messages finds it. A reader catching up reads on from there: each
//! read's last message is in the index for the next.

use futures_util::{StreamExt, stream::FuturesOrdered};

use super::{Shared, body};
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
    let mut records = Vec::new();
    let mut bytes = 0usize;
    let mut next = start;
    let mut inflight = FuturesOrdered::new();
    loop {
        while inflight.len() < WINDOW && next <= position.stream_seq {
            inflight.push_back(shared.get(next));
            next += 1;
        }
        let Some(got) = inflight.next().await else {
            break;
        };
        let Some((stream_seq, span, payload)) = got? else {
            // Removed by retention while this read went on.
            if records.is_empty() {
                return Err(expired());
            }
            break;
        };
        shared.index_insert(stream_seq, span);
        if span.events == 0 {
            continue;
        }
        for record in body::records(span, &payload).map_err(|d| shared.corrupt(stream_seq, d))? {
            if record.sequence < range.from {
                continue;
            }
            if record.sequence > to
                || records.len() >= range.max_records
                || (bytes >= range.max_bytes && !records.is_empty())
            {
                return Ok(records);
            }
            bytes += record.encoded.len();
            records.push(record);
        }
        if span.last() >= to {
            break;
        }
    }
    Ok(records)
}

/// The stream sequence of the message holding log sequence `sequence`, or `None` when
/// retention has removed it. `last` is the last stream sequence committed.
async fn locate(shared: &Shared, sequence: u64, last: u64) -> Result<Option<u64>, StoreError> {
    loop {
        // The index's lock is let go before the position's is taken (the follower takes
        // them the other way round).
        let found = shared.lock_index().find(sequence);
        let (mut lo, mut hi) = match found {
            Ok(stream_seq) => return Ok(Some(stream_seq)),
            Err((below, above)) => (
                below.map_or(shared.lock_position().first_stream_seq, |s| s + 1),
                above.map_or(last, |s| s - 1),
            ),
        };
        // Binary search between the two nearest known messages.
        loop {
            if lo > hi {
                return Err(shared.corrupt(lo, format!("no message holds log sequence {sequence}")));
            }
            let mid = lo + (hi - lo) / 2;
            match shared.get(mid).await? {
                None => {
                    // Gone: retention removes from the front, so everything below is too.
                    if mid >= last {
                        return Ok(None);
                    }
                    lo = mid + 1;
                }
                Some((stream_seq, span, _)) => {
                    shared.index_insert(stream_seq, span);
                    if span.contains(sequence) {
                        return Ok(Some(stream_seq));
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
