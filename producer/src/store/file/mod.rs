//! The file store: the log in segment files under `--data-dir`, crash-safe.
//!
//! - **Layout.** `meta.json` (format version, `log_id`), `lock` (held while a producer runs),
//!   and segments named by their first sequence (`00000000000000000001.log`), each a run of
//!   framed records ([`segment`]). New records go to the last segment; past `--segment-bytes`
//!   a new one begins. The format and the recovery rules are in docs/storage.md.
//! - **Acknowledged means durable.** Appends are queued to one writer thread, which writes
//!   every batch waiting (a group) with one `pwrite` and, with `--fsync always`, one
//!   `fdatasync`, and only then commits them to the tail (so readers see them) and answers the
//!   Publish calls. Concurrent publishers share a sync instead of each paying for one.
//! - **Nothing half appended.** A failed write is cut back (`ftruncate`) to where the group
//!   began, and every batch queued behind it fails too, so sequences stay gapless; disk full
//!   is [`StoreError::Full`], and appends work again once space is freed. A failed
//!   `fdatasync` leaves the page cache in an unknown state, so the store then refuses appends
//!   until a restart re-checks the log.
//! - **Reads** older than the tail cache run on the blocking pool: an in-memory sparse index
//!   (a (sequence, offset) pair every 4 KiB) finds the offset, one `pread` fetches the records,
//!   and each record's bytes are handed out as a slice of that read, checksums checked.
//! - **Recovery** at open scans every segment (lengths, checksums and sequences, not the
//!   payloads), truncates a torn tail with a warning and refuses damage unless
//!   `--truncate-corrupt` says to cut the log there.

mod segment;

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, RwLock, mpsc},
    thread::JoinHandle,
    time::{Instant, SystemTime},
};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::{
    Bounds, Entry, NewBatch, ReadRange, Record, Retention, Store, StoreError, StoreFuture,
    StoreKind, StoreMetrics, StoreStats, encode_entries,
};
use crate::log::{Tail, new_log_id};

/// The on-disk format this producer writes and reads (`meta.json`'s `format`).
pub const FORMAT_VERSION: u32 = 1;

const META: &str = "meta.json";
const LOCK: &str = "lock";

/// Most bytes of records one group commit writes; the rest wait for the next one.
const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;

/// `--fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncPolicy {
    /// fdatasync before a Publish is answered or its events are readable (group commit).
    Always,
    /// Written to the OS before a Publish is answered; synced when a segment is full and at
    /// shutdown. Survives a producer crash, not a machine crash.
    Never,
}

impl FsyncPolicy {
    /// As `--fsync` spells it.
    pub fn name(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Never => "never",
        }
    }
}

/// How the file store is set up.
#[derive(Debug, Clone)]
pub struct FileOptions {
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// A new segment begins once the current one holds this many bytes.
    pub segment_bytes: u64,
    pub retention: Retention,
    /// Cut the log at a damaged record instead of refusing to start.
    pub truncate_corrupt: bool,
    /// The largest event encoding a record can hold: a longer length in a header is damage.
    pub max_body_bytes: usize,
}

/// Why the file store could not open its directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "data directory {dir} is in use by another producer (it holds {lock}); stop that one, \
         or give this one another --data-dir"
    )]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error("data directory {dir}: {detail}")]
    Io { dir: PathBuf, detail: String },
    #[error(
        "corrupt log: {path} at byte {offset}: {detail}. The producer will not serve a damaged \
         log: restore the directory from a backup, or start once with --truncate-corrupt to \
         drop everything from that byte on"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error("{path}: format version {found}; this producer reads version {FORMAT_VERSION}")]
    Format { path: PathBuf, found: u32 },
}

/// What recovery did at open, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segments and events found.
    pub segments: usize,
    pub events: u64,
    /// (segment, offset, bytes dropped) for each cut: a torn tail, or damage cut by
    /// `--truncate-corrupt`.
    pub truncated: Vec<(PathBuf, u64, u64)>,
    /// Segments deleted because they followed a cut.
    pub removed: Vec<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: u32,
    log_id: String,
}

/// See the module docs.
#[derive(Debug)]
pub struct FileStore {
    inner: Arc<Inner>,
    queue: Arc<Mutex<Queue>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    recovery: Recovery,
}

