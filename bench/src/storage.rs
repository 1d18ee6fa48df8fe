//! The storage scenario (issue 9): what a durable log costs, with the memory store, the file
//! store with `--fsync always` (the default) and with `--fsync never` side by side in one run.
//!
//! 1. [`publish_throughput`]: Publish flat out, 1,000 events per call, from 1 and 4 callers.
//! 2. [`publish_latency`]: Publish and push p99 at a fixed rate, next to the store's own
//!    fdatasync p99 from the producer's `fsync_seconds` histogram in the same window.
//! 3. [`catch_up_from_disk`]: one Subscribe stream reading a log ten times the tail cache from
//!    the oldest event, the producer's `store_reads` counter showing the reads left the cache;
//!    with the segment files in the page cache and evicted from it, and the memory store with
//!    the same cache for reference.
//! 4. [`recovery`]: a filled data directory, the producer stopped, a fresh start timed until its
//!    first Poll is answered; bytes on disk per event.
//!
//! Every producer here names its store (`--store`), and every file store gets a temporary
//! `--data-dir` of its own, removed afterwards: the default `data/` would collide.

use std::{
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::Path,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tempfile::TempDir;

use crate::{
    Progress,
    child::{Proc, Role},
    load::{
        ConsumerStats, MAX_PUBLISH, channel, duration_of, producer_client,
        publish_at_rate_isolated, publish_flat_out,
    },
    report::Results,
    scenarios::{Mode, Settings, consumer_args, micros, ms, strings},
    scrape::{Buckets, Quantile, Scrape},
};

/// The fsync histogram's name on the producer's `/metrics`.
const FSYNC: &str = "pushpull_producer_fsync_seconds";
pub const STORE_READS: &str = "pushpull_producer_store_reads_total";
pub const CACHE_READS: &str = "pushpull_producer_cache_reads_total";
const SEGMENTS: &str = "pushpull_producer_store_segments";
const RETAINED_BYTES: &str = "pushpull_producer_retained_bytes";
pub const JETSTREAM_MESSAGES: &str = "pushpull_producer_jetstream_messages_published_total";

/// How big and long the storage scenario's runs are.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// Events per publish-throughput run.
    pub publish_events: u64,
    /// Events per Publish in the throughput runs.
    pub publish_batch: usize,
    /// Publishers in the throughput runs.
    pub publishers: Vec<usize>,
    /// Events/s of the latency runs, and their window.
    pub rate: u64,
    pub window: Duration,
    /// The catch-up log's size, and the tail cache in front of it.
    pub catchup_events: u64,
    pub catchup_cache_bytes: u64,
    /// Log sizes whose recovery is timed.
    pub recovery: Vec<u64>,
}

impl StorageSettings {
    pub fn full() -> Self {
        Self {
            publish_events: 2_000_000,
            publish_batch: 1_000,
            publishers: vec![1, 4],
            rate: 10_000,
            window: Duration::from_secs(6),
            catchup_events: 2_000_000,
            catchup_cache_bytes: 8 * 1024 * 1024,
            recovery: vec![1_000_000, 10_000_000],
        }
    }

    pub fn quick() -> Self {
        Self {
            publish_events: 20_000,
            publish_batch: 1_000,
            publishers: vec![1, 4],
            rate: 1_000,
            window: Duration::from_millis(1000),
            catchup_events: 100_000,
            catchup_cache_bytes: 1024 * 1024,
            recovery: vec![100_000],
        }
    }
}

/// A producer's store, as its flags say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    /// `--store file --fsync always`: the default.
    FileAlways,
    /// `--store file --fsync never`.
    FileNever,
    /// `--store jetstream` on a stream of this many replicas ([`crate::jetstream`] starts the
    /// servers and names them).
    JetStream(Replicas),
}

/// The replica counts the jetstream scenario runs: one node, and a three-node cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicas {
    One,
    Three,
}

impl Replicas {
    pub fn count(self) -> usize {
        match self {
            Replicas::One => 1,
            Replicas::Three => 3,
        }
    }
}

