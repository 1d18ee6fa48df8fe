use std::time::Duration;

use bytes::Bytes;
use tempfile::TempDir;

use super::*;
use crate::{
    error::Error,
    log::{Event, EventLog, NewEvent, PublishLimits, ReadLimits, TopicFilter},
    store::conformance::{self, Fixture, Options},
};

const SEGMENT: u64 = 4096;

fn file_options(dir: &Path, retention: Retention) -> FileOptions {
    FileOptions {
        dir: dir.to_owned(),
        fsync: FsyncPolicy::Always,
        segment_bytes: SEGMENT,
        retention,
        truncate_corrupt: false,
        max_body_bytes: 1 << 20,
    }
}

fn keep_all() -> Retention {
    Retention {
        max_events: usize::MAX,
        max_bytes: usize::MAX,
        max_age: None,
    }
}

const LIMITS: PublishLimits = PublishLimits {
    max_events: 1000,
    max_payload_bytes: 1024,
};

pub(crate) async fn open(options: Options) -> Fixture {
    let dir = TempDir::new().unwrap();
    let log = open_log(
        file_options(dir.path(), options.retention),
        options.cache_bytes,
    )
    .expect("opens");
    Fixture {
        log: EventLog::new(log.0, log.1, options.limits),
        guard: Box::new(dir),
    }
}

conformance::suite!(crate::store::file::tests::open);

fn open_log(
    options: FileOptions,
    cache_bytes: usize,
) -> Result<(Arc<dyn Store>, Arc<Tail>), OpenError> {
    let tail = Arc::new(Tail::new(cache_bytes));
    let store = FileStore::open(options, Arc::clone(&tail), StoreMetrics::default())?;
    Ok((Arc::new(store), tail))
}

fn log_at(dir: &Path, retention: Retention) -> Result<EventLog, OpenError> {
    let (store, tail) = open_log(file_options(dir, retention), 0)?;
    Ok(EventLog::new(store, tail, LIMITS))
}

fn ev(i: usize) -> NewEvent {
    NewEvent {
        topic: format!("t{}", i % 3).into(),
        payload: Bytes::from(format!("event {i:05} {}", "x".repeat(i % 40))),
    }
}

async fn fill(log: &EventLog, n: usize) {
    for i in 0..n {
        log.append(vec![ev(i)]).await.unwrap();
    }
}