/// The appenders' side of the writer's queue.
#[derive(Debug)]
struct Queue {
    /// The sequence the next batch gets.
    next: u64,
    /// `None` once closed.
    tx: Option<mpsc::Sender<Job>>,
    /// Set when a failed sync leaves the log in a state only a restart can check.
    failed: Option<StoreError>,
}

#[derive(Debug)]
enum Job {
    Append {
        entries: Vec<Entry>,
        reply: oneshot::Sender<Result<(u64, u64), StoreError>>,
    },
    Retain,
    Close(oneshot::Sender<Result<(), StoreError>>),
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    log_id: String,
    options: FileOptions,
    tail: Arc<Tail>,
    metrics: StoreMetrics,
    /// What is committed: readers never look past it.
    segments: RwLock<Segments>,
    /// Held (an advisory `flock`) while the store is open.
    _lock: File,
}

#[derive(Debug)]
struct Segments {
    list: BTreeMap<u64, Segment>,
    bounds: Bounds,
    bytes: u64,
}

#[derive(Debug)]
struct Segment {
    first: u64,
    /// Last committed sequence; `first - 1` while empty.
    last: u64,
    /// Committed bytes.
    len: u64,
    index: Vec<(u64, u64)>,
    last_time: Option<SystemTime>,
    path: PathBuf,
    /// For reads; shared with reads in flight, so deleting the file under them is safe.
    file: Arc<File>,
}

