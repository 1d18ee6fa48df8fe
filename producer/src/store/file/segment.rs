//! One segment file: its record framing, and the recovery scan that checks it at start.
//!
//! A record is a 16-byte header and a body:
//!
//! ```text
//! offset 0   u32 LE  body length; the top bit set on the last record of a Publish's batch
//! offset 4   u32 LE  CRC32C of bytes 8.. (the sequence and the body), then of that bit as a byte
//! offset 8   u64 LE  sequence
//! offset 16  body    the event's pushpull.v1.Event encoding, as readers receive it
//! ```
//!
//! The checksum covers the sequence too, so a record moved or duplicated by a bad write is
//! caught as surely as a flipped bit. The batch-end bit keeps a Publish atomic across a crash:
//! records after the last batch end were a batch cut short, and recovery drops them all. See
//! docs/storage.md.

use std::{
    fs::File,
    io,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    time::SystemTime,
};

use bytes::Bytes;
use pushpull::wire::EventView;

use crate::store::Record;

/// Bytes before each record's body.
pub const HEADER: usize = 16;

/// The recovery scan and reads keep an index entry (sequence, offset) at least this often.
pub const INDEX_EVERY_BYTES: u64 = 4096;

/// How much the recovery scan reads at a time.
const SCAN_CHUNK: usize = 4 * 1024 * 1024;

/// A segment's file name: its first sequence, zero-padded to 20 digits (Kafka style), so names
/// sort as numbers do.
pub fn file_name(first: u64) -> String {
    format!("{first:020}.log")
}

/// The first sequence a segment file name stands for; `None` for any other file.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The length field's top bit: this record ends its batch.
const BATCH_END: u32 = 1 << 31;

/// Appends one framed record to `out`; `batch_end` marks the last record of a Publish.
pub fn frame(sequence: u64, body: &[u8], batch_end: bool, out: &mut Vec<u8>) {
    let start = out.len();
    let len = body.len() as u32 | if batch_end { BATCH_END } else { 0 };
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(body);
    let crc = checksum(&out[start + 8..], batch_end);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(sequence_and_body: &[u8], batch_end: bool) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(sequence_and_body), &[u8::from(batch_end)])
}

/// A header's fields.
#[derive(Debug, Clone, Copy)]
struct Header {
    len: usize,
    batch_end: bool,
    crc: u32,
    sequence: u64,
}

fn header(bytes: &[u8]) -> Header {
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    Header {
        len: (len & !BATCH_END) as usize,
        batch_end: len & BATCH_END != 0,
        crc: u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")),
        sequence: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
    }
}

/// True when `frame` (a header and at least `len` body bytes) holds a record whose checksum
/// matches.
fn checksum_ok(h: &Header, frame: &[u8]) -> bool {
    checksum(&frame[8..HEADER + h.len], h.batch_end) == h.crc
}

/// How a segment's scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Every byte belongs to a good record.
    Clean,
    /// The bytes from `offset` to the end are a write cut short by a crash: a partial record,
    /// blocks never written and read back as zeros, or whole records of a batch whose last
    /// record is missing, with no good record after them.
    Torn {
        offset: u64,
        bytes: u64,
        detail: String,
    },
    /// A record at `offset` is bad, yet good records follow (or the bad record is not at the
    /// end): not a cut-short write but damage. `cut` is where the log can be cut to keep only
    /// whole batches (`--truncate-corrupt`).
    Corrupt {
        offset: u64,
        cut: u64,
        detail: String,
    },
}

/// What the recovery scan learnt of one segment.
#[derive(Debug, Clone)]
pub struct Scanned {
    /// Sequence of the last good record that ends a batch; `first - 1` when there is none.
    pub last: u64,
    /// Bytes of good, whole batches from the start: where the next record goes.
    pub len: u64,
    /// (sequence, offset) of the first record and then one record at least every
    /// [`INDEX_EVERY_BYTES`].
    pub index: Vec<(u64, u64)>,
    /// `produced_at` of the last good record.
    pub last_time: Option<SystemTime>,
    pub end: End,
}