async fn everything(log: &EventLog) -> Vec<Event> {
    let mut out = Vec::new();
    let mut after = 0;
    let all = TopicFilter::default();
    let limits = ReadLimits {
        max_events: 1000,
        max_bytes: usize::MAX,
    };
    loop {
        let batch = log.read::<Event>(after, &all, limits).await.unwrap();
        out.extend(batch.events.iter().cloned());
        after = batch.next_after;
        if batch.caught_up() {
            return out;
        }
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut list: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    list.sort();
    list
}

fn copy_dir(from: &Path, to: &Path) {
    for item in fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        if item.file_name() != LOCK {
            fs::copy(item.path(), to.join(item.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn a_reopened_log_has_its_id_events_and_next_sequence() {
    let dir = TempDir::new().unwrap();
    let log = log_at(dir.path(), keep_all()).unwrap();
    fill(&log, 100).await;
    let id = log.log_id().to_owned();
    let before = everything(&log).await;
    log.close().await.unwrap();
    drop(log);

    let log = log_at(dir.path(), keep_all()).unwrap();
    assert_eq!(log.log_id(), id);
    assert_eq!(log.bounds(), (1, 100));
    assert_eq!(everything(&log).await, before);
    assert_eq!(log.append(vec![ev(100)]).await, Ok((101, 101)));
    assert!(segments(dir.path()).len() > 1, "4 KiB segments must roll");
}

/// One read may span many segments and still return up to its `max_events`: the count is of
/// this read's records, wherever they came from. (Counted per segment against the whole read,
/// a catch-up from disk past half a batch failed with DATA_LOSS at the next segment.)
#[tokio::test]
async fn one_read_spans_segments_up_to_its_limit() {
    let dir = TempDir::new().unwrap();
    let log = log_at(dir.path(), keep_all()).unwrap();
    fill(&log, 1500).await;
    assert!(segments(dir.path()).len() > 10);

    let limits = ReadLimits {
        max_events: 1000,
        max_bytes: usize::MAX,
    };
    let batch = log
        .read::<Event>(0, &TopicFilter::default(), limits)
        .await
        .expect("a read across segments");

    let sequences: Vec<u64> = batch.events.iter().map(|e| e.sequence).collect();
    assert!(
        sequences == (1..=1000).collect::<Vec<_>>(),
        "read {} events, {:?}..={:?}, not 1..=1000",
        sequences.len(),
        sequences.first(),
        sequences.last()
    );
}

#[tokio::test]
async fn a_second_store_on_the_same_directory_is_refused_until_the_first_closes() {
    let dir = TempDir::new().unwrap();
    let first = log_at(dir.path(), keep_all()).unwrap();
    let err = log_at(dir.path(), keep_all()).unwrap_err();
    assert!(matches!(err, OpenError::Locked { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("another producer"), "{message}");
    first.close().await.unwrap();
    drop(first);
    log_at(dir.path(), keep_all()).expect("free once the first is gone");
}

/// Cuts the last segment at every offset of its last records: each time, the log opens with
/// exactly the whole records before the cut, reports the cut, and appends after them.
#[tokio::test]
async fn a_torn_tail_is_cut_at_any_offset_and_sequences_continue() {
    let dir = TempDir::new().unwrap();
    let log = log_at(dir.path(), keep_all()).unwrap();
    fill(&log, 40).await;
    let all = everything(&log).await;
    log.close().await.unwrap();
    drop(log);
    let last = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    let first_in_last: u64 =
        segment::parse_name(last.file_name().unwrap().to_str().unwrap()).unwrap();
    // The offsets where the last three records begin and end.
    let scanned = segment::scan(&File::open(&last).unwrap(), first_in_last, 1 << 20).unwrap();
    assert_eq!(scanned.last, 40);
    let record = |seq: u64| {
        let e = &all[(seq - 1) as usize];
        (segment::HEADER + pushpull_encoded_len(e)) as u64
    };
    let start_of_40 = len - record(40);
    let start_of_38 = start_of_40 - record(39) - record(38);
    for cut in start_of_38..len {
        let copy = TempDir::new().unwrap();
        copy_dir(dir.path(), copy.path());
        let seg = copy.path().join(last.file_name().unwrap());
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let tail = Arc::new(Tail::new(0));
        let store = FileStore::open(
            file_options(copy.path(), keep_all()),
            Arc::clone(&tail),
            StoreMetrics::default(),
        )
        .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let whole = if cut >= start_of_40 {
            39
        } else if cut >= start_of_40 - record(39) {
            38
        } else {
            37
        };
        let expect_cut =
            cut != start_of_40 && cut != start_of_40 - record(39) && cut != start_of_38;
        assert_eq!(store.bounds().head, whole, "cut at {cut}");
        assert_eq!(
            store.recovery().truncated.len(),
            usize::from(expect_cut),
            "cut at {cut}"
        );
        let log = EventLog::new(Arc::new(store), tail, LIMITS);
        assert_eq!(
            everything(&log).await[..],
            all[..whole as usize],
            "cut at {cut}"
        );
        assert_eq!(log.append(vec![ev(1)]).await, Ok((whole + 1, whole + 1)));
    }
}

fn pushpull_encoded_len(event: &Event) -> usize {
    use prost::Message as _;
    pushpull::pb::Event::from(event.clone()).encoded_len()
}

/// A Publish is atomic, so a crash in the middle of writing a batch must leave none of it, not
/// its first records: a `kill -9` during the group's `pwrite` (or a machine crash) can leave
/// any prefix of it on disk, cut at a record boundary or inside a record. Found by
/// producer/tests/api/durable.rs (an unacknowledged 35-event Publish, 16 of its events in the
/// log after the restart). The last record of each batch carries a batch-end bit.
#[tokio::test]
async fn a_batch_cut_short_by_a_crash_is_not_in_the_log_at_all() {
    let dir = TempDir::new().unwrap();
    let log = log_at(dir.path(), keep_all()).unwrap();
    log.append(vec![ev(0)]).await.unwrap();
    assert_eq!(log.append((1..=10).map(ev).collect()).await, Ok((2, 11)));
    let all = everything(&log).await;
    log.close().await.unwrap();
    drop(log);
    let last = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    let record = |e: &Event| (segment::HEADER + pushpull_encoded_len(e)) as u64;
    // Cut after the batch's 5th record (a record boundary), then inside its 6th.
    let after_5th = len - all[6..].iter().map(record).sum::<u64>();
    for cut in [after_5th, after_5th + 7] {
        let copy = TempDir::new().unwrap();
        copy_dir(dir.path(), copy.path());
        OpenOptions::new()
            .write(true)
            .open(copy.path().join(last.file_name().unwrap()))
            .unwrap()
            .set_len(cut)
            .unwrap();

        let log = log_at(copy.path(), keep_all()).unwrap();

        assert_eq!(
            log.bounds(),
            (1, 1),
            "cut at {cut}: the batch 2..=11 is gone whole"
        );
        assert_eq!(log.append(vec![ev(99)]).await, Ok((2, 2)));
    }
}

#[tokio::test]
async fn zeros_after_the_last_record_are_a_torn_tail() {
    let dir = TempDir::new().unwrap();
    let log = log_at(dir.path(), keep_all()).unwrap();
    fill(&log, 5).await;
    log.close().await.unwrap();
    drop(log);
    let last = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len + 8192)
        .unwrap();
    let log = log_at(dir.path(), keep_all()).unwrap();
    assert_eq!(log.bounds(), (1, 5));
    assert_eq!(
        fs::metadata(&last).unwrap().len(),
        len,
        "the zeros are cut off"
    );
}

/// A flipped byte anywhere in a record that has good records after it is damage: the store
/// refuses to open, naming the segment and the offset, and opens cut there only when told to.
#[tokio::test]
async fn a_flipped_byte_mid_segment_is_corruption_not_a_torn_tail() {
    let dir = TempDir::new().unwrap();
    let log = log_at(dir.path(), keep_all()).unwrap();
    fill(&log, 10).await;
    let all = everything(&log).await;
    log.close().await.unwrap();
    drop(log);
    let seg = segments(dir.path()).remove(0);
    let bytes = fs::read(&seg).unwrap();
    let record = |seq: usize| segment::HEADER + pushpull_encoded_len(&all[seq - 1]);
    let start_of_5: usize = (1..5).map(record).sum();
    for at in start_of_5..start_of_5 + record(5) {
        let copy = TempDir::new().unwrap();
        copy_dir(dir.path(), copy.path());
        let target = copy.path().join(seg.file_name().unwrap());
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x40;
        fs::write(&target, &damaged).unwrap();
        let err = log_at(copy.path(), keep_all()).unwrap_err();
        match &err {
            OpenError::Corrupt { path, offset, .. } => {
                assert_eq!(path, &target, "flip at {at}");
                assert_eq!(*offset, start_of_5 as u64, "flip at {at}: {err}");
            }
            other => panic!("flip at {at}: {other}"),
        }
        assert!(err.to_string().contains("--truncate-corrupt"), "{err}");

        let mut options = file_options(copy.path(), keep_all());
        options.truncate_corrupt = true;
        let (store, tail) = open_log(options, 0).unwrap();
        let log = EventLog::new(store, tail, LIMITS);
        assert_eq!(log.bounds(), (1, 4), "flip at {at}");
        assert_eq!(everything(&log).await[..], all[..4]);
        assert_eq!(log.append(vec![ev(0)]).await, Ok((5, 5)));
    }
}

#[tokio::test]
async fn a_damaged_record_is_never_served() {
    let dir = TempDir::new().unwrap();
    let log = log_at(dir.path(), keep_all()).unwrap();
    fill(&log, 10).await;
    // Damage a committed record under the open store, as a failing disk might.
    let seg = segments(dir.path()).remove(0);
    let file = OpenOptions::new().write(true).open(&seg).unwrap();
    file.write_all_at(&[0xff], 40).unwrap();
    let err = log
        .read::<Event>(
            0,
            &TopicFilter::default(),
            ReadLimits {
                max_events: 100,
                max_bytes: usize::MAX,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StorageCorrupt { .. }), "{err}");
    assert!(
        err.to_string().contains(&seg.display().to_string()),
        "{err}"
    );
}

/// Retention drops whole segments from the front, never the last one, and keeps disk use
/// within the limit plus one segment.
#[tokio::test]
async fn retention_drops_whole_segments_and_bounds_disk_use() {
    let dir = TempDir::new().unwrap();
    let limit = 3 * SEGMENT as usize;
    let log = log_at(
        dir.path(),
        Retention {
            max_events: usize::MAX,
            max_bytes: limit,
            max_age: None,
        },
    )
    .unwrap();
    fill(&log, 1000).await;
    let files = segments(dir.path());
    let on_disk: u64 = files.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert!(
        on_disk >= limit as u64,
        "keeps at least the limit: {on_disk}"
    );
    assert!(
        on_disk < limit as u64 + SEGMENT + 1024,
        "{on_disk} bytes on disk for a {limit}-byte limit"
    );
    assert_eq!(log.store_stats().bytes, on_disk);
    assert_eq!(log.store_stats().segments, files.len() as u64);
    let (oldest, head) = log.bounds();
    let first_name = segment::parse_name(files[0].file_name().unwrap().to_str().unwrap()).unwrap();
    assert_eq!(
        oldest, first_name,
        "oldest is the first segment's first sequence"
    );
    assert_eq!(head, 1000);
    assert!(matches!(
        log.read::<Event>(
            oldest - 2,
            &TopicFilter::default(),
            ReadLimits {
                max_events: 1,
                max_bytes: 1
            }
        )
        .await,
        Err(Error::CursorExpired { .. })
    ));
    assert_eq!(everything(&log).await.len() as u64, head - oldest + 1);
}

#[tokio::test]
async fn age_retention_drops_old_segments() {
    let dir = TempDir::new().unwrap();
    let log = log_at(
        dir.path(),
        Retention {
            max_events: usize::MAX,
            max_bytes: usize::MAX,
            max_age: Some(Duration::from_secs(2)),
        },
    )
    .unwrap();
    fill(&log, 200).await;
    let before = segments(dir.path()).len();
    assert!(before > 2);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    log.store().enforce_retention();
    // The writer applies it, removing the files and then moving the log's bounds: give both a
    // moment, bounded (checking only the files raced the bounds under load).
    let deadline = Instant::now() + Duration::from_secs(5);
    while (segments(dir.path()).len() > 1 || log.bounds().0 <= 1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "all but the last segment expired"
    );
    assert!(log.bounds().0 > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_share_fsyncs() {
    let dir = TempDir::new().unwrap();
    let tail = Arc::new(Tail::new(1 << 20));
    let store = Arc::new(
        FileStore::open(
            file_options(dir.path(), keep_all()),
            Arc::clone(&tail),
            StoreMetrics::default(),
        )
        .unwrap(),
    );
    let log = EventLog::new(Arc::clone(&store) as Arc<dyn Store>, tail, LIMITS);
    let appends = 16 * 50;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    log.append(vec![ev(i)]).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(log.head(), appends);
    let syncs = store.fsyncs();
    assert!(syncs >= 1);
    assert!(
        syncs < appends,
        "{syncs} fdatasyncs for {appends} appends: group commit shares none"
    );
}

#[tokio::test]
async fn a_newer_format_is_refused() {
    let dir = TempDir::new().unwrap();
    drop(log_at(dir.path(), keep_all()).unwrap());
    fs::write(dir.path().join(META), br#"{"format": 2, "log_id": "x"}"#).unwrap();
    let err = log_at(dir.path(), keep_all()).unwrap_err();
    assert!(matches!(err, OpenError::Format { found: 2, .. }), "{err}");
}

#[tokio::test]
async fn segments_without_metadata_are_refused() {
    let dir = TempDir::new().unwrap();
    let log = log_at(dir.path(), keep_all()).unwrap();
    fill(&log, 3).await;
    log.close().await.unwrap();
    drop(log);
    fs::remove_file(dir.path().join(META)).unwrap();
    let err = log_at(dir.path(), keep_all()).unwrap_err();
    assert!(err.to_string().contains("metadata"), "{err}");
}

#[tokio::test]
async fn appends_after_close_fail_and_reads_go_on() {
    let dir = TempDir::new().unwrap();
    let log = log_at(dir.path(), keep_all()).unwrap();
    fill(&log, 3).await;
    log.close().await.unwrap();
    assert_eq!(log.append(vec![ev(0)]).await, Err(Error::ShuttingDown));
    assert_eq!(everything(&log).await.len(), 3);
}

/// Sequences start at 1, and recovery counts on `first - 1`: a stray `000…0.log` in the data
/// directory (copied in, hand-made) once panicked the scan on an overflow (and in a release
/// build made the head `u64::MAX`).
#[tokio::test]
async fn a_segment_named_for_sequence_zero_is_refused_as_corrupt() {
    let dir = TempDir::new().unwrap();
    let log = log_at(dir.path(), keep_all()).unwrap();
    log.close().await.unwrap();
    drop(log);
    fs::write(dir.path().join(segment::file_name(0)), b"").unwrap();
    let err = log_at(dir.path(), keep_all()).unwrap_err();
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err}");
}

/// A whole data directory after a crash or damage, whatever the damage: opening it serves a
/// prefix of what was written, ending at a whole batch, and appends go on after it; or it is
/// refused as corrupt. With `--truncate-corrupt` damage to segments never stops the start.
#[test]
fn a_damaged_directory_opens_to_a_prefix_of_whole_batches_or_is_refused() {
    use proptest::{prelude::*, test_runner::TestRunner};

    #[derive(Debug, Clone)]
    enum Damage {
        Truncate(f64),
        Flip(f64, u8),
        Random(Vec<u8>),
        Remove,
    }
    let damage = prop_oneof![
        (0.0..1.0).prop_map(Damage::Truncate),
        (0.0..1.0, 1..=255u8).prop_map(|(at, mask)| Damage::Flip(at, mask)),
        prop::collection::vec(any::<u8>(), 0..256).prop_map(Damage::Random),
        Just(Damage::Remove),
    ];

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = TempDir::new().unwrap();
    let (all, batch_ends) = rt.block_on(async {
        let log = log_at(base.path(), keep_all()).unwrap();
        let mut ends = vec![0];
        for i in 0..60 {
            let (_, last) = log
                .append((0..1 + i % 4).map(|j| ev(i * 4 + j)).collect())
                .await
                .unwrap();
            ends.push(last);
        }
        let all = everything(&log).await;
        log.close().await.unwrap();
        (all, ends)
    });
    let files = segments(base.path());
    assert!(files.len() >= 3, "several segments: {}", files.len());

    let mut runner = TestRunner::new(ProptestConfig::with_cases(256));
    let cases = (0..files.len(), damage, any::<bool>());
    runner
        .run(&cases, |(which, damage, truncate_corrupt)| {
            let dir = TempDir::new().unwrap();
            copy_dir(base.path(), dir.path());
            let path = dir.path().join(files[which].file_name().unwrap());
            let mut bytes = fs::read(&path).unwrap();
            let at = |f: f64| ((f * bytes.len() as f64) as usize).min(bytes.len() - 1);
            match &damage {
                Damage::Truncate(f) => bytes.truncate(at(*f)),
                Damage::Flip(f, mask) => {
                    let i = at(*f);
                    bytes[i] ^= mask;
                }
                Damage::Random(random) => bytes = random.clone(),
                Damage::Remove => {}
            }
            match damage {
                Damage::Remove => fs::remove_file(&path).unwrap(),
                _ => fs::write(&path, &bytes).unwrap(),
            }
            let options = FileOptions {
                truncate_corrupt,
                fsync: FsyncPolicy::Never,
                ..file_options(dir.path(), keep_all())
            };

            let opened = open_log(options, 0);

            let (store, tail) = match opened {
                // Only the last segment can have been cut short by a crash: damage to an
                // earlier one is refused unless the operator said to cut there.
                Ok(_)
                    if !truncate_corrupt
                        && which + 1 < files.len()
                        && !matches!(damage, Damage::Remove) =>
                {
                    return Err(TestCaseError::fail(
                        "damage to a sealed segment was accepted",
                    ));
                }
                Ok(opened) => opened,
                Err(OpenError::Corrupt { path, .. }) => {
                    // Without --truncate-corrupt any damage may be refused. With it, damage to
                    // the last segment is cut, never refused; damage to an earlier one is still
                    // refused today when segments follow it (the cut does not drop them: a known
                    // gap, see the closing note of issue 11), and so is a removed segment.
                    prop_assert!(
                        !truncate_corrupt
                            || which + 1 < files.len()
                            || matches!(damage, Damage::Remove)
                    );
                    prop_assert!(path.starts_with(dir.path()));
                    return Ok(());
                }
                Err(other) => return Err(TestCaseError::fail(format!("{other}"))),
            };
            rt.block_on(async {
                let log = EventLog::new(store, tail, LIMITS);
                let read = everything(&log).await;
                let (oldest, head) = log.bounds();
                prop_assert!(batch_ends.contains(&head), "head {head} is not a batch end");
                // Only a removed first segment can move the start.
                let start = (oldest - 1) as usize;
                prop_assert!(start == 0 || matches!(damage, Damage::Remove) && which == 0);
                prop_assert_eq!(&read[..], &all[start..head as usize]);
                prop_assert_eq!(log.append(vec![ev(0)]).await, Ok((head + 1, head + 1)));
                log.close().await.unwrap();
                Ok(())
            })
        })
        .unwrap();
}

mod meta_proptests {
    use proptest::prelude::*;

    use super::*;

    fn metadata() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            (any::<u32>(), "[ -~]{0,20}").prop_map(|(format, id)| {
                serde_json::to_vec(&serde_json::json!({"format": format, "log_id": id})).unwrap()
            }),
            (0u32..3).prop_map(|format| format!("{{\"format\":{format},\"log_id\":\"L\"}}").into_bytes()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// `meta.json` as found on disk: a log's id and format, or a refusal naming the file.
        #[test]
        fn any_metadata_file_is_read_or_refused_by_name(bytes in metadata()) {
            let dir = TempDir::new().unwrap();
            fs::write(dir.path().join(META), &bytes).unwrap();
            match read_or_create_meta(dir.path(), true) {
                Ok(log_id) => {
                    let meta: Meta = serde_json::from_slice(&bytes).unwrap();
                    prop_assert_eq!((meta.format, meta.log_id), (FORMAT_VERSION, log_id));
                }
                Err(OpenError::Corrupt { path, .. } | OpenError::Format { path, .. }) => {
                    prop_assert_eq!(path, dir.path().join(META));
                }
                Err(other) => prop_assert!(false, "{}", other),
            }
        }
    }
}