impl FileStore {
    /// Opens (or creates) the log in `options.dir`: takes the lock, checks every segment, and
    /// starts the writer. Blocking: call it before serving, or from `spawn_blocking`.
    pub fn open(
        options: FileOptions,
        tail: Arc<Tail>,
        metrics: StoreMetrics,
    ) -> Result<FileStore, OpenError> {
        let started = Instant::now();
        let dir = options.dir.clone();
        let io_err = |what: &str, err: io::Error| OpenError::Io {
            dir: dir.clone(),
            detail: format!("{what}: {err}"),
        };
        fs::create_dir_all(&dir).map_err(|e| io_err("cannot create it", e))?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err("cannot open its lock file", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked {
                    dir: dir.clone(),
                    lock: lock_path,
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err("cannot lock it", e)),
        }

        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for item in fs::read_dir(&dir).map_err(|e| io_err("cannot list it", e))? {
            let item = item.map_err(|e| io_err("cannot list it", e))?;
            if let Some(first) = item.file_name().to_str().and_then(segment::parse_name) {
                names.push((first, item.path()));
            }
        }
        names.sort();
        let log_id = read_or_create_meta(&dir, !names.is_empty())?;

        let mut recovery = Recovery::default();
        let mut list = BTreeMap::new();
        let mut cut = false;
        let last_index = names.len().saturating_sub(1);
        for (i, (first, path)) in names.iter().enumerate() {
            if cut {
                fs::remove_file(path).map_err(|e| io_err("cannot remove a segment", e))?;
                warn!(file = %path.display(), "removed a segment after the cut");
                recovery.removed.push(path.clone());
                continue;
            }
            let corrupt = |offset: u64, detail: String| OpenError::Corrupt {
                path: path.clone(),
                offset,
                detail,
            };
            // Sequences start at 1: a segment named for 0 was not written by a producer, and
            // every rule below counts on `first - 1` being a sequence.
            if *first == 0 {
                return Err(corrupt(
                    0,
                    "a segment named for sequence 0; sequences start at 1".into(),
                ));
            }
            if let Some(prev) = list.values().last().map(|s: &Segment| s.last)
                && *first != prev + 1
            {
                return Err(corrupt(
                    0,
                    format!(
                        "the segment starts at sequence {first}, but the one before it ends at {prev}"
                    ),
                ));
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| io_err("cannot open a segment", e))?;
            let scanned = segment::scan(&file, *first, options.max_body_bytes)
                .map_err(|e| io_err(&format!("cannot read {}", path.display()), e))?;
            let is_last = i == last_index;
            let end = match scanned.end {
                // Only the last write can be cut short: a sealed segment was synced whole.
                segment::End::Torn { offset, detail, .. } if !is_last => segment::End::Corrupt {
                    offset,
                    cut: offset,
                    detail: format!("{detail}, in a segment that is not the last"),
                },
                end => end,
            };
            let file_len = file
                .metadata()
                .map_err(|e| io_err("cannot stat a segment", e))?
                .len();
            match end {
                segment::End::Clean => {}
                segment::End::Torn {
                    offset,
                    bytes,
                    detail,
                } => {
                    warn!(
                        file = %path.display(),
                        offset,
                        bytes_dropped = bytes,
                        %detail,
                        "torn tail after a crash: truncating the last segment to its last whole batch"
                    );
                    truncate(&file, offset)
                        .map_err(|e| io_err("cannot truncate a torn tail", e))?;
                    recovery.truncated.push((path.clone(), offset, bytes));
                }
                segment::End::Corrupt {
                    offset,
                    cut: cut_at,
                    detail,
                } => {
                    if !options.truncate_corrupt {
                        return Err(corrupt(offset, detail));
                    }
                    let dropped = file_len - cut_at;
                    error!(
                        file = %path.display(),
                        offset,
                        cut_at,
                        bytes_dropped = dropped,
                        %detail,
                        "corrupt record: --truncate-corrupt cuts the log at the last whole batch before it"
                    );
                    truncate(&file, cut_at).map_err(|e| io_err("cannot truncate", e))?;
                    recovery.truncated.push((path.clone(), cut_at, dropped));
                    cut = true;
                }
            }
            if scanned.last < *first && !(is_last || cut) {
                return Err(corrupt(0, "an empty segment before the last one".into()));
            }
            list.insert(
                *first,
                Segment {
                    first: *first,
                    last: scanned.last,
                    len: scanned.len,
                    index: scanned.index,
                    last_time: scanned.last_time,
                    path: path.clone(),
                    file: Arc::new(file),
                },
            );
        }
        if cut {
            sync_dir(&dir).map_err(|e| io_err("cannot sync it", e))?;
        }
        // An empty segment left last by a cut is fine; an empty one before others is not.
        while list.len() > 1 {
            let (&first, seg) = list.iter().next_back().expect("not empty");
            if seg.last >= seg.first {
                break;
            }
            // A cut can leave the last segment empty: start writing after the one before.
            let path = seg.path.clone();
            list.remove(&first);
            fs::remove_file(&path).map_err(|e| io_err("cannot remove a segment", e))?;
            recovery.removed.push(path);
        }
        if list.is_empty() {
            let path = dir.join(segment::file_name(1));
            let file =
                create_segment(&dir, &path).map_err(|e| io_err("cannot create a segment", e))?;
            list.insert(
                1,
                Segment {
                    first: 1,
                    last: 0,
                    len: 0,
                    index: Vec::new(),
                    last_time: None,
                    path,
                    file: Arc::new(file),
                },
            );
        }
        let oldest = *list.keys().next().expect("not empty");
        let head = list.values().last().expect("not empty").last;
        let bytes = list.values().map(|s| s.len).sum();
        recovery.segments = list.len();
        recovery.events = head + 1 - oldest;
        let active = list.values().last().expect("not empty");
        let writer_file = OpenOptions::new()
            .write(true)
            .open(&active.path)
            .map_err(|e| io_err("cannot open the last segment", e))?;
        let (active_first, active_len) = (active.first, active.len);
        let active_last_indexed = active.index.last().map(|&(_, o)| o);

        let inner = Arc::new(Inner {
            dir: dir.clone(),
            log_id,
            options,
            tail,
            metrics,
            segments: RwLock::new(Segments {
                list,
                bounds: Bounds { oldest, head },
                bytes,
            }),
            _lock: lock,
        });
        let (tx, rx) = mpsc::channel();
        let queue = Arc::new(Mutex::new(Queue {
            next: head + 1,
            tx: Some(tx.clone()),
            failed: None,
        }));
        let writer = Writer {
            inner: Arc::clone(&inner),
            queue: Arc::clone(&queue),
            rx,
            file: writer_file,
            first: active_first,
            len: active_len,
            last_indexed: active_last_indexed,
            dirty: false,
        };
        let handle = std::thread::Builder::new()
            .name("pushpull-store".into())
            .spawn(move || writer.run())
            .map_err(|e| io_err("cannot start the writer thread", e))?;
        // Retention flags may have changed since the last run.
        let _ = tx.send(Job::Retain);
        info!(
            dir = %dir.display(),
            segments = recovery.segments,
            events = recovery.events,
            oldest,
            head,
            took = ?started.elapsed(),
            "file store opened"
        );
        Ok(FileStore {
            inner,
            queue,
            writer: Mutex::new(Some(handle)),
            recovery,
        })
    }

