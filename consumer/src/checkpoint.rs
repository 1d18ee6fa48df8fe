//! The saved cursor: which log, and the last sequence processed in it.
//!
//! Saved by writing a temporary file beside the target and renaming it over the target: rename
//! is atomic, so a crash leaves either the old checkpoint or the new one, never half of one.
//! The file is synced before the rename and the directory after it, so a power loss cannot
//! undo a save that returned.
//!
//! Saving is blocking I/O (and an fsync can take milliseconds), so the reader never does it:
//! it offers each cursor it has processed to a [`Latest`] handle, and the task from [`writer`]
//! writes the newest one on a blocking thread, at most once per interval, and always the
//! final one when the reader lets go of the handle. A caller that must not go on before the
//! cursor is on disk (webhook mode answers 2xx only then) asks [`Latest::saved`], which cuts
//! the interval short and waits for the writer to report the save.
//!
//! The format is two `key=value` lines, readable and editable by hand:
//!
//! ```text
//! log_id=18f3a2c4e5b6-1-9a8b7c6d
//! after_sequence=1234
//! ```

use std::{
    fs,
    future::Future,
    io,
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::{Notify, watch},
    time::{Instant, sleep_until},
};
use tracing::{debug, error, warn};

/// A cursor in a named log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub log_id: String,
    pub after_sequence: u64,
}

/// Why a checkpoint file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("checkpoint {path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

/// Reads the checkpoint at `path`; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: path.into(),
                source,
            });
        }
    };
    let malformed = |reason: String| CheckpointError::Malformed {
        path: path.into(),
        reason,
    };
    let (mut log_id, mut after) = (None, None);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once('=') {
            Some(("log_id", v)) => log_id = Some(v.to_owned()),
            Some(("after_sequence", v)) => {
                after = Some(v.parse::<u64>().map_err(|_| {
                    malformed(format!("after_sequence {v:?} is not a sequence number"))
                })?)
            }
            _ => return Err(malformed(format!("unexpected line {line:?}"))),
        }
    }
    match (log_id, after) {
        (Some(log_id), Some(after_sequence)) => Ok(Some(Checkpoint {
            log_id,
            after_sequence,
        })),
        _ => Err(malformed("needs both log_id and after_sequence".into())),
    }
}

/// Writes `checkpoint` to `path` atomically and durably. Blocking: call it from a blocking
/// thread, as the [`writer`] does.
pub fn save(path: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    let io_err = |source| CheckpointError::Io {
        path: path.into(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = fs::File::create(&tmp).map_err(io_err)?;
    write!(
        file,
        "log_id={}\nafter_sequence={}\n",
        checkpoint.log_id, checkpoint.after_sequence
    )
    .map_err(io_err)?;
    // Without the sync, a power loss right after the rename could leave an empty file.
    file.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)?;
    // The rename is an entry in the directory: until the directory is synced, a power loss
    // can bring back the old checkpoint.
    fs::File::open(directory_of(path))
        .and_then(|dir| dir.sync_all())
        .map_err(io_err)?;
    Ok(())
}

/// The directory holding `path`: `.` for a bare file name.
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The reader's end of the checkpoint [`writer`]: where it offers each cursor it has processed,
/// and where it learns what the writer has saved. Dropping it tells the writer to save the last
/// one and finish.
#[derive(Debug)]
pub struct Latest {
    offered: watch::Sender<Option<Checkpoint>>,
    /// Wakes the writer before its interval is up. A `Notify` keeps one permit when the writer
    /// is busy, so a request made during a save is not lost (at worst it costs one early write).
    urgent: Arc<Notify>,
    /// What the writer reports after each attempt.
    written: watch::Receiver<Written>,
}

/// What the writer has done so far: published on a `watch`, so a waiter sees the newest state
/// and never a queue of old ones.
#[derive(Debug, Clone, Default)]
struct Written {
    /// The newest checkpoint the file holds (durably).
    saved: Option<Checkpoint>,
    /// The checkpoint of the last attempt, with its number, if that attempt failed.
    failed: Option<(Checkpoint, u64)>,
    /// Attempts started: a waiter counts only a failure of an attempt that started after it
    /// asked, not one already under way (which may have failed before the cause was fixed).
    started: u64,
}

/// Why [`Latest::saved`] could not confirm a save.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotSaved {
    /// The writer tried and failed (the error is logged by the writer).
    #[error("the checkpoint could not be written (see the log for why)")]
    Failed,
    /// The writer has finished: the consumer is stopping.
    #[error("the checkpoint writer has stopped")]
    Stopped,
}