/// Scans a segment from the start, checking every record's length, checksum and sequence
/// (`first`, `first + 1`, …) without decoding the bodies, except the last one's timestamp.
/// `max_body` bounds a plausible length: a header claiming more is damage, not a record.
pub fn scan(file: &File, first: u64, max_body: usize) -> io::Result<Scanned> {
    let file_len = file.metadata()?.len();
    let mut index = Vec::new();
    let mut next = first;
    let mut offset = 0u64; // of the chunk's start in the file
    let mut pos = 0usize; // within the chunk
    let mut chunk = Vec::new();
    let mut last_indexed: Option<u64> = None;
    // The end of the last whole batch: (bytes, last sequence, its record's offset and length).
    let mut whole: (u64, u64, Option<(u64, usize)>) = (0, first - 1, None);
    let bad = loop {
        // Refill when less than a header, or less than the record in hand, is buffered.
        let buffered = chunk.len() - pos;
        let need = if buffered >= HEADER {
            HEADER + header(&chunk[pos..]).len.min(max_body)
        } else {
            HEADER
        };
        if buffered < need && offset + (chunk.len() as u64) < file_len {
            chunk.drain(..pos);
            offset += pos as u64;
            pos = 0;
            let want = SCAN_CHUNK.max(need);
            let read_to = (offset + want as u64).min(file_len);
            let start = chunk.len();
            chunk.resize((read_to - offset) as usize, 0);
            file.read_exact_at(&mut chunk[start..], offset + start as u64)?;
            continue;
        }
        let at = offset + pos as u64;
        if buffered == 0 {
            break None;
        }
        let bad = |detail: String| classify(file, file_len, at, next, max_body, detail);
        if buffered < HEADER {
            break Some(bad(format!("{buffered} bytes, less than a record header"))?);
        }
        let h = header(&chunk[pos..]);
        if h.len > max_body {
            break Some(bad(format!(
                "record length {} exceeds the largest possible event ({max_body})",
                h.len
            ))?);
        }
        if buffered < HEADER + h.len {
            break Some(bad(format!(
                "a record of {} bytes is cut off after {buffered}",
                HEADER + h.len
            ))?);
        }
        if !checksum_ok(&h, &chunk[pos..]) {
            break Some(bad("checksum mismatch".to_owned())?);
        }
        if h.sequence != next {
            break Some(bad(format!(
                "sequence {} where {next} was expected",
                h.sequence
            ))?);
        }
        if last_indexed.is_none_or(|o| at >= o + INDEX_EVERY_BYTES) {
            index.push((next, at));
            last_indexed = Some(at);
        }
        next += 1;
        pos += HEADER + h.len;
        if h.batch_end {
            whole = (at + (HEADER + h.len) as u64, h.sequence, Some((at, h.len)));
        }
    };
    let (len, last, last_record) = whole;
    let end = match bad {
        Some(Bad::Corrupt { offset, detail }) => End::Corrupt {
            offset,
            cut: len,
            detail,
        },
        Some(Bad::Torn { offset, detail }) if len == offset => End::Torn {
            offset,
            bytes: file_len - offset,
            detail,
        },
        Some(Bad::Torn { offset, detail }) => End::Torn {
            offset: len,
            bytes: file_len - len,
            detail: format!(
                "{detail} at byte {offset}, after {} records of a batch whose last record is missing",
                next - 1 - last
            ),
        },
        None if len == file_len => End::Clean,
        None => End::Torn {
            offset: len,
            bytes: file_len - len,
            detail: format!(
                "{} whole records of a batch whose last record is missing",
                next - 1 - last
            ),
        },
    };
    index.retain(|&(_, o)| o < len);
    let last_time = match last_record {
        Some((at, body_len)) => {
            let mut body = vec![0; body_len];
            file.read_exact_at(&mut body, at + HEADER as u64)?;
            EventView::parse(&body).ok().map(|v| v.produced_at)
        }
        None => None,
    };
    Ok(Scanned {
        last,
        len,
        index,
        last_time,
        end,
    })
}

/// A bad spot found by the scan, before the cut point is known.
enum Bad {
    Torn { offset: u64, detail: String },
    Corrupt { offset: u64, detail: String },
}

/// Decides whether a bad record at `at` is a torn tail or damage: a torn write leaves nothing
/// good after it, so the rest of the file is searched for any good record with a later
/// sequence. Only this slow path reads past the bad spot.
fn classify(
    file: &File,
    file_len: u64,
    at: u64,
    next: u64,
    max_body: usize,
    detail: String,
) -> io::Result<Bad> {
    let mut rest = vec![0; (file_len - at) as usize];
    file.read_exact_at(&mut rest, at)?;
    if rest.iter().all(|&b| b == 0) {
        return Ok(Bad::Torn {
            offset: at,
            detail: format!("{} zero bytes, never written", rest.len()),
        });
    }
    for start in 1..rest.len().saturating_sub(HEADER - 1) {
        let h = header(&rest[start..]);
        let plausible = h.sequence >= next
            && h.sequence - next < (1 << 32)
            && h.len <= max_body
            && start + HEADER + h.len <= rest.len();
        if plausible && checksum_ok(&h, &rest[start..]) {
            return Ok(Bad::Corrupt {
                offset: at,
                detail: format!(
                    "{detail}, and a good record (sequence {}) follows at byte {}",
                    h.sequence,
                    at + start as u64
                ),
            });
        }
    }
    Ok(Bad::Torn { offset: at, detail })
}