    /// What recovery found and did at open.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// fdatasync calls made so far: fewer than appends when group commit shares them.
    pub fn fsyncs(&self) -> u64 {
        self.inner.metrics.fsyncs().0
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        lock(&self.queue)
    }

    fn stop_writer(&self) {
        drop(self.queue().tx.take());
        if let Some(handle) = lock(&self.writer).take() {
            let _ = handle.join();
        }
    }
}

impl Drop for FileStore {
    /// Stops the writer (which syncs what is not yet durable) and waits for it, so the lock is
    /// free once the store is gone.
    fn drop(&mut self) {
        self.stop_writer();
    }
}

impl Store for FileStore {
    fn kind(&self) -> StoreKind {
        StoreKind::File
    }

    fn log_id(&self) -> &str {
        &self.inner.log_id
    }

    fn bounds(&self) -> Bounds {
        self.inner.segments().bounds
    }

    fn append(&self, batch: NewBatch) -> StoreFuture<'_, (u64, u64)> {
        let queued = (|| {
            let mut queue = self.queue();
            if let Some(err) = &queue.failed {
                return Err(err.clone());
            }
            let first = queue.next;
            let Some(tx) = &queue.tx else {
                return Err(StoreError::Closed);
            };
            // Taken under the queue lock, so `produced_at` never decreases along the log.
            let entries: Vec<Entry> = encode_entries(first, batch, SystemTime::now()).collect();
            let count = entries.len() as u64;
            let (reply, done) = oneshot::channel();
            tx.send(Job::Append { entries, reply })
                .map_err(|_| StoreError::Closed)?;
            queue.next += count;
            Ok(done)
        })();
        Box::pin(async move {
            match queued {
                Ok(done) => done.await.unwrap_or(Err(StoreError::Closed)),
                Err(err) => Err(err),
            }
        })
    }

    fn read(&self, range: ReadRange) -> StoreFuture<'_, Vec<Record>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || inner.read(range))
                .await
                .unwrap_or_else(|err| {
                    Err(StoreError::Io {
                        dir: PathBuf::new(),
                        detail: format!("a read task failed: {err}"),
                    })
                })
        })
    }

    fn enforce_retention(&self) {
        if let Some(tx) = &self.queue().tx {
            let _ = tx.send(Job::Retain);
        }
    }

    fn stats(&self) -> StoreStats {
        let segments = self.inner.segments();
        StoreStats {
            events: segments.bounds.head + 1 - segments.bounds.oldest,
            bytes: segments.bytes,
            segments: segments.list.len() as u64,
        }
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        let (reply, done) = oneshot::channel();
        let sent = match self.queue().tx.take() {
            Some(tx) => tx.send(Job::Close(reply)).is_ok(),
            None => false,
        };
        Box::pin(async move {
            let result = if sent {
                done.await.unwrap_or(Ok(()))
            } else {
                Ok(())
            };
            let handle = lock(&self.writer).take();
            if let Some(handle) = handle {
                let _ = tokio::task::spawn_blocking(move || handle.join()).await;
            }
            result
        })
    }
}