/// Whether `saved` holds `wanted` or a later cursor of the same log.
fn covers(saved: Option<&Checkpoint>, wanted: &Checkpoint) -> bool {
    saved.is_some_and(|s| s.log_id == wanted.log_id && s.after_sequence >= wanted.after_sequence)
}

impl Latest {
    /// Offers the cursor the reader has just processed. Never blocks: a `watch` keeps only the
    /// newest value, so the writer skips what it had no time to save instead of queueing it.
    pub fn offer(&self, log_id: &str, after_sequence: u64) {
        self.offered.send_if_modified(|current| {
            if current
                .as_ref()
                .is_some_and(|c| c.log_id == log_id && c.after_sequence == after_sequence)
            {
                return false;
            }
            *current = Some(Checkpoint {
                log_id: log_id.to_owned(),
                after_sequence,
            });
            true
        });
    }

    /// Waits until the file holds the cursor offered last (or a later one), asking the writer
    /// to save it now rather than at the end of its interval; a cursor already saved returns at
    /// once. A failed save is retried by this call (a new request, a new attempt), so a caller
    /// that asks again after [`NotSaved::Failed`] gets another try.
    pub async fn saved(&self) -> Result<(), NotSaved> {
        let Some(wanted) = self.offered.borrow().clone() else {
            return Ok(());
        };
        let mut written = self.written.clone();
        let asked_at = {
            let now = written.borrow_and_update();
            if covers(now.saved.as_ref(), &wanted) {
                return Ok(());
            }
            now.started
        };
        self.urgent.notify_one();
        let failed_since_asked = |w: &Written| {
            w.failed
                .as_ref()
                .is_some_and(|(c, attempt)| *attempt > asked_at && covers(Some(c), &wanted))
        };
        let outcome = written
            .wait_for(|w| covers(w.saved.as_ref(), &wanted) || failed_since_asked(w))
            .await
            .map_err(|_| NotSaved::Stopped)?;
        if covers(outcome.saved.as_ref(), &wanted) {
            Ok(())
        } else {
            Err(NotSaved::Failed)
        }
    }
}

/// A checkpoint writer for `path`: the handle the reader offers cursors to, and the task to
/// spawn. `saved` is what the file already holds (the checkpoint the reader started from), so
/// it is not written again. The task writes the first cursor offered at once, then at most one
/// per `interval` (unless [`Latest::saved`] asks for one now); when the handle is dropped it
/// writes the last cursor (if not yet saved) and ends, so awaiting it is awaiting the final
/// save.
pub fn writer(
    path: PathBuf,
    saved: Option<Checkpoint>,
    interval: Duration,
) -> (Latest, impl Future<Output = ()> + Send + 'static) {
    // The receiver counts `saved` as seen from here on: a cursor offered before the task first
    // runs is a change it will notice.
    let (offered, latest) = watch::channel(saved.clone());
    let (report, written) = watch::channel(Written {
        saved: saved.clone(),
        ..Written::default()
    });
    let urgent = Arc::new(Notify::new());
    let handle = Latest {
        offered,
        urgent: urgent.clone(),
        written,
    };
    let task = Writer {
        path,
        latest,
        urgent,
        report,
        saved,
        interval,
    };
    (handle, task.run())
}

/// The writer task's state.
struct Writer {
    path: PathBuf,
    latest: watch::Receiver<Option<Checkpoint>>,
    urgent: Arc<Notify>,
    report: watch::Sender<Written>,
    saved: Option<Checkpoint>,
    interval: Duration,
}