/// Reads the records of sequences `from..=to` from one segment, starting at `offset` (an index
/// entry at or before `from`) and never past `len` (what is committed), stopping after
/// `max_records` records or `max_bytes` of bodies. `record_size` (header included) sizes the
/// first `pread`. Checks every checksum: damage is an error, never data.
#[allow(clippy::too_many_arguments)]
pub fn read(
    file: &File,
    path: &Path,
    mut offset: u64,
    len: u64,
    from: u64,
    to: u64,
    max_records: usize,
    max_bytes: usize,
    record_size: usize,
    out: &mut Vec<Record>,
) -> Result<(), ReadError> {
    let mut bytes = 0usize;
    // `out` may hold records of earlier segments of the same read: the limits count this
    // segment's.
    let start = out.len();
    let read = |out: &Vec<Record>| out.len() - start;
    // A first guess at what the wanted records take (the byte limit, or that many records of
    // the segment's average size `record_size`, whichever is less), plus the records skipped
    // before `from` (at most an index gap); a read that needs more reads on. Reading the whole
    // byte limit each time would copy megabytes for a batch of a thousand small events.
    let mut want = max_bytes
        .min(max_records.saturating_mul(record_size))
        .saturating_add(INDEX_EVERY_BYTES as usize + record_size)
        .clamp(16 * 1024, 4 * 1024 * 1024);
    while offset < len && read(out) < max_records && (bytes < max_bytes || read(out) == 0) {
        let size = want.min((len - offset) as usize);
        // The `pread` goes into this thread's scratch buffer, reused from read to read, and
        // only the wanted records are copied out, into one allocation they then share: a fresh
        // buffer per read costed more in page faults than the read itself.
        let (pos, done) = SCRATCH.with_borrow_mut(|buf| -> Result<(usize, bool), ReadError> {
            if buf.len() < size {
                buf.resize(size, 0);
            }
            let buf = &mut buf[..size];
            file.read_exact_at(buf, offset)
                .map_err(|err| ReadError::Io(path.to_owned(), err))?;
            let mut pos = 0usize;
            let mut wanted: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
            let mut done = false;
            while pos + HEADER <= buf.len() {
                let h = header(&buf[pos..]);
                if pos + HEADER + h.len > buf.len() {
                    break;
                }
                let at = offset + pos as u64;
                if !checksum_ok(&h, &buf[pos..]) {
                    return Err(ReadError::Corrupt {
                        path: path.to_owned(),
                        offset: at,
                        detail: format!("checksum mismatch (record of sequence {})", h.sequence),
                    });
                }
                pos += HEADER + h.len;
                if h.sequence < from {
                    continue;
                }
                let taken = read(out) + wanted.len();
                if h.sequence > to || taken >= max_records || (bytes >= max_bytes && taken > 0) {
                    done = true;
                    break;
                }
                bytes += h.len;
                wanted.push((h.sequence, pos - h.len..pos));
            }
            if let (Some(first), Some(last)) = (wanted.first(), wanted.last()) {
                let base = first.1.start;
                let shared = Bytes::copy_from_slice(&buf[base..last.1.end]);
                out.extend(wanted.into_iter().map(|(sequence, body)| Record {
                    sequence,
                    encoded: shared.slice(body.start - base..body.end - base),
                }));
            }
            if pos == 0 {
                // One record larger than the buffer: read it whole next time, unless it runs
                // past what is committed, which a committed segment never does.
                let need = (buf.len() >= HEADER).then(|| HEADER + header(buf).len);
                match need {
                    Some(need) if offset + need as u64 <= len => want = need,
                    _ => {
                        return Err(ReadError::Corrupt {
                            path: path.to_owned(),
                            offset,
                            detail: "a record runs past the committed end of the segment".into(),
                        });
                    }
                }
            }
            Ok((pos, done))
        })?;
        if done {
            return Ok(());
        }
        offset += pos as u64;
    }
    Ok(())
}