impl Backend {
    /// The stores of the storage scenario.
    pub const ALL: [Backend; 3] = [Backend::Memory, Backend::FileAlways, Backend::FileNever];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::FileAlways => "file, fsync always",
            Backend::FileNever => "file, fsync never",
            Backend::JetStream(Replicas::One) => "jetstream, replicas 1",
            Backend::JetStream(Replicas::Three) => "jetstream, replicas 3",
        }
    }

    pub fn is_file(self) -> bool {
        matches!(self, Backend::FileAlways | Backend::FileNever)
    }

    /// The producer flags for this store, with `dir` as a file store's `--data-dir`.
    fn args(self, dir: Option<&Path>) -> Result<Vec<String>, String> {
        let fsync = match self {
            Backend::Memory => return Ok(strings(&["--store", "memory"])),
            Backend::FileAlways => "always",
            Backend::FileNever => "never",
            Backend::JetStream(_) => {
                return Err(
                    "a jetstream store's flags name its servers: see crate::jetstream".into(),
                );
            }
        };
        let dir = dir.ok_or("a file store needs a data directory")?;
        Ok(strings(&[
            "--store",
            "file",
            "--fsync",
            fsync,
            "--data-dir",
            &dir.display().to_string(),
        ]))
    }
}

/// Retention that holds every event these runs publish (the defaults keep 1 M events).
fn retain_all() -> Vec<String> {
    strings(&[
        "--retention-events",
        "100000000",
        "--retention-bytes",
        "17179869184",
    ])
}

/// A fresh temporary data directory, removed when dropped.
pub fn data_dir() -> Result<TempDir, String> {
    tempfile::Builder::new()
        .prefix("pushpull-bench-data-")
        .tempdir()
        .map_err(|e| format!("temporary data directory: {e}"))
}

/// Starts a producer on `backend` (in `dir` for a file store) with `extra` flags.
pub async fn spawn(backend: Backend, dir: Option<&Path>, extra: &[String]) -> Result<Proc, String> {
    let mut args = backend.args(dir)?;
    args.extend(retain_all());
    args.extend(extra.iter().cloned());
    Proc::spawn(Role::Producer, &args).await
}

pub async fn scrape(producer: &Proc) -> Result<Scrape, String> {
    Scrape::get(producer.http.ok_or("the producer serves no /metrics")?).await
}

/// Everything the storage scenario measured.
#[derive(Debug, Clone, Default)]
pub struct StorageResults {
    pub publish: Vec<PublishRun>,
    pub latency: Vec<LatencyRun>,
    pub catchup: Vec<CatchUpRun>,
    pub recovery: Vec<RecoveryRun>,
    /// A producer's start on an empty data directory: what a recovery costs beyond starting.
    pub empty_start: Option<Duration>,
    /// The machine's load average when the scenario started and ended, and its I/O pressure
    /// (the share of time some task waited for I/O, which fsync times follow).
    pub load_start: String,
    pub load_end: String,
    pub io_pressure_start: String,
    pub io_pressure_end: String,
}

/// Steps [`run`] reports, for the progress count.
pub fn steps(s: &StorageSettings) -> usize {
    s.publishers.len() + Backend::ALL.len() + 1 + s.recovery.len() + 1
}