impl Writer {
    async fn run(mut self) {
        let mut last_write: Option<Instant> = None;
        let mut open = true;
        while open {
            // A cursor to save, a request to save now, or the reader's end.
            let now_asked = tokio::select! {
                changed = self.latest.changed() => {
                    open = changed.is_ok();
                    false
                }
                () = self.urgent.notified() => true,
            };
            // At most one write per interval; the reader's end, or a request to save now, cuts
            // the wait short.
            if let Some(at) = last_write
                && !now_asked
            {
                while open {
                    tokio::select! {
                        () = sleep_until(at + self.interval) => break,
                        changed = self.latest.changed() => open = changed.is_ok(),
                        () = self.urgent.notified() => break,
                    }
                }
            }
            let current = self.latest.borrow_and_update().clone();
            let Some(checkpoint) = current.filter(|c| self.saved.as_ref() != Some(c)) else {
                continue;
            };
            // Counted even when it fails: a full disk is retried once per interval, not once
            // per response.
            last_write = Some(Instant::now());
            let mut attempt = 0;
            self.report.send_modify(|w| {
                w.started += 1;
                attempt = w.started;
            });
            let result = save_blocking(self.path.clone(), checkpoint.clone()).await;
            let ok = result.is_ok();
            match result {
                Ok(()) => {
                    debug!(
                        log_id = %checkpoint.log_id,
                        after_sequence = checkpoint.after_sequence,
                        "checkpoint saved"
                    );
                    self.saved = Some(checkpoint.clone());
                }
                // A failed save is not fatal while reading goes on: the next one may succeed.
                Err(err) if open => warn!(%err, "cannot save checkpoint; will retry"),
                Err(err) => error!(
                    %err,
                    log_id = %checkpoint.log_id,
                    after_sequence = checkpoint.after_sequence,
                    "cannot save the final checkpoint; a restart will read again from the last one saved"
                ),
            }
            self.report.send_modify(|w| {
                w.saved = self.saved.clone();
                w.failed = (!ok).then_some((checkpoint, attempt));
            });
        }
    }
}