impl Inner {
    fn segments(&self) -> std::sync::RwLockReadGuard<'_, Segments> {
        self.segments.read().unwrap_or_else(|p| p.into_inner())
    }

    fn segments_mut(&self) -> std::sync::RwLockWriteGuard<'_, Segments> {
        self.segments.write().unwrap_or_else(|p| p.into_inner())
    }

    fn io_error(&self, err: &io::Error, doing: &str) -> StoreError {
        let detail = format!("{doing}: {err}");
        if matches!(
            err.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        ) {
            StoreError::Full {
                dir: self.dir.clone(),
                detail,
            }
        } else {
            StoreError::Io {
                dir: self.dir.clone(),
                detail,
            }
        }
    }

    /// Blocking: reads `range` from the segments, across segment ends.
    fn read(&self, range: ReadRange) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        let mut from = range.from;
        let mut bytes = 0usize;
        while from <= range.to && out.len() < range.max_records.max(1) {
            if bytes >= range.max_bytes && !out.is_empty() {
                break;
            }
            let (file, path, offset, len, last, record_size) = {
                let segments = self.segments();
                let oldest = segments.bounds.oldest;
                let found = segments.list.range(..=from).next_back();
                let Some((_, seg)) = found.filter(|_| from >= oldest) else {
                    return Err(StoreError::Expired { from, oldest });
                };
                if from > seg.last {
                    break;
                }
                let i = seg.index.partition_point(|&(s, _)| s <= from);
                let offset = i.checked_sub(1).map_or(0, |i| seg.index[i].1);
                let records = (seg.last + 1 - seg.first).max(1);
                (
                    Arc::clone(&seg.file),
                    seg.path.clone(),
                    offset,
                    seg.len,
                    seg.last,
                    (seg.len / records) as usize,
                )
            };
            let before = out.len();
            segment::read(
                &file,
                &path,
                offset,
                len,
                from,
                range.to.min(last),
                range.max_records.max(1) - out.len(),
                range.max_bytes.saturating_sub(bytes).max(1),
                record_size.max(segment::HEADER),
                &mut out,
            )
            .map_err(|err| match err {
                segment::ReadError::Io(path, err) => {
                    self.io_error(&err, &format!("cannot read {}", path.display()))
                }
                segment::ReadError::Corrupt {
                    path,
                    offset,
                    detail,
                } => {
                    error!(file = %path.display(), offset, %detail, "corrupt record: not served");
                    StoreError::Corrupt {
                        path,
                        offset,
                        detail,
                    }
                }
            })?;
            bytes += out[before..].iter().map(|r| r.encoded.len()).sum::<usize>();
            let reached = out.last().map_or(from - 1, |r| r.sequence);
            if reached < last.min(range.to) && out.len() == before {
                return Err(StoreError::Corrupt {
                    path,
                    offset,
                    detail: format!("sequence {from} is committed but was not found"),
                });
            }
            if reached < last {
                break; // a limit was reached inside this segment
            }
            from = last + 1;
        }
        Ok(out)
    }
}

/// The writer thread: the only code that writes segment files.
struct Writer {
    inner: Arc<Inner>,
    queue: Arc<Mutex<Queue>>,
    rx: mpsc::Receiver<Job>,
    /// The last segment, for writing.
    file: File,
    first: u64,
    len: u64,
    last_indexed: Option<u64>,
    /// Written but not yet synced (`--fsync never`).
    dirty: bool,
}