/// Runs every storage measurement into `results.storage`.
pub async fn run(settings: &Settings, progress: &mut Progress, results: &mut Results) {
    let s = &settings.storage;
    results.storage.load_start = crate::report::loadavg();
    results.storage.io_pressure_start = io_pressure();
    for &publishers in &s.publishers {
        progress.start(&format!(
            "storage: publish, {publishers} × {} events per call, memory and file stores",
            s.publish_batch
        ));
        // Tries are interleaved (memory, file always, file never, memory, …), so a change in
        // the shared machine's load falls on every store alike and the ratios stay fair.
        let mut runs: Vec<Vec<PublishRun>> = vec![vec![]; Backend::ALL.len()];
        for _ in 0..settings.throughput_tries {
            for (i, backend) in Backend::ALL.into_iter().enumerate() {
                match publish_throughput(backend, publishers, s).await {
                    Ok(run) => {
                        eprintln!(
                            "      try ({}): {:.2} M events/s, {} fsyncs",
                            backend.name(),
                            run.rate() / 1e6,
                            run.fsyncs
                        );
                        runs[i].push(run);
                    }
                    Err(err) => results.failed(progress, err),
                }
            }
        }
        let mut fastest = vec![];
        for tries in runs {
            let rates: Vec<f64> = tries.iter().map(PublishRun::rate).collect();
            if let Some(mut best) = tries
                .into_iter()
                .max_by(|a, b| a.rate().total_cmp(&b.rate()))
            {
                best.tries = rates;
                fastest.push(format!(
                    "{} {:.2} M/s",
                    best.backend.name(),
                    best.rate() / 1e6
                ));
                results.storage.publish.push(best);
            }
        }
        progress.done(&format!("fastest: {}", fastest.join(", ")));
    }
    for backend in Backend::ALL {
        progress.start(&format!(
            "storage: latency, {} at {} events/s",
            backend.name(),
            s.rate
        ));
        match publish_latency(backend, s, progress).await {
            Ok(r) => {
                progress.done(&format!(
                    "publish p99 {:.3} ms, push p99 {:.3} ms, fsync p99 {}",
                    ms(r.publish_p99),
                    ms(r.push_p99),
                    r.fsync_p99
                        .map_or("–".into(), |q| format!("{:.3} ms", q.estimate * 1e3))
                ));
                results.storage.latency.push(r);
            }
            Err(err) => results.failed(progress, err),
        }
    }
    progress.start(&format!(
        "storage: catch-up from the store, {} events behind a {:.0} MiB cache",
        s.catchup_events,
        s.catchup_cache_bytes as f64 / 1048576.0
    ));
    match catch_up_from_disk(settings, progress).await {
        Ok(runs) => {
            progress.done(
                &runs
                    .iter()
                    .map(|r| {
                        format!(
                            "{}: {:.2} M events/s, {} store reads",
                            r.page_cache(),
                            r.rate() / 1e6,
                            r.store_reads
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            results.storage.catchup.extend(runs);
        }
        Err(err) => results.failed(progress, err),
    }
    progress.start("storage: start on an empty data directory");
    match empty_start().await {
        Ok(took) => {
            progress.done(&format!("serving after {:.3} s", took.as_secs_f64()));
            results.storage.empty_start = Some(took);
        }
        Err(err) => results.failed(progress, err),
    }
    for &events in &s.recovery {
        progress.start(&format!("storage: recovery of {events} events"));
        match recovery(events, progress).await {
            Ok(r) => {
                progress.done(&format!(
                    "warm {:.3} s, cold {:.3} s, {:.1} bytes on disk per event",
                    r.warm.as_secs_f64(),
                    r.cold.as_secs_f64(),
                    r.du_per_event()
                ));
                results.storage.recovery.push(r);
            }
            Err(err) => results.failed(progress, err),
        }
    }
    results.storage.load_end = crate::report::loadavg();
    results.storage.io_pressure_end = io_pressure();
}

/// The machine's I/O pressure (`/proc/pressure/io`, "some": the share of time at least one task
/// waited for I/O) over the last 10 and 60 s, e.g. `1.2 % / 5.0 %`; empty without PSI.
fn io_pressure() -> String {
    let text = std::fs::read_to_string("/proc/pressure/io").unwrap_or_default();
    let Some(some) = text.lines().find(|l| l.starts_with("some")) else {
        return String::new();
    };
    let field = |name: &str| {
        some.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or("?")
            .to_owned()
    };
    format!("{} % / {} %", field("avg10="), field("avg60="))
}

/// One publish-throughput run.
#[derive(Debug, Clone)]
pub struct PublishRun {
    pub backend: Backend,
    pub publishers: usize,
    pub batch: usize,
    pub events: u64,
    pub rpcs: u64,
    pub elapsed: Duration,
    /// fdatasync calls the store made (its `fsync_seconds` count over the run), and their
    /// median and p99.
    pub fsyncs: u64,
    pub fsync_p50: Option<Quantile>,
    pub fsync_p99: Option<Quantile>,
    /// JetStream messages the store published over the run (one per group of Publish
    /// calls); 0 for the other stores.
    pub messages: u64,
    pub producer_cpu: Duration,
    /// Events/s of every try; the run kept is the fastest.
    pub tries: Vec<f64>,
}

impl PublishRun {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Publishes `settings.publish_events` flat out from `publishers` callers on a producer of its
/// own: see [`publish_throughput_on`].
pub async fn publish_throughput(
    backend: Backend,
    publishers: usize,
    settings: &StorageSettings,
) -> Result<PublishRun, String> {
    let dir = backend.is_file().then(data_dir).transpose()?;
    let producer = spawn(backend, dir.as_ref().map(TempDir::path), &[]).await?;
    let run = publish_throughput_on(
        &producer,
        backend,
        publishers,
        settings.publish_events,
        settings.publish_batch,
    )
    .await;
    producer.stop().await;
    run
}

/// Publishes `events` flat out to `producer` (on `backend`) from `publishers` callers, `batch`
/// per call, after a warm-up of a twentieth of that (the first segment file, allocator arenas,
/// HTTP/2 windows).
pub async fn publish_throughput_on(
    producer: &Proc,
    backend: Backend,
    publishers: usize,
    events: u64,
    batch: usize,
) -> Result<PublishRun, String> {
    let url = producer.url();
    publish_flat_out(&url, events / 20, publishers, batch).await?;
    let (m0, p0) = (scrape(producer).await?, producer.usage());
    let published = publish_flat_out(&url, events, publishers, batch).await?;
    let (m1, p1) = (scrape(producer).await?, producer.usage());
    let fsync = m1.histogram_since(&m0, FSYNC);
    if !published.complete {
        return Err(format!(
            "publish ({}): {} of {events} events",
            backend.name(),
            published.events,
        ));
    }
    Ok(PublishRun {
        backend,
        publishers,
        batch,
        events: published.events,
        rpcs: published.rpcs,
        elapsed: published.elapsed,
        fsyncs: fsync.count(),
        fsync_p50: fsync.quantile(0.5),
        fsync_p99: fsync.quantile(0.99),
        messages: m1.grew(&m0, JETSTREAM_MESSAGES),
        producer_cpu: p1.since(&p0).cpu,
        tries: vec![],
    })
}

/// One latency run at a fixed rate.
#[derive(Debug, Clone)]
pub struct LatencyRun {
    pub backend: Backend,
    pub rate: u64,
    pub published: u64,
    pub received: u64,
    pub publish_calls: u64,
    /// Publish call, sent → answered, at the publisher.
    pub publish_p50: Duration,
    pub publish_p99: Duration,
    /// The same per event: each event counted with its call's latency.
    pub publish_event_p99: Duration,
    /// Push end to end (`produced_at` → the consumer's receipt), from the consumer's histogram.
    pub push_p50: Duration,
    pub push_p99: Duration,
    /// The store's fdatasync calls in the window, and their p50 / p99 from its histogram.
    pub fsyncs: u64,
    pub fsync_p50: Option<Quantile>,
    pub fsync_p99: Option<Quantile>,
    pub fsync_buckets: Buckets,
}

/// [`publish_latency_on`] a producer of its own.
pub async fn publish_latency(
    backend: Backend,
    settings: &StorageSettings,
    progress: &mut Progress,
) -> Result<LatencyRun, String> {
    let dir = backend.is_file().then(data_dir).transpose()?;
    let producer = spawn(backend, dir.as_ref().map(TempDir::path), &[]).await?;
    let run =
        publish_latency_on(&producer, backend, settings.rate, settings.window, progress).await;
    producer.stop().await;
    run
}

/// A push consumer at the head of `producer`, and a publisher at `rate` for `window` (one call
/// in flight, what is due every millisecond). The fsync histogram is read before and after the
/// window.
pub async fn publish_latency_on(
    producer: &Proc,
    backend: Backend,
    rate: u64,
    window: Duration,
    progress: &mut Progress,
) -> Result<LatencyRun, String> {
    let push = Mode {
        name: consumer::Mode::Push.name(),
        args: strings(&["--mode", consumer::Mode::Push.name()]),
        interval: None,
    };
    let consumer = Proc::spawn(Role::Consumer, &consumer_args(producer, "latest", &push)).await?;
    let mut stats = ConsumerStats::connect(&consumer.url()).await?;
    stats.wait_ready().await?;
    let m0 = scrape(producer).await?;
    let published = publish_at_rate_isolated(&producer.url(), rate, window).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = stats.wait_for_events(published.events, progress).await?;
    let m1 = scrape(producer).await?;
    consumer.stop().await;
    let calls = published
        .call_latency
        .unwrap_or_else(crate::load::new_histogram);
    let by_event = published
        .event_latency
        .unwrap_or_else(crate::load::new_histogram);
    let fsync = m1.histogram_since(&m0, FSYNC);
    Ok(LatencyRun {
        backend,
        rate,
        published: published.events,
        received: s.events_received,
        publish_calls: published.rpcs,
        publish_p50: at(&calls, 0.5),
        publish_p99: at(&calls, 0.99),
        publish_event_p99: at(&by_event, 0.99),
        push_p50: duration_of(&s.latency_p50),
        push_p99: duration_of(&s.latency_p99),
        fsyncs: fsync.count(),
        fsync_p50: fsync.quantile(0.5),
        fsync_p99: fsync.quantile(0.99),
        fsync_buckets: fsync,
    })
}

fn at(h: &Histogram<u64>, q: f64) -> Duration {
    micros(h.value_at_quantile(q))
}

/// One catch-up from a store, past the tail cache.
#[derive(Debug, Clone)]
pub struct CatchUpRun {
    pub backend: Backend,
    /// Events in the log.
    pub log_events: u64,
    pub cache_bytes: u64,
    /// The data directory's size (du); 0 for the memory store.
    pub disk_bytes: u64,
    /// The segment files were evicted from the OS page cache before the read.
    pub cold: bool,
    /// Events counted from the first one received to the last, and the time that took.
    pub events: u64,
    pub elapsed: Duration,
    /// The producer's `store_reads` and `cache_reads` over the run.
    pub store_reads: u64,
    pub cache_reads: u64,
    pub producer_cpu: Duration,
    pub consumer_cpu: Duration,
    pub tries: Vec<f64>,
}

impl CatchUpRun {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn page_cache(&self) -> &'static str {
        match (self.backend, self.cold) {
            (Backend::Memory, _) => "memory store (reference)",
            (_, false) => "segments in the page cache",
            (_, true) => "segments evicted from the page cache",
        }
    }
}

/// A store with a small tail cache is filled, then one push consumer per try reads it all from
/// the oldest: the memory store for reference, then a file store (filled with `--fsync never`,
/// which reads do not depend on) with its segment files in the OS page cache, and evicted from
/// it (fdatasync + fadvise DONTNEED) before each try.
pub async fn catch_up_from_disk(
    settings: &Settings,
    progress: &mut Progress,
) -> Result<Vec<CatchUpRun>, String> {
    let s = &settings.storage;
    let cache = strings(&["--cache-bytes", &s.catchup_cache_bytes.to_string()]);
    let mut out = vec![];
    for backend in [Backend::Memory, Backend::FileNever] {
        let dir = backend.is_file().then(data_dir).transpose()?;
        let dir = dir.as_ref().map(TempDir::path);
        let producer = spawn(backend, dir, &cache).await?;
        let filled = publish_flat_out(&producer.url(), s.catchup_events, 2, MAX_PUBLISH).await?;
        progress.note(&format!(
            "{}: log filled with {} events in {:.2} s",
            backend.name(),
            s.catchup_events,
            filled.elapsed.as_secs_f64()
        ));
        let temperatures: &[bool] = if backend.is_file() {
            &[false, true]
        } else {
            &[false]
        };
        for &cold in temperatures {
            let mut runs: Vec<CatchUpRun> = vec![];
            for _ in 0..settings.throughput_tries {
                match dir {
                    Some(dir) if cold => off_runtime(dir, evict_page_cache).await?,
                    _ => {}
                }
                let run = catch_up_once(&producer, backend, dir, cold, s).await?;
                eprintln!(
                    "      try ({}): {:.2} M events/s, {} store reads, {} cache reads",
                    run.page_cache(),
                    run.rate() / 1e6,
                    run.store_reads,
                    run.cache_reads
                );
                runs.push(run);
            }
            let tries: Vec<f64> = runs.iter().map(CatchUpRun::rate).collect();
            if let Some(mut best) = runs
                .into_iter()
                .max_by(|a, b| a.rate().total_cmp(&b.rate()))
            {
                best.tries = tries;
                out.push(best);
            }
        }
        producer.stop().await;
    }
    Ok(out)
}

/// One push consumer process reads `producer`'s whole log from the oldest event.
async fn catch_up_once(
    producer: &Proc,
    backend: Backend,
    dir: Option<&Path>,
    cold: bool,
    s: &StorageSettings,
) -> Result<CatchUpRun, String> {
    let n = s.catchup_events;
    let push = Mode {
        name: consumer::Mode::Push.name(),
        args: strings(&["--mode", consumer::Mode::Push.name()]),
        interval: None,
    };
    let disk_bytes = dir
        .map(disk_usage)
        .transpose()?
        .unwrap_or_default()
        .allocated;
    let (m0, p0) = (scrape(producer).await?, producer.usage());
    let consumer = Proc::spawn(Role::Consumer, &consumer_args(producer, "earliest", &push)).await?;
    let c0 = consumer.usage();
    let mut stats = ConsumerStats::connect(&consumer.url()).await?;
    let (t0, t1, n0) = stats
        .wait_received(
            n,
            Duration::from_millis(5),
            Duration::from_secs(120),
            |got| eprintln!("      … {got} of {n} events"),
        )
        .await?;
    let (m1, p1, c1) = (scrape(producer).await?, producer.usage(), consumer.usage());
    consumer.stop().await;
    Ok(CatchUpRun {
        backend,
        log_events: n,
        cache_bytes: s.catchup_cache_bytes,
        disk_bytes,
        cold,
        events: n - n0,
        elapsed: t1 - t0,
        store_reads: m1.grew(&m0, STORE_READS),
        cache_reads: m1.grew(&m0, CACHE_READS),
        producer_cpu: p1.since(&p0).cpu,
        consumer_cpu: c1.since(&c0).cpu,
        tries: vec![],
    })
}

/// One recovery measurement.
#[derive(Debug, Clone)]
pub struct RecoveryRun {
    pub events: u64,
    /// How fast the log was filled (gRPC, 2 callers × 10,000 events, `--fsync never`).
    pub fill_rate: f64,
    /// How long the filled producer took to stop (it syncs what is not yet on disk); `None`
    /// if it had to be killed.
    pub stop: Option<Duration>,
    /// The data directory: du (allocated blocks) and the files' own sizes.
    pub disk_bytes: u64,
    pub apparent_bytes: u64,
    /// What the producer reported before it stopped.
    pub segments: u64,
    pub retained_bytes: u64,
    /// Start → first Poll answered with the whole log: segment files in the page cache
    /// (as after a producer restart), and evicted from it (as after a machine restart).
    pub warm: Duration,
    pub cold: Duration,
}

impl RecoveryRun {
    pub fn du_per_event(&self) -> f64 {
        self.disk_bytes as f64 / self.events.max(1) as f64
    }
}

/// Fills a data directory with `events`, stops the producer, then times two fresh starts.
pub async fn recovery(events: u64, progress: &mut Progress) -> Result<RecoveryRun, String> {
    let dir = data_dir()?;
    let producer = spawn(Backend::FileNever, Some(dir.path()), &[]).await?;
    let filled = publish_flat_out(&producer.url(), events, 2, MAX_PUBLISH).await?;
    let m = scrape(&producer).await?;
    progress.note(&format!(
        "filled in {:.2} s; stopping",
        filled.elapsed.as_secs_f64()
    ));
    let stop = producer.stop_within(Duration::from_secs(300)).await;
    let usage = off_runtime(dir.path(), disk_usage).await?;
    let warm = time_to_serve(dir.path(), events).await?;
    progress.note(&format!("warm start {:.3} s", warm.as_secs_f64()));
    off_runtime(dir.path(), evict_page_cache).await?;
    let cold = time_to_serve(dir.path(), events).await?;
    Ok(RecoveryRun {
        events,
        fill_rate: filled.events as f64 / filled.elapsed.as_secs_f64().max(1e-9),
        stop,
        disk_bytes: usage.allocated,
        apparent_bytes: usage.apparent,
        segments: m.value(SEGMENTS).unwrap_or(0.0) as u64,
        retained_bytes: m.value(RETAINED_BYTES).unwrap_or(0.0) as u64,
        warm,
        cold,
    })
}

/// A start on an empty data directory, timed as [`recovery`] times one.
pub async fn empty_start() -> Result<Duration, String> {
    let dir = data_dir()?;
    time_to_serve(dir.path(), 0).await
}

/// Starts a file-store producer on `dir` and polls it until it answers, checking that the
/// head it reports is `head`; returns the time from the start of the process.
async fn time_to_serve(dir: &Path, head: u64) -> Result<Duration, String> {
    let started = Instant::now();
    let mut producer = spawn(Backend::FileNever, Some(dir), &[]).await?;
    let limit = Duration::from_secs(300);
    let answered = loop {
        // Until the producer serves, a connection waits in the listen backlog or is refused.
        let poll = async {
            let mut client = producer_client(channel(&producer.url()).await?);
            client
                .poll(pushpull::pb::PollRequest {
                    after_sequence: None,
                    max_events: 1,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().head_sequence)
                .map_err(|s| format!("poll: {s}"))
        };
        match tokio::time::timeout(limit, poll).await {
            Ok(Ok(h)) => break Ok((started.elapsed(), h)),
            Ok(Err(_)) if started.elapsed() < limit && producer.running() => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(Err(err)) => break Err(format!("producer on {}: {err}", dir.display())),
            Err(_) => break Err(format!("producer on {} did not answer", dir.display())),
        }
    };
    producer.stop_within(Duration::from_secs(60)).await;
    let (took, h) = answered?;
    if h != head {
        return Err(format!(
            "producer on {} recovered head {h}, expected {head}",
            dir.display()
        ));
    }
    Ok(took)
}

/// Runs file-system work on `dir` on the blocking pool, off the runtime's workers (which also
/// drive the publishers and the scrapes being timed).
async fn off_runtime<T: Send + 'static>(
    dir: &Path,
    work: fn(&Path) -> Result<T, String>,
) -> Result<T, String> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || work(&dir))
        .await
        .map_err(|e| e.to_string())?
}

/// A directory's size on disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskUsage {
    /// Allocated blocks, as `du` counts them (directories included).
    pub allocated: u64,
    /// The files' lengths.
    pub apparent: u64,
}

fn disk_usage(dir: &Path) -> Result<DiskUsage, String> {
    let mut usage = DiskUsage::default();
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    usage.allocated += meta.blocks() * 512;
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let meta = entry.metadata().map_err(|e| e.to_string())?;
        if meta.is_dir() {
            let sub = disk_usage(&entry.path())?;
            usage.allocated += sub.allocated;
            usage.apparent += sub.apparent;
        } else {
            usage.allocated += meta.blocks() * 512;
            usage.apparent += meta.len();
        }
    }
    Ok(usage)
}

/// Drops every file under `dir` from the OS page cache, so the next read comes from the disk.
/// Dirty pages cannot be dropped, so each file is synced first.
fn evict_page_cache(dir: &Path) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path();
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            evict_page_cache(&path)?;
            continue;
        }
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        file.sync_data()
            .map_err(|e| format!("sync {}: {e}", path.display()))?;
        // SAFETY: a plain syscall on a file descriptor that `file` keeps open.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(format!(
                "fadvise {}: {}",
                path.display(),
                std::io::Error::from_raw_os_error(rc)
            ));
        }
    }
    Ok(())
}