/// [`save`] on a blocking thread, off the runtime's workers.
async fn save_blocking(path: PathBuf, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
    let for_error = path.clone();
    tokio::task::spawn_blocking(move || save(&path, &checkpoint))
        .await
        .unwrap_or_else(|join| {
            Err(CheckpointError::Io {
                path: for_error,
                source: io::Error::other(join),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        assert!(load(&path).unwrap().is_none());
        let cp = Checkpoint {
            log_id: "abc-1".into(),
            after_sequence: 42,
        };
        save(&path, &cp).unwrap();
        assert_eq!(load(&path).unwrap(), Some(cp.clone()));
        let newer = Checkpoint {
            after_sequence: 43,
            ..cp
        };
        save(&path, &newer).unwrap();
        assert_eq!(load(&path).unwrap(), Some(newer));
        assert!(!dir.path().join("cursor.tmp").exists());
    }

    #[test]
    fn a_bare_file_name_lives_in_the_current_directory() {
        assert_eq!(directory_of(Path::new("cursor")), Path::new("."));
        assert_eq!(directory_of(Path::new("a/cursor")), Path::new("a"));
        assert_eq!(directory_of(Path::new("/cursor")), Path::new("/"));
    }

    fn checkpoint(after_sequence: u64) -> Checkpoint {
        Checkpoint {
            log_id: "L".into(),
            after_sequence,
        }
    }

    async fn eventually_holds(path: &Path, want: &Checkpoint) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while load(path).unwrap().as_ref() != Some(want) {
            assert!(Instant::now() < deadline, "{path:?} never held {want:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn the_writer_saves_the_first_cursor_then_once_per_interval_and_the_last_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        let (latest, task) = writer(path.clone(), None, Duration::from_secs(3600));
        let task = tokio::spawn(task);

        latest.offer("L", 10);
        eventually_holds(&path, &checkpoint(10)).await;
        latest.offer("L", 11);
        latest.offer("L", 12);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            load(&path).unwrap(),
            Some(checkpoint(10)),
            "within the interval, nothing more is written"
        );

        drop(latest);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the writer ends once the reader lets go")
            .unwrap();
        assert_eq!(load(&path).unwrap(), Some(checkpoint(12)));
        assert!(!dir.path().join("cursor.tmp").exists());
    }

    #[tokio::test]
    async fn the_writer_does_not_rewrite_the_checkpoint_it_started_from() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        let (latest, task) = writer(path.clone(), Some(checkpoint(7)), Duration::ZERO);
        let task = tokio::spawn(task);
        latest.offer("L", 7);
        drop(latest);
        task.await.unwrap();
        assert!(!path.exists(), "an unchanged cursor was written");
    }

    #[tokio::test]
    async fn a_failed_save_does_not_stop_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("cursor");
        let (latest, task) = writer(path.clone(), None, Duration::ZERO);
        let task = tokio::spawn(task);
        latest.offer("L", 1);
        // The directory appears only after the first save must have failed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!path.exists());
        fs::create_dir(dir.path().join("missing")).unwrap();
        latest.offer("L", 2);
        eventually_holds(&path, &checkpoint(2)).await;
        drop(latest);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn saved_cuts_the_interval_short_and_returns_once_the_file_holds_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        let (latest, task) = writer(path.clone(), None, Duration::from_secs(3600));
        let task = tokio::spawn(task);
        // Nothing offered: nothing to wait for.
        latest.saved().await.unwrap();
        for after in [10, 11, 12] {
            latest.offer("L", after);
            tokio::time::timeout(Duration::from_secs(10), latest.saved())
                .await
                .expect("a save within the hour-long interval")
                .unwrap();
            assert_eq!(load(&path).unwrap(), Some(checkpoint(after)));
        }
        // Already saved: at once, and no write (the file is not touched again).
        fs::remove_file(&path).unwrap();
        latest.saved().await.unwrap();
        assert!(!path.exists());
        drop(latest);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn saved_reports_a_failed_save_and_a_later_call_tries_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("cursor");
        let (latest, task) = writer(path.clone(), None, Duration::from_secs(3600));
        let task = tokio::spawn(task);
        latest.offer("L", 1);
        assert_eq!(latest.saved().await, Err(NotSaved::Failed));
        assert_eq!(latest.saved().await, Err(NotSaved::Failed));
        fs::create_dir(dir.path().join("missing")).unwrap();
        latest.saved().await.unwrap();
        assert_eq!(load(&path).unwrap(), Some(checkpoint(1)));
        drop(latest);
        task.await.unwrap();
    }

    #[test]
    fn malformed_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        fs::write(&path, "log_id=x\nafter_sequence=minus one\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("\"minus one\" is not a sequence number"),
            "{err}"
        );
        fs::write(&path, "log_id=x\n").unwrap();
        assert!(load(&path).is_err());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// A checkpoint file as found on disk: random bytes, or lines close to the format.
    fn file() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            "log_id=[ -~]{0,20}",
            "after_sequence=[ 0-9a-z-]{0,22}",
            "[ -~]{0,20}",
            Just(String::new()),
        ];
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(line, 0..4).prop_map(|l| l.join("\n").into_bytes()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the file holds: a checkpoint, or an error naming the file.
        #[test]
        fn any_file_is_a_checkpoint_or_a_precise_error(bytes in file()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("cursor");
            fs::write(&path, &bytes).unwrap();
            match load(&path) {
                Ok(Some(cp)) => {
                    let text = String::from_utf8(bytes).unwrap();
                    let line = format!("after_sequence={}", cp.after_sequence);
                    prop_assert!(text.contains(&line), "{}", text);
                }
                Ok(None) => prop_assert!(false, "a file that exists read as none"),
                Err(err) => {
                    let prefix = format!("checkpoint {}", path.display());
                    prop_assert!(err.to_string().starts_with(&prefix), "{}", err);
                }
            }
        }

    }

    proptest! {
        // Each case fsyncs a file and a directory.
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any cursor in a log id the producer could send reads back as saved.
        #[test]
        fn a_saved_checkpoint_reads_back(log_id in "[A-Za-z0-9._-]{1,40}", after_sequence in any::<u64>()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("cursor");
            let cp = Checkpoint { log_id, after_sequence };
            save(&path, &cp).unwrap();
            prop_assert_eq!(load(&path).unwrap(), Some(cp));
        }
    }
}