impl Writer {
    fn run(mut self) {
        while let Ok(job) = self.rx.recv() {
            let mut group = Vec::new();
            let mut other = None;
            let mut bytes = 0;
            match job {
                Job::Append { entries, reply } => {
                    bytes += entries.iter().map(|e| e.encoded.len()).sum::<usize>();
                    group.push((entries, reply));
                }
                job => other = Some(job),
            }
            while other.is_none() && bytes < MAX_GROUP_BYTES {
                match self.rx.try_recv() {
                    Ok(Job::Append { entries, reply }) => {
                        bytes += entries.iter().map(|e| e.encoded.len()).sum::<usize>();
                        group.push((entries, reply));
                    }
                    Ok(job) => other = Some(job),
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.append(group);
            }
            match other {
                Some(Job::Retain) => self.retain(),
                Some(Job::Close(reply)) => {
                    let _ = reply.send(self.finish());
                    return;
                }
                Some(Job::Append { .. }) | None => {}
            }
        }
        // Every sender is gone: the store was dropped without `close`.
        if let Err(err) = self.finish() {
            error!(%err, "file store: the final sync failed");
        }
    }

    /// Syncs what `--fsync never` left unsynced.
    fn finish(&mut self) -> Result<(), StoreError> {
        if self.dirty {
            self.sync()
                .map_err(|err| self.inner.io_error(&err, "final fdatasync"))?;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let started = Instant::now();
        self.file.sync_data()?;
        self.inner.metrics.observe_fsync(started.elapsed());
        self.dirty = false;
        Ok(())
    }

    /// One group commit.
    fn append(&mut self, group: Vec<(Vec<Entry>, Reply)>) {
        let first = group[0].0[0].event.sequence;
        if self.len >= self.inner.options.segment_bytes
            && let Err(err) = self.roll(first)
        {
            let err = self.inner.io_error(&err, "cannot start a new segment");
            return self.fail(group, err, false);
        }
        let size: usize = group
            .iter()
            .flat_map(|(entries, _)| entries)
            .map(|e| segment::HEADER + e.encoded.len())
            .sum();
        let mut buf = Vec::with_capacity(size);
        let mut index = Vec::new();
        let mut last_indexed = self.last_indexed;
        for (entries, _) in &group {
            for (i, entry) in entries.iter().enumerate() {
                let at = self.len + buf.len() as u64;
                if last_indexed.is_none_or(|o| at >= o + segment::INDEX_EVERY_BYTES) {
                    index.push((entry.event.sequence, at));
                    last_indexed = Some(at);
                }
                let batch_end = i + 1 == entries.len();
                segment::frame(entry.event.sequence, &entry.encoded, batch_end, &mut buf);
            }
        }
        if let Err(err) = self.file.write_all_at(&buf, self.len) {
            let err = self.inner.io_error(&err, "cannot write");
            // Nothing half appended: cut back whatever part of the group reached the file.
            if let Err(cut) = self.file.set_len(self.len) {
                let fatal = self
                    .inner
                    .io_error(&cut, "cannot cut back a failed write; restart the producer");
                return self.fail(group, fatal, true);
            }
            return self.fail(group, err, false);
        }
        match self.inner.options.fsync {
            FsyncPolicy::Always => {
                if let Err(err) = self.sync() {
                    // After a failed fdatasync the kernel may have dropped the dirty pages: what
                    // is on disk is unknown until recovery checks it at the next start.
                    let err = self.inner.io_error(
                        &err,
                        "fdatasync failed; appends are refused until the producer restarts",
                    );
                    let _ = self.file.set_len(self.len);
                    return self.fail(group, err, true);
                }
            }
            FsyncPolicy::Never => self.dirty = true,
        }
        self.len += buf.len() as u64;
        self.last_indexed = last_indexed;

        let last_entry = &group
            .last()
            .expect("not empty")
            .0
            .last()
            .expect("not empty")
            .event;
        let (last, last_time) = (last_entry.sequence, last_entry.produced_at);
        let (bounds, removed) = {
            let mut segments = self.inner.segments_mut();
            let seg = segments.list.get_mut(&self.first).expect("active segment");
            seg.last = last;
            seg.len = self.len;
            seg.index.extend(index);
            seg.last_time = Some(last_time);
            segments.bounds.head = last;
            segments.bytes += buf.len() as u64;
            let removed = expire(
                &mut segments,
                &self.inner.options.retention,
                SystemTime::now(),
            );
            (segments.bounds, removed)
        };
        self.remove(removed);
        let mut replies = Vec::with_capacity(group.len());
        let mut entries = Vec::with_capacity(group.iter().map(|(e, _)| e.len()).sum());
        for (batch, reply) in group {
            let range = (
                batch[0].event.sequence,
                batch[batch.len() - 1].event.sequence,
            );
            entries.extend(batch);
            replies.push((range, reply));
        }
        self.inner.tail.commit(entries, bounds);
        for (range, reply) in replies {
            let _ = reply.send(Ok(range));
        }
    }

    /// Fails `group` and everything queued behind it (their sequences follow the failed ones),
    /// and rewinds the next sequence to the committed head. `fatal` refuses appends from now on.
    fn fail(&mut self, group: Vec<(Vec<Entry>, Reply)>, err: StoreError, fatal: bool) {
        warn!(%err, "append failed: nothing of it was stored");
        for (_, reply) in group {
            let _ = reply.send(Err(err.clone()));
        }
        let mut later = Vec::new();
        let mut queue = lock(&self.queue);
        while let Ok(job) = self.rx.try_recv() {
            match job {
                Job::Append { reply, .. } => {
                    let _ = reply.send(Err(err.clone()));
                }
                job => later.push(job),
            }
        }
        queue.next = self.inner.segments().bounds.head + 1;
        if fatal {
            queue.failed = Some(err);
        }
        drop(queue);
        for job in later {
            match job {
                Job::Retain => self.retain(),
                Job::Close(reply) => {
                    let _ = reply.send(self.finish());
                }
                Job::Append { .. } => {}
            }
        }
    }

    /// Starts a new last segment whose first record will be `first`.
    fn roll(&mut self, first: u64) -> io::Result<()> {
        if self.dirty {
            // A sealed segment is always whole on disk, so only the last one can be torn.
            self.sync()?;
        }
        let path = self.inner.dir.join(segment::file_name(first));
        let file = create_segment(&self.inner.dir, &path)?;
        let reader = match OpenOptions::new().read(true).open(&path) {
            Ok(reader) => reader,
            Err(err) => {
                let _ = fs::remove_file(&path);
                return Err(err);
            }
        };
        self.inner.segments_mut().list.insert(
            first,
            Segment {
                first,
                last: first - 1,
                len: 0,
                index: Vec::new(),
                last_time: None,
                path,
                file: Arc::new(reader),
            },
        );
        self.file = file;
        self.first = first;
        self.len = 0;
        self.last_indexed = None;
        Ok(())
    }

    /// Age retention (and any retention flag changed since the last run).
    fn retain(&mut self) {
        let (bounds, removed) = {
            let mut segments = self.inner.segments_mut();
            let before = segments.bounds;
            let removed = expire(
                &mut segments,
                &self.inner.options.retention,
                SystemTime::now(),
            );
            if segments.bounds == before {
                return;
            }
            (segments.bounds, removed)
        };
        self.remove(removed);
        self.inner.tail.set_bounds(bounds);
    }

    fn remove(&self, removed: Vec<PathBuf>) {
        if removed.is_empty() {
            return;
        }
        for path in &removed {
            if let Err(err) = fs::remove_file(path) {
                warn!(file = %path.display(), %err, "retention could not delete a segment");
            }
        }
        if let Err(err) = sync_dir(&self.inner.dir) {
            warn!(%err, "could not sync the data directory after retention");
        }
    }
}

type Reply = oneshot::Sender<Result<(u64, u64), StoreError>>;

/// Drops whole segments from the front while the log stays within its limits without them;
/// the last segment always stays. Returns the files to delete.
fn expire(segments: &mut Segments, retention: &Retention, now: SystemTime) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    while segments.list.len() > 1 {
        let seg = segments.list.values().next().expect("not empty");
        let events = segments.bounds.head + 1 - segments.bounds.oldest;
        let seg_events = seg.last + 1 - seg.first;
        let over_count = events - seg_events >= retention.max_events as u64;
        let over_bytes = segments.bytes - seg.len >= retention.max_bytes as u64;
        let too_old = retention.max_age.is_some_and(|age| {
            seg.last_time
                .is_some_and(|t| now.duration_since(t).is_ok_and(|d| d > age))
        });
        if !(over_count || over_bytes || too_old) {
            break;
        }
        let first = seg.first;
        let seg = segments.list.remove(&first).expect("exists");
        segments.bytes -= seg.len;
        segments.bounds.oldest = seg.last + 1;
        removed.push(seg.path);
    }
    removed
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn truncate(file: &File, len: u64) -> io::Result<()> {
    file.set_len(len)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates an empty segment file, durable in its directory.
fn create_segment(dir: &Path, path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    if let Err(err) = sync_dir(dir) {
        let _ = fs::remove_file(path);
        return Err(err);
    }
    Ok(file)
}

/// Reads `meta.json`, or writes a new one (a new `log_id`) for a new directory.
fn read_or_create_meta(dir: &Path, has_segments: bool) -> Result<String, OpenError> {
    let path = dir.join(META);
    let io_err = |what: &str, err: io::Error| OpenError::Io {
        dir: dir.to_owned(),
        detail: format!("{what} {}: {err}", path.display()),
    };
    match fs::read(&path) {
        Ok(bytes) => {
            let meta: Meta = serde_json::from_slice(&bytes).map_err(|err| OpenError::Corrupt {
                path: path.clone(),
                offset: 0,
                detail: format!("not a pushpull log's metadata: {err}"),
            })?;
            if meta.format != FORMAT_VERSION {
                return Err(OpenError::Format {
                    path,
                    found: meta.format,
                });
            }
            Ok(meta.log_id)
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            if has_segments {
                return Err(OpenError::Corrupt {
                    path,
                    offset: 0,
                    detail: "segments exist but their metadata file is missing".into(),
                });
            }
            let meta = Meta {
                format: FORMAT_VERSION,
                log_id: new_log_id(),
            };
            let tmp = dir.join(format!("{META}.tmp"));
            let json = serde_json::to_vec_pretty(&meta).expect("serializable");
            (|| {
                let file = File::create(&tmp)?;
                file.write_all_at(&json, 0)?;
                file.sync_all()?;
                fs::rename(&tmp, &path)?;
                sync_dir(dir)
            })()
            .map_err(|e| io_err("cannot write", e))?;
            Ok(meta.log_id)
        }
        Err(err) => Err(io_err("cannot read", err)),
    }
}

#[cfg(test)]
mod tests;