thread_local! {
    /// Each reading thread's `pread` buffer (the blocking pool's threads): up to 4 MiB, kept.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Why [`read`] failed.
#[derive(Debug)]
pub enum ReadError {
    Io(PathBuf, io::Error),
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_as_numbers_and_parse_back() {
        assert_eq!(file_name(1), "00000000000000000001.log");
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        for other in [
            "1.log",
            "00000000000000000001.txt",
            "lock",
            "0000000000000000000a.log",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn a_frame_checks_out_and_a_flipped_bit_does_not() {
        let mut out = Vec::new();
        frame(7, b"body", true, &mut out);
        assert_eq!(out.len(), HEADER + 4);
        let h = header(&out);
        assert_eq!((h.len, h.sequence, h.batch_end), (4, 7, true));
        assert!(checksum_ok(&h, &out));
        // The batch-end bit is covered too: a record cannot lose or gain it unnoticed.
        let mut unmarked = out.clone();
        unmarked[3] ^= 0x80;
        assert!(!header(&unmarked).batch_end);
        assert!(!checksum_ok(&header(&unmarked), &unmarked));
        for i in 4..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            assert!(
                !checksum_ok(&header(&bad), &bad),
                "flip at {i} went unnoticed"
            );
        }
    }
}

/// A segment is read back from disk after crashes and, rarely, damage: whatever its bytes, the
/// scan and the reads answer with whole, checked records, a torn tail or a precise corruption,
/// never a panic and never a record that was not written.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    const MAX_BODY: usize = 1 << 16;

    /// A segment of `batches` from sequence `first`: its bytes, each record's (offset, end,
    /// sequence, body), and where each batch ends.
    struct Written {
        bytes: Vec<u8>,
        records: Vec<(u64, u64, u64, Vec<u8>)>,
        batch_ends: Vec<(u64, u64)>,
    }

    fn write(first: u64, batches: &[Vec<Vec<u8>>]) -> Written {
        let mut w = Written {
            bytes: Vec::new(),
            records: Vec::new(),
            batch_ends: Vec::new(),
        };
        let mut sequence = first;
        for batch in batches {
            for (i, body) in batch.iter().enumerate() {
                let at = w.bytes.len() as u64;
                frame(sequence, body, i + 1 == batch.len(), &mut w.bytes);
                w.records
                    .push((at, w.bytes.len() as u64, sequence, body.clone()));
                sequence += 1;
            }
            w.batch_ends.push((w.bytes.len() as u64, sequence - 1));
        }
        w
    }

    fn file_of(bytes: &[u8]) -> File {
        let file = tempfile::tempfile().expect("a temporary file");
        file.write_all_at(bytes, 0).expect("written");
        file
    }

    fn read_all(file: &File, len: u64, first: u64, last: u64) -> Result<Vec<Record>, ReadError> {
        let mut out = Vec::new();
        read(
            file,
            Path::new("segment"),
            0,
            len,
            first,
            last,
            usize::MAX,
            usize::MAX,
            64,
            &mut out,
        )?;
        Ok(out)
    }

    fn batches() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
        let body = prop::collection::vec(any::<u8>(), 0..48);
        prop::collection::vec(prop::collection::vec(body, 1..4), 1..6)
    }

    /// What happens to a segment on disk.
    #[derive(Debug, Clone)]
    enum Damage {
        None,
        /// Cut at this fraction of its length (a crash mid-write).
        Truncate(f64),
        /// One byte XORed with a non-zero mask (bit rot, a bad write).
        Flip(f64, u8),
        /// Both: damage, then a crash.
        FlipThenTruncate(f64, u8, f64),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            Just(Damage::None),
            (0.0..1.0).prop_map(Damage::Truncate),
            (0.0..1.0, 1..=255u8).prop_map(|(at, mask)| Damage::Flip(at, mask)),
            (0.0..1.0, 1..=255u8, 0.0..1.0)
                .prop_map(|(at, mask, cut)| Damage::FlipThenTruncate(at, mask, cut)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn names_parse_back_and_nothing_else_parses(name in prop_oneof![
            any::<String>(),
            "[0-9]{18,22}\\.log",
            any::<u64>().prop_map(file_name),
        ]) {
            if let Some(first) = parse_name(&name) {
                prop_assert_eq!(file_name(first), name);
            }
        }

        #[test]
        fn random_bytes_scan_to_no_records_and_read_nothing(
            first in 1u64..u64::MAX / 2,
            bytes in prop::collection::vec(any::<u8>(), 0..2048),
        ) {
            let file = file_of(&bytes);
            let scanned = scan(&file, first, MAX_BODY).unwrap();
            // Random bytes hold a record with a good checksum once in 2^32.
            prop_assert_eq!((scanned.last, scanned.len), (first - 1, 0));
            let len = bytes.len() as u64;
            match scanned.end {
                End::Clean => prop_assert!(bytes.is_empty()),
                End::Torn { offset, bytes: dropped, .. } => {
                    prop_assert_eq!((offset, dropped), (0, len));
                }
                End::Corrupt { offset, cut, .. } => {
                    prop_assert!(offset < len);
                    prop_assert_eq!(cut, 0);
                }
            }
            prop_assert!(read_all(&file, scanned.len, first, first).unwrap().is_empty());
        }

        /// A good segment after a crash or damage: the scan keeps exactly the whole batches
        /// before the first bad byte, calls the rest torn when nothing good follows it and
        /// corrupt when something does, and reads return exactly what was written.
        #[test]
        fn a_damaged_segment_keeps_exactly_the_whole_batches_before_the_damage(
            first in 1u64..1_000_000,
            batches in batches(),
            damage in damage(),
        ) {
            let w = write(first, &batches);
            let total = w.bytes.len();
            let at = |f: f64| ((f * total as f64) as usize).min(total - 1);
            let mut bytes = w.bytes.clone();
            let (mut flipped, mut cut) = (None, total);
            match damage {
                Damage::None => {}
                Damage::Truncate(c) => cut = at(c),
                Damage::Flip(f, mask) => flipped = Some((at(f), mask)),
                Damage::FlipThenTruncate(f, mask, c) => {
                    flipped = Some((at(f), mask));
                    cut = at(c);
                }
            }
            if let Some((i, mask)) = flipped {
                bytes[i] ^= mask;
            }
            bytes.truncate(cut);
            // The first bad byte: the start of the flipped record, or the cut.
            let flipped_record = flipped
                .filter(|&(i, _)| i < cut)
                .map(|(i, _)| w.records.iter().position(|r| r.0 <= i as u64 && (i as u64) < r.1).unwrap());
            let good_until = flipped_record.map_or(cut as u64, |r| w.records[r].0);
            let (len, last) = w
                .batch_ends
                .iter()
                .rev()
                .find(|&&(end, _)| end <= good_until)
                .copied()
                .unwrap_or((0, first - 1));

            let file = file_of(&bytes);
            let scanned = scan(&file, first, MAX_BODY).unwrap();

            prop_assert_eq!((scanned.len, scanned.last), (len, last));
            // A good record after the bad one: damage, not a write cut short.
            let good_after = flipped_record
                .is_some_and(|r| w.records[r + 1..].iter().any(|next| next.1 <= cut as u64));
            match scanned.end {
                End::Clean => prop_assert_eq!(len, bytes.len() as u64),
                End::Torn { offset, bytes: dropped, .. } => {
                    prop_assert!(!good_after, "a torn tail with good records after it");
                    prop_assert_eq!((offset, dropped), (len, bytes.len() as u64 - len));
                }
                End::Corrupt { offset, cut: cut_at, .. } => {
                    prop_assert!(good_after, "corrupt at {offset} with nothing good after it");
                    prop_assert_eq!(offset, good_until);
                    prop_assert_eq!(cut_at, len);
                }
            }
            for &(_, o) in &scanned.index {
                prop_assert!(o < len);
            }

            let records = read_all(&file, scanned.len, first, scanned.last).unwrap();
            let expected: Vec<(u64, &[u8])> = w
                .records
                .iter()
                .take_while(|r| r.1 <= len)
                .map(|r| (r.2, &r.3[..]))
                .collect();
            let got: Vec<(u64, &[u8])> =
                records.iter().map(|r| (r.sequence, &r.encoded[..])).collect();
            prop_assert_eq!(got, expected);
        }

        /// Damage to a segment after it was checked at open is found by the read and refused:
        /// a read checks every record's checksum, and hands out no data past damage.
        #[test]
        fn a_read_over_damage_is_an_error_not_data(
            first in 1u64..1_000_000,
            batches in batches(),
            flip in 0.0..1.0,
            mask in 1..=255u8,
        ) {
            let w = write(first, &batches);
            let len = w.bytes.len() as u64;
            let last = w.batch_ends.last().unwrap().1;
            let mut bytes = w.bytes.clone();
            let i = ((flip * len as f64) as usize).min(bytes.len() - 1);
            bytes[i] ^= mask;
            let file = file_of(&bytes);

            match read_all(&file, len, first, last) {
                Err(ReadError::Corrupt { offset, .. }) => prop_assert!(offset <= i as u64),
                Err(ReadError::Io(_, err)) => prop_assert!(false, "I/O error {err}"),
                Ok(records) => prop_assert!(false, "{} records read over damage", records.len()),
            }
        }
    }
}
