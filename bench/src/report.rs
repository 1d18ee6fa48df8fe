//! The results: targets as pass/miss, the Markdown report, a JSON copy and the SVG charts.
//! The JetStream section's are in [`jetstream`], the peers' in [`peers`], the soak's in
//! [`soak`].

mod jetstream;
mod peers;
mod soak;

use std::{fmt::Write as _, path::Path, time::Duration};

use plotters::prelude::*;
use serde_json::json;

use crate::{
    Progress,
    jetstream::JetStreamResults,
    peers::PeerResults,
    scenarios::{FanoutRun, LatencyRun, OutageRun, Settings, SlowRun, ThroughputRun, mib, ms},
    scrape::Quantile,
    soak::SoakRun,
    storage::{Backend, StorageResults},
};

/// Everything one run measured.
pub struct Results {
    pub settings: Settings,
    pub machine: Machine,
    pub latency: Vec<LatencyRun>,
    /// (rate, events published, producer CPU) with no reader at all.
    pub baseline: Vec<(u64, u64, Duration)>,
    pub throughput: Vec<ThroughputRun>,
    pub fanout: Vec<FanoutRun>,
    pub slow: Option<SlowRun>,
    pub outage: Vec<OutageRun>,
    pub storage: StorageResults,
    pub jetstream: JetStreamResults,
    pub peers: PeerResults,
    pub soak: Option<SoakRun>,
    /// The scenarios this run was asked for (`--only`, or the default set), by their flag
    /// names: what `check` then requires.
    pub scenarios: Vec<String>,
    pub errors: Vec<String>,
}

impl Results {
    pub fn new(settings: &Settings) -> Self {
        Self {
            settings: settings.clone(),
            machine: Machine::now(),
            latency: vec![],
            baseline: vec![],
            throughput: vec![],
            fanout: vec![],
            slow: None,
            outage: vec![],
            storage: StorageResults::default(),
            jetstream: JetStreamResults::default(),
            peers: PeerResults::default(),
            soak: None,
            scenarios: vec![],
            errors: vec![],
        }
    }

    pub fn failed(&mut self, progress: &mut Progress, err: String) {
        progress.note("");
        eprintln!("      FAILED: {err}");
        self.errors.push(err);
    }

    pub fn finish(&mut self) {
        self.machine.load_end = loadavg();
        self.machine.finished_at = utc_now();
    }

    fn latency_of(&self, mode: &str, rate: u64) -> Option<&LatencyRun> {
        self.latency
            .iter()
            .find(|r| r.mode == mode && r.rate == rate)
    }

    /// Producer CPU per event spent on delivery: the run's, minus the publisher-alone baseline.
    pub fn delivery_cpu_us(&self, l: &LatencyRun) -> Option<f64> {
        let &(_, events, cpu) = self.baseline.iter().find(|b| b.0 == l.rate)?;
        let base = per_event_us(cpu, events);
        Some((per_event_us(l.producer_cpu, l.received) - base).max(0.0))
    }

    fn throughput_of(&self, prefix: &str) -> Option<&ThroughputRun> {
        self.throughput.iter().find(|r| r.name.starts_with(prefix))
    }

    /// The issue's targets, judged on this run's numbers.
    pub fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let rate_target = |name: &str, run: Option<&ThroughputRun>, min: f64| Target {
            name: name.to_owned(),
            measured: run.map_or("not measured".into(), |r| {
                format!("{:.2} M events/s", r.rate() / 1e6)
            }),
            pass: run.map(|r| r.rate() >= min),
        };
        t.push(rate_target(
            "one Subscribe stream catching up ≥ 3 M events/s (64-byte payloads)",
            self.throughput_of("push catching up"),
            3e6,
        ));
        t.push(rate_target(
            "live publish → subscribe ≥ 1.5 M events/s",
            self.throughput_of("push live"),
            1.5e6,
        ));
        t.push(rate_target(
            "Poll draining with max_events 1000 ≥ 3 M events/s",
            self.throughput_of("poll (max_events 1000) catching up"),
            3e6,
        ));
        // The latency targets are for 10,000 events/s; a quick run has one rate only.
        let rate = if self.settings.rates.contains(&10_000) {
            10_000
        } else {
            self.settings.rates[0]
        };
        let push = self.latency_of(consumer::Mode::Push.name(), rate);
        t.push(Target {
            name: format!("push p99 at {rate} events/s ≤ 1 ms"),
            measured: push.map_or("not measured".into(), |r| format!("{:.3} ms", ms(r.p99))),
            pass: push.map(|r| r.p99 <= Duration::from_millis(1)),
        });
        let long = self.latency_of(consumer::Mode::LongPoll.name(), rate);
        t.push(Target {
            name: format!("long-poll p99 ≤ 2 × push p99 (at {rate} events/s)"),
            measured: match (long, push) {
                (Some(l), Some(p)) => format!(
                    "{:.3} ms vs {:.3} ms ({:.2}×)",
                    ms(l.p99),
                    ms(p.p99),
                    ms(l.p99) / ms(p.p99).max(1e-9)
                ),
                _ => "not measured".into(),
            },
            pass: match (long, push) {
                (Some(l), Some(p)) => Some(l.p99 <= p.p99 * 2),
                _ => None,
            },
        });
        for (mode, interval) in [
            ("poll 10ms", 10.0),
            ("poll 100ms", 100.0),
            ("poll 1s", 1000.0),
        ] {
            let run = self.latency_of(mode, rate);
            t.push(Target {
                name: format!(
                    "{mode}: median ≈ half the interval ({:.0} ms ± 30 %)",
                    interval / 2.0
                ),
                measured: run.map_or("not measured".into(), |r| format!("{:.1} ms", ms(r.p50))),
                pass: run.map(|r| (ms(r.p50) - interval / 2.0).abs() <= 0.3 * interval / 2.0),
            });
        }
        let thousand = self.fanout.iter().find(|f| f.subscribers == 1_000);
        t.push(Target {
            name: "1,000 subscribers × 1,000 events/s: all delivered".into(),
            measured: thousand.map_or("not run (quick mode)".into(), |f| {
                format!(
                    "{} of {} in {:.1} s",
                    f.delivered,
                    f.published * f.subscribers as u64,
                    f.elapsed.as_secs_f64()
                )
            }),
            pass: thousand.map(|f| f.all_delivered),
        });
        t.extend(self.fanout_targets());
        if let Some(s) = &self.slow {
            let p99_ok =
                s.p99_after <= (s.p99_before * 2).max(s.p99_before + Duration::from_millis(1));
            let rss_ok = s.rss_peak_after <= s.rss_peak_before + 8 * 1024 * 1024;
            t.push(Target {
                name: "slow consumer: others' p99 (≤ 2× or +1 ms) and producer memory (≤ +8 MiB) do not move".into(),
                measured: format!(
                    "p99 {:.2} → {:.2} ms, RSS {:.1} → {:.1} MiB",
                    ms(s.p99_before),
                    ms(s.p99_after),
                    mib(s.rss_peak_before),
                    mib(s.rss_peak_after)
                ),
                pass: Some(p99_ok && rss_ok && s.delivered_after),
            });
        }
        t.extend(self.storage_targets());
        t.extend(jetstream::targets(self));
        t.extend(peers::targets(self));
        t.extend(soak::targets(self));
        t
    }

    /// Issue 13's fan-out targets, for its 10,000 subscribers (the case [`Settings::full`]
    /// runs: a unit test holds the two together).
    fn fanout_targets(&self) -> Vec<Target> {
        let case = FANOUT_CASE;
        let run = self
            .fanout
            .iter()
            .find(|f| f.subscribers == FANOUT_SUBSCRIBERS && f.rate == FANOUT_RATE);
        let not_run = || "not run (a full run's fan-out has it)".to_owned();
        vec![
            Target {
                name: format!("{case}: every event delivered"),
                measured: run.map_or_else(not_run, |f| {
                    format!(
                        "{} of {} in {:.1} s",
                        f.delivered,
                        f.published * f.subscribers as u64,
                        f.elapsed.as_secs_f64()
                    )
                }),
                pass: run
                    .map(|f| f.all_delivered && f.delivered == f.published * f.subscribers as u64),
            },
            Target {
                name: format!(
                    "{case}: producer RSS ≤ {:.0} KB per idle subscriber",
                    FANOUT_IDLE_BYTES / 1000.0
                ),
                measured: run.map_or_else(not_run, |f| {
                    format!("{:.1} KB each", f.idle_bytes_per_subscriber() / 1000.0)
                }),
                pass: run.map(|f| f.idle_bytes_per_subscriber() <= FANOUT_IDLE_BYTES),
            },
            Target {
                name: format!(
                    "{case}: p99 ≤ {} ms publish-to-receipt",
                    FANOUT_P99.as_millis()
                ),
                measured: run.map_or_else(not_run, |f| format!("{:.2} ms", ms(f.p99))),
                pass: run.map(|f| f.p99 <= FANOUT_P99),
            },
            Target {
                name: format!(
                    "{case}: worst ≤ {} ms publish-to-receipt",
                    FANOUT_MAX.as_millis()
                ),
                measured: run.map_or_else(not_run, |f| format!("{:.2} ms", ms(f.max))),
                pass: run.map(|f| f.max <= FANOUT_MAX),
            },
        ]
    }

    /// The storage targets of issue 9.
    fn storage_targets(&self) -> Vec<Target> {
        let st = &self.storage;
        let mut t = Vec::new();
        for publishers in &self.settings.storage.publishers {
            let run = |b: Backend| {
                st.publish
                    .iter()
                    .find(|r| r.backend == b && r.publishers == *publishers)
            };
            let (file, memory) = (run(Backend::FileAlways), run(Backend::Memory));
            t.push(Target {
                name: format!(
                    "file store (fsync always) Publish ≥ 0.7 × memory ({publishers} publisher(s) × {} events per call)",
                    self.settings.storage.publish_batch
                ),
                measured: match (file, memory) {
                    (Some(f), Some(m)) => format!(
                        "{:.2} M vs {:.2} M events/s ({:.2}×)",
                        f.rate() / 1e6,
                        m.rate() / 1e6,
                        f.rate() / m.rate().max(1e-9)
                    ),
                    _ => "not measured".into(),
                },
                pass: match (file, memory) {
                    (Some(f), Some(m)) => Some(f.rate() >= 0.7 * m.rate()),
                    _ => None,
                },
            });
        }
        let rate = self.settings.storage.rate;
        let file = st.latency.iter().find(|l| l.backend == Backend::FileAlways);
        for (what, pick) in [
            (
                "publish",
                (|l: &crate::storage::LatencyRun| l.publish_p99)
                    as fn(&crate::storage::LatencyRun) -> Duration,
            ),
            ("push end-to-end", |l| l.push_p99),
        ] {
            let fsync = file.and_then(|l| l.fsync_p99.map(|q| (l, q)));
            t.push(Target {
                name: format!(
                    "file store (fsync always): {what} p99 ≤ fsync p99 + 1 ms (at {rate} events/s)"
                ),
                measured: match (file, fsync) {
                    (_, Some((l, q))) => {
                        format!("{:.3} ms vs fsync p99 {} ms", ms(pick(l)), quantile_ms(&q))
                    }
                    (Some(l), None) => {
                        format!("{:.3} ms; no fsync in the window", ms(pick(l)))
                    }
                    _ => "not measured".into(),
                },
                pass: fsync.map(|(l, q)| ms(pick(l)) <= q.estimate * 1e3 + 1.0),
            });
        }
        let warm = st
            .catchup
            .iter()
            .find(|c| c.backend != Backend::Memory && !c.cold);
        let cold = st.catchup.iter().find(|c| c.cold);
        t.push(Target {
            name: "one Subscribe stream catching up from disk (log ≥ 10 × the tail cache) ≥ 2 M events/s".into(),
            measured: warm.map_or("not measured".into(), |w| {
                format!(
                    "{:.2} M events/s, {} store reads, log {:.0} MiB on disk / cache {:.0} MiB{}",
                    w.rate() / 1e6,
                    w.store_reads,
                    mib(w.disk_bytes),
                    mib(w.cache_bytes),
                    cold.map_or(String::new(), |c| format!(
                        "; page cache evicted: {:.2} M events/s",
                        c.rate() / 1e6
                    ))
                )
            }),
            pass: warm.map(|w| {
                w.rate() >= 2e6 && w.store_reads > 0 && w.disk_bytes >= 10 * w.cache_bytes
            }),
        });
        t
    }
}

/// Issue 13's fan-out case and its bounds: producer memory per idle subscriber (decimal KB,
/// as the report prints it), p99 and worst latency.
const FANOUT_CASE: &str =
    "10,000 subscribers / 100 connections, 100 events/s each for 5 s (64-byte payloads)";
const FANOUT_SUBSCRIBERS: usize = 10_000;
const FANOUT_RATE: u64 = 100;
const FANOUT_IDLE_BYTES: f64 = 8_000.0;
const FANOUT_P99: Duration = Duration::from_millis(20);
const FANOUT_MAX: Duration = Duration::from_millis(50);

/// A quantile from histogram buckets, in ms, with the bucket it lies in.
fn quantile_ms(q: &Quantile) -> String {
    let upper = if q.upper.is_finite() {
        format!("{:.3}", q.upper * 1e3)
    } else {
        "∞".into()
    };
    format!(
        "≈ {:.3} (bucket {:.3}–{upper})",
        q.estimate * 1e3,
        q.lower * 1e3
    )
}

/// One target and whether this run met it (`None`: not measured in this run).
pub struct Target {
    pub name: String,
    pub measured: String,
    pub pass: Option<bool>,
}

impl Target {
    pub fn verdict(&self) -> &'static str {
        match self.pass {
            Some(true) => "pass",
            Some(false) => "MISS",
            None => "n/a",
        }
    }
}

/// What the numbers were measured on.
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory: String,
    pub kernel: String,
    pub load_start: String,
    pub load_end: String,
    pub busiest: String,
    pub commit: String,
    pub started_at: String,
    pub finished_at: String,
    pub profile: &'static str,
}

impl Machine {
    fn now() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or("unknown".into(), |s| s.trim().to_owned());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let kb: u64 = m
                    .lines()
                    .find(|l| l.starts_with("MemTotal:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                Some(format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
            })
            .unwrap_or_else(|| "unknown".into());
        let commit = command("git", &["rev-parse", "--short", "HEAD"]);
        let dirty = !command("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            memory,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            load_start: loadavg(),
            load_end: String::new(),
            // ps's %CPU is over each process's lifetime; the benchmark itself is left out.
            busiest: command("ps", &["-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"])
                .lines()
                .filter(|l| !l.contains("pushpull-bench") && !l.contains(" ps"))
                .take(5)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join(", "),
            commit: if dirty {
                format!("{commit} (+ uncommitted changes)")
            } else {
                commit
            },
            started_at: utc_now(),
            finished_at: String::new(),
            profile: if cfg!(debug_assertions) {
                "debug (numbers not meaningful)"
            } else {
                "release"
            },
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{} × {}, load {}",
            self.cpus, self.cpu_model, self.load_start
        )
    }
}

fn command(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn utc_now() -> String {
    command("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"])
}

/// Writes results.md, results.json, latency.svg, throughput.svg and fanout.svg into `dir`.
pub fn write(dir: &Path, results: &Results, targets: &[Target]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let save = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    save("results.md", markdown(results, targets))?;
    save(
        "results.json",
        serde_json::to_string_pretty(&to_json(results, targets)).map_err(|e| e.to_string())?,
    )?;
    latency_chart(&dir.join("latency.svg"), results).map_err(|e| format!("latency.svg: {e}"))?;
    throughput_chart(&dir.join("throughput.svg"), results)
        .map_err(|e| format!("throughput.svg: {e}"))?;
    fanout_chart(&dir.join("fanout.svg"), results).map_err(|e| format!("fanout.svg: {e}"))?;
    Ok(())
}

fn per_event_us(d: Duration, events: u64) -> f64 {
    if events == 0 {
        0.0
    } else {
        d.as_secs_f64() * 1e6 / events as f64
    }
}

fn markdown(r: &Results, targets: &[Target]) -> String {
    let m = &r.machine;
    let s = &r.settings;
    let mut o = String::new();
    let _ = writeln!(o, "# pushpull benchmark: push vs pull\n");
    let _ = writeln!(
        o,
        "Generated by `cargo run --release -p pushpull-bench -- {}` (scenarios: {}) — do not edit by hand.\n",
        if s.quick { "--quick" } else { "--full" },
        r.scenarios.join(", ")
    );
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| run | {} → {} |", m.started_at, m.finished_at);
    let _ = writeln!(o, "| commit | {} |", m.commit);
    let _ = writeln!(o, "| build | {} |", m.profile);
    let _ = writeln!(
        o,
        "| machine | {} CPUs, {}, {} RAM, Linux {} |",
        m.cpus, m.cpu_model, m.memory, m.kernel
    );
    let _ = writeln!(
        o,
        "| load average (1/5/15 min) | {} at start, {} at end |",
        m.load_start, m.load_end
    );
    let _ = writeln!(
        o,
        "| other busiest processes at start (%CPU over their lifetime) | {} |",
        m.busiest
    );
    let _ = writeln!(
        o,
        "| settings | payload 64 B, one topic; latency window {:.1} s per mode and rate; catch-up {} events; live {} events; fan-out {} for {:.0} s, {} streams per HTTP/2 connection; producer defaults (batch 1,000 events, heartbeat 5 s) |",
        s.window.as_secs_f64(),
        s.catchup_events,
        s.live_events,
        s.fanout
            .iter()
            .map(|c| format!("{} at {} events/s", c.subscribers, c.rate))
            .collect::<Vec<_>>()
            .join(", "),
        s.fanout_window.as_secs_f64(),
        s.streams_per_connection
    );
    let _ = writeln!(
        o,
        "| processes | producer and consumer are separate processes (`producer::run_with`, `consumer::run`) on 127.0.0.1, every producer with an explicit `--store` (memory outside the storage section); the publisher and the fan-out subscribers run in the benchmark process |\n"
    );
    if !r.errors.is_empty() {
        let _ = writeln!(o, "**Scenarios that failed to run:**\n");
        for e in &r.errors {
            let _ = writeln!(o, "- {e}");
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(
        o,
        "## Targets\n\n| target | measured | verdict |\n|---|---|---|"
    );
    for t in targets {
        let _ = writeln!(o, "| {} | {} | {} |", t.name, t.measured, t.verdict());
    }

    let _ = writeln!(
        o,
        "\n## Latency by mode and rate\n\nEnd-to-end: the producer's append time (`produced_at`) to the consumer's receipt, from the consumer's HDR histogram. Cost per event over the window: calls (the consumer's RPCs, and for webhook the producer's POSTs to it), bytes through the consumer's sockets (HTTP/2 and gRPC framing included; `/proc/PID/io`), CPU of each process. The producer's CPU includes serving the publisher; the delivery column subtracts a run with the publisher alone at the same rate (CPU time is counted in 10 ms ticks, so low rates are coarse).\n"
    );
    let _ = writeln!(
        o,
        "| mode | events/s | delivered | p50 ms | p99 ms | p99.9 ms | max ms | calls | empty responses | bytes/event | producer CPU µs/event | of which delivery | consumer CPU µs/event |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    for l in &r.latency {
        let _ = writeln!(
            o,
            "| {} | {} | {}/{} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {:.0} | {:.1} | {} | {:.1} |",
            l.mode,
            l.rate,
            l.received,
            l.published,
            ms(l.p50),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            l.rpcs,
            l.empty_responses,
            l.per_event((l.consumer_read_bytes + l.consumer_written_bytes) as f64),
            per_event_us(l.producer_cpu, l.received),
            r.delivery_cpu_us(l)
                .map_or("–".into(), |v| format!("{v:.1}")),
            per_event_us(l.consumer_cpu, l.received),
        );
    }

    let _ = writeln!(
        o,
        "\n## Throughput\n\nEach run is tried {} time(s) and the fastest is reported (other work on a shared machine only slows a run down); every try is listed.\n\n| run | events | seconds | events/s | tries, M/s | RPCs | bytes/event | producer CPU µs/event | consumer CPU µs/event |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        s.throughput_tries
    );
    for t in &r.throughput {
        let _ = writeln!(
            o,
            "| {} | {} | {:.3} | {:.2} M | {} | {} | {:.0} | {:.2} | {:.2} |",
            t.name,
            t.events,
            t.elapsed.as_secs_f64(),
            t.rate() / 1e6,
            t.tries
                .iter()
                .map(|r| format!("{:.2}", r / 1e6))
                .collect::<Vec<_>>()
                .join(", "),
            t.rpcs,
            t.consumer_read_bytes as f64 / t.events.max(1) as f64,
            per_event_us(t.producer_cpu, t.events),
            per_event_us(t.consumer_cpu, t.events),
        );
    }

    let _ = writeln!(
        o,
        "\n## Fan-out\n\nSubscribers are Subscribe streams made with the generated client in the benchmark process, {} per HTTP/2 connection; each count has its own publish rate, for {:.0} s. Memory per subscriber: producer RSS with every stream attached and idle, minus RSS before, divided by the count. Latency: from the producer's `produced_at` (set as it appends) to the subscriber's receipt, over every delivery; max is the slowest of all. Per response: each subscriber gets what it is behind in one response, so when the two processes cannot keep up with one response per subscriber per event, responses carry several events and latency grows to the time one round of responses takes; the CPU columns say what a response costs the producer and the benchmark's client (its 10,000 generated-client streams decode on the same two cores).\n",
        s.streams_per_connection,
        s.fanout_window.as_secs_f64()
    );
    let _ = writeln!(
        o,
        "| subscribers | published events/s | producer RSS before → idle MiB | per idle subscriber KB | delivered | all delivered | seconds to deliver | events/s per subscriber | p50 ms | p99 ms | max ms | producer RSS peak MiB | producer CPU s | events per response | producer CPU µs per response | client CPU µs per response |\n|--:|--:|--:|--:|--:|:-:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    for f in &r.fanout {
        let secs = f.elapsed.as_secs_f64();
        let _ = writeln!(
            o,
            "| {} | {} | {:.1} → {:.1} | {:.1} | {}/{} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} |",
            f.subscribers,
            f.rate,
            mib(f.rss_before),
            mib(f.rss_idle),
            f.idle_bytes_per_subscriber() / 1000.0,
            f.delivered,
            f.published * f.subscribers as u64,
            if f.all_delivered { "yes" } else { "no" },
            secs,
            f.delivered as f64 / f.subscribers as f64 / secs.max(1e-9),
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            mib(f.rss_peak),
            f.producer_cpu.as_secs_f64(),
            f.delivered as f64 / f.responses.max(1) as f64,
            f.producer_cpu.as_secs_f64() * 1e6 / f.responses.max(1) as f64,
            f.client_cpu.as_secs_f64() * 1e6 / f.responses.max(1) as f64,
        );
    }

    if let Some(sl) = &r.slow {
        let _ = writeln!(
            o,
            "\n## Slow consumer\n\n{} subscribers read at {} events/s for {:.0} s; then one more subscriber (its own connection, a 64 KiB HTTP/2 window, from the oldest event) stops reading and the same load runs again.\n",
            sl.subscribers,
            s.slow_rate,
            s.slow_window.as_secs_f64()
        );
        let _ = writeln!(
            o,
            "| phase | others' p99 ms | producer RSS peak MiB | others got every event |\n|---|--:|--:|:-:|\n| all reading | {:.2} | {:.1} | {} |\n| one stalled ({} events behind at the end) | {:.2} | {:.1} | {} |",
            ms(sl.p99_before),
            mib(sl.rss_peak_before),
            yes(sl.delivered_before),
            sl.stalled_lag,
            ms(sl.p99_after),
            mib(sl.rss_peak_after),
            yes(sl.delivered_after),
        );
    }

    if !r.outage.is_empty() {
        let _ = writeln!(
            o,
            "\n## Receiver down\n\nEvents are published at {} events/s throughout; the consumer (with a checkpoint) runs for {:.1} s, stops, stays down for {:.1} s, and starts again from its checkpoint while publishing goes on for {:.1} s. The backlog is what was published after its checkpoint and before it started again; recovery is from its start until it had all of the backlog. A webhook consumer Polls from its checkpoint at start, then registers its subscription from where the Polls stopped; meanwhile the producer retried the dead endpoint with backoff.\n",
            s.outage_rate,
            s.outage_before.as_secs_f64(),
            s.outage_down.as_secs_f64(),
            s.outage_after.as_secs_f64(),
        );
        let _ = writeln!(
            o,
            "| mode | backlog events | recovery ms | backlog events/s | got by Poll | webhooks accepted | producer retries while down | missed | duplicates | every event once |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|:-:|"
        );
        for x in &r.outage {
            let _ = writeln!(
                o,
                "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |",
                x.mode,
                x.backlog,
                x.recovery.as_secs_f64() * 1000.0,
                x.backlog as f64 / x.recovery.as_secs_f64().max(1e-6),
                x.backfilled,
                x.webhooks,
                x.retries_while_down,
                x.missed,
                x.duplicates,
                yes(x.missed == 0 && x.last_sequence == x.published),
            );
        }
    }

    storage_markdown(&mut o, r);
    jetstream::markdown(&mut o, r);
    if r.scenarios.iter().any(|s| s == "peers") {
        peers::markdown(&mut o, r);
    }
    soak::markdown(&mut o, r);

    let _ = writeln!(
        o,
        "\n## Charts\n\n![Latency by mode and rate](latency.svg)\n\n![Throughput](throughput.svg)\n\n![Fan-out](fanout.svg)"
    );
    o
}

/// The Storage section: the memory store and the file store side by side.
fn storage_markdown(o: &mut String, r: &Results) {
    let st = &r.storage;
    let s = &r.settings.storage;
    let _ = writeln!(
        o,
        "\n## Storage\n\nThe memory store and the file store (`--store file`, `--fsync always`, the default, and `--fsync never`) side by side in one run, 64-byte payloads; every file store in a temporary `--data-dir` of its own on the machine's disk. Load average (1/5/15 min) during this section: {} at start, {} at end; I/O pressure (share of time some task waited for I/O, last 10 s / 60 s; fsync times follow it): {} at start, {} at end.\n",
        or_dash(&st.load_start),
        or_dash(&st.load_end),
        or_dash(&st.io_pressure_start),
        or_dash(&st.io_pressure_end)
    );
    if st.publish.is_empty() && st.latency.is_empty() && st.catchup.is_empty() {
        let _ = writeln!(o, "Not run (`--only` left it out).");
        return;
    }
    let _ = writeln!(
        o,
        "### Publish throughput\n\n{} events flat out per run, {} per Publish, after a warm-up of a twentieth of that; each tried {} time(s), the stores' tries interleaved (memory, file, file, memory, …) so that a change in the machine's load falls on all of them, the fastest kept. fsyncs: the store's `fsync_seconds` count over the run (one per group commit), and its p50 and p99. With one publisher a call waits for its own write and fsync before the next is sent, so nothing overlaps them: a call takes the memory store's time plus the write and the fsync.\n\n| store | publishers | events/s | tries, M/s | × memory | µs per call | Publish calls | fsyncs | events per fsync | fsync p50 ms | fsync p99 ms | producer CPU µs/event |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        s.publish_events, s.publish_batch, r.settings.throughput_tries
    );
    for p in &st.publish {
        let memory = st
            .publish
            .iter()
            .find(|m| m.backend == Backend::Memory && m.publishers == p.publishers);
        let _ = writeln!(
            o,
            "| {} | {} | {:.2} M | {} | {} | {:.0} | {} | {} | {} | {} | {} | {:.2} |",
            p.backend.name(),
            p.publishers,
            p.rate() / 1e6,
            p.tries
                .iter()
                .map(|r| format!("{:.2}", r / 1e6))
                .collect::<Vec<_>>()
                .join(", "),
            memory.map_or("–".into(), |m| format!(
                "{:.2}",
                p.rate() / m.rate().max(1e-9)
            )),
            // Each caller's wall time per call (calls of different callers overlap).
            p.elapsed.as_secs_f64() * 1e6 * p.publishers as f64 / p.rpcs.max(1) as f64,
            p.rpcs,
            p.fsyncs,
            if p.fsyncs == 0 {
                "–".into()
            } else {
                format!("{:.0}", p.events as f64 / p.fsyncs as f64)
            },
            p.fsync_p50.as_ref().map_or("–".into(), quantile_ms),
            p.fsync_p99.as_ref().map_or("–".into(), quantile_ms),
            per_event_us(p.producer_cpu, p.events),
        );
    }
    let _ = writeln!(
        o,
        "\n### Publish and push latency at {} events/s, next to the store's fsync\n\nOne publisher, one call in flight, what is due every millisecond, for {:.1} s; one push consumer process at the head. Publish: sent → answered at the publisher, per call (as fsync is per group commit, here one per call), and per event (each event counted with its call's time; a call sent late after a slow one carries more events). Push, per event: `produced_at` (set before the write) → the consumer's receipt. fsync: the producer's `fsync_seconds` histogram over the same window; its p50/p99 are interpolated within a bucket, and the bucket is shown.\n\n| store | delivered | Publish calls | publish p50 ms | publish p99 ms | publish p99 by event ms | push p50 ms | push p99 ms | fsyncs | fsync p50 ms | fsync p99 ms | publish p99 − fsync p99 | push p99 − fsync p99 |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        s.rate,
        s.window.as_secs_f64()
    );
    for l in &st.latency {
        let minus = |d: Duration| {
            l.fsync_p99.map_or("–".into(), |q| {
                format!("{:+.3} ms", ms(d) - q.estimate * 1e3)
            })
        };
        let _ = writeln!(
            o,
            "| {} | {}/{} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} | {} |",
            l.backend.name(),
            l.received,
            l.published,
            l.publish_calls,
            ms(l.publish_p50),
            ms(l.publish_p99),
            ms(l.publish_event_p99),
            ms(l.push_p50),
            ms(l.push_p99),
            l.fsyncs,
            l.fsync_p50.as_ref().map_or("–".into(), quantile_ms),
            l.fsync_p99.as_ref().map_or("–".into(), quantile_ms),
            minus(l.publish_p99),
            minus(l.push_p99),
        );
    }
    if let Some(l) = st
        .latency
        .iter()
        .find(|l| l.backend == Backend::FileAlways && l.fsyncs > 0)
    {
        let mut below = 0;
        let buckets: Vec<String> = l
            .fsync_buckets
            .cumulative
            .iter()
            .map(|&(le, count)| {
                let n = count - below;
                below = count;
                if le.is_finite() {
                    format!("≤ {:.3} ms: {n}", le * 1e3)
                } else {
                    format!("above: {n}")
                }
            })
            .collect();
        let _ = writeln!(
            o,
            "\nfsync_seconds over the fsync-always window, per bucket: {}.",
            buckets.join(", ")
        );
    }
    let _ = writeln!(
        o,
        "\n### Catch-up from disk\n\nA store with `--cache-bytes {}` filled with {} events; one push consumer process reads it all from the oldest event: the memory store for reference, then a file store with its segment files in the OS page cache, and evicted from it (fdatasync, then `posix_fadvise(DONTNEED)` on each file) before each try; each tried {} time(s), the fastest kept. Store and cache reads: the producer's `store_reads` and `cache_reads` counters over the run.\n\n| store | log on disk MiB | tail cache MiB | events counted | seconds | events/s | tries, M/s | store reads | cache reads | producer CPU µs/event | consumer CPU µs/event |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        s.catchup_cache_bytes, s.catchup_events, r.settings.throughput_tries
    );
    for c in &st.catchup {
        let _ = writeln!(
            o,
            "| {} | {} | {:.1} | {} | {:.3} | {:.2} M | {} | {} | {} | {:.2} | {:.2} |",
            c.page_cache(),
            if c.backend == Backend::Memory {
                "–".into()
            } else {
                format!("{:.1}", mib(c.disk_bytes))
            },
            mib(c.cache_bytes),
            c.events,
            c.elapsed.as_secs_f64(),
            c.rate() / 1e6,
            c.tries
                .iter()
                .map(|r| format!("{:.2}", r / 1e6))
                .collect::<Vec<_>>()
                .join(", "),
            c.store_reads,
            c.cache_reads,
            per_event_us(c.producer_cpu, c.events),
            per_event_us(c.consumer_cpu, c.events),
        );
    }
    let _ = writeln!(
        o,
        "\n### Recovery and bytes on disk\n\nA data directory filled through gRPC (2 callers × 10,000 events, `--fsync never`), the producer stopped (it syncs at shutdown), then a fresh producer started on it and timed from its process start to its first Poll answered with the whole log's head: with the segment files in the page cache (a producer restart), and evicted (as after a machine restart). du: allocated blocks, as `du` counts them. A start on an empty data directory took {}.\n\n| events | filled at events/s | stop s | du MiB | du bytes/event | file bytes/event | segments | start, page cache warm, s | start, evicted, s |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        st.empty_start
            .map_or("–".into(), |d| format!("{:.3} s", d.as_secs_f64()))
    );
    for v in &st.recovery {
        let _ = writeln!(
            o,
            "| {} | {:.2} M | {} | {:.1} | {:.1} | {:.1} | {} | {:.3} | {:.3} |",
            v.events,
            v.fill_rate / 1e6,
            v.stop
                .map_or("killed".into(), |d| format!("{:.2}", d.as_secs_f64())),
            mib(v.disk_bytes),
            v.du_per_event(),
            v.apparent_bytes as f64 / v.events.max(1) as f64,
            v.segments,
            v.warm.as_secs_f64(),
            v.cold.as_secs_f64(),
        );
    }
}

/// Events/s of every try, in M/s.
fn rates(tries: &[f64]) -> String {
    tries
        .iter()
        .map(|r| format!("{:.3}", r / 1e6))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `nats-server --version`'s version, e.g. `v2.9.10`.
fn nats_version() -> String {
    testkit::nats::installed()
        .ok()
        .and_then(|server| {
            std::process::Command::new(server)
                .arg("--version")
                .output()
                .ok()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .and_then(|v| v.split_whitespace().last().map(str::to_owned))
        .unwrap_or_else(|| "(not installed)".into())
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "–" } else { s }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn to_json(r: &Results, targets: &[Target]) -> serde_json::Value {
    let m = &r.machine;
    let us = |d: Duration| d.as_micros() as u64;
    json!({
        "mode": if r.settings.quick { "quick" } else { "full" },
        "machine": {
            "cpus": m.cpus, "cpu_model": m.cpu_model, "memory": m.memory, "kernel": m.kernel,
            "load_start": m.load_start, "load_end": m.load_end, "busiest_at_start": m.busiest,
            "commit": m.commit, "started_at": m.started_at, "finished_at": m.finished_at,
            "profile": m.profile,
        },
        "targets": targets.iter().map(|t| json!({
            "name": t.name, "measured": t.measured, "verdict": t.verdict(),
        })).collect::<Vec<_>>(),
        "latency": r.latency.iter().map(|l| json!({
            "mode": l.mode, "rate": l.rate, "published": l.published, "received": l.received,
            "p50_us": us(l.p50), "p99_us": us(l.p99), "p999_us": us(l.p999), "max_us": us(l.max),
            "rpcs": l.rpcs, "empty_responses": l.empty_responses,
            "consumer_read_bytes": l.consumer_read_bytes,
            "consumer_written_bytes": l.consumer_written_bytes,
            "producer_cpu_us": us(l.producer_cpu), "consumer_cpu_us": us(l.consumer_cpu),
            "window_us": us(l.window),
            "producer_delivery_cpu_us_per_event": r.delivery_cpu_us(l),
        })).collect::<Vec<_>>(),
        "baseline": r.baseline.iter().map(|(rate, events, cpu)| json!({
            "rate": rate, "published": events, "producer_cpu_us": us(*cpu),
        })).collect::<Vec<_>>(),
        "throughput": r.throughput.iter().map(|t| json!({
            "name": t.name, "events": t.events, "elapsed_us": us(t.elapsed),
            "events_per_second": t.rate(), "tries_events_per_second": t.tries, "rpcs": t.rpcs,
            "consumer_read_bytes": t.consumer_read_bytes,
            "producer_cpu_us": us(t.producer_cpu), "consumer_cpu_us": us(t.consumer_cpu),
        })).collect::<Vec<_>>(),
        "fanout": r.fanout.iter().map(|f| json!({
            "subscribers": f.subscribers, "rate": f.rate,
            "rss_before": f.rss_before, "rss_idle": f.rss_idle,
            "idle_bytes_per_subscriber": f.idle_bytes_per_subscriber(),
            "rss_peak": f.rss_peak, "published": f.published, "delivered": f.delivered,
            "all_delivered": f.all_delivered, "elapsed_us": us(f.elapsed),
            "p50_us": us(f.p50), "p99_us": us(f.p99), "max_us": us(f.max),
            "producer_cpu_us": us(f.producer_cpu), "responses": f.responses,
            "client_cpu_us": us(f.client_cpu),
        })).collect::<Vec<_>>(),
        "slow_consumer": r.slow.as_ref().map(|s| json!({
            "subscribers": s.subscribers, "p99_before_us": us(s.p99_before),
            "p99_after_us": us(s.p99_after), "rss_peak_before": s.rss_peak_before,
            "rss_peak_after": s.rss_peak_after, "delivered_before": s.delivered_before,
            "delivered_after": s.delivered_after, "stalled_lag": s.stalled_lag,
        })),
        "outage": r.outage.iter().map(|x| json!({
            "mode": x.mode, "rate": x.rate, "down_us": us(x.down), "backlog": x.backlog,
            "recovery_us": us(x.recovery), "backfilled": x.backfilled, "webhooks": x.webhooks,
            "retries_while_down": x.retries_while_down, "published": x.published,
            "last_sequence": x.last_sequence, "received": x.received, "missed": x.missed,
            "duplicates": x.duplicates,
        })).collect::<Vec<_>>(),
        "storage": storage_json(&r.storage),
        "jetstream": jetstream::json(&r.jetstream),
        "peers": peers::json(&r.peers),
        "soak": r.soak.as_ref().map(soak::json),
        "scenarios": r.scenarios,
        "errors": r.errors,
    })
}

fn storage_json(st: &StorageResults) -> serde_json::Value {
    let us = |d: Duration| d.as_micros() as u64;
    let q = |q: &Option<Quantile>| {
        q.map(|q| {
            json!({
                "estimate_us": q.estimate * 1e6, "bucket_lower_us": q.lower * 1e6,
                "bucket_upper_us": q.upper.is_finite().then_some(q.upper * 1e6),
            })
        })
    };
    json!({
        "load_start": st.load_start, "load_end": st.load_end,
        "io_pressure_start": st.io_pressure_start, "io_pressure_end": st.io_pressure_end,
        "publish": st.publish.iter().map(|p| json!({
            "store": p.backend.name(), "publishers": p.publishers, "events_per_call": p.batch,
            "events": p.events, "rpcs": p.rpcs, "elapsed_us": us(p.elapsed),
            "events_per_second": p.rate(), "tries_events_per_second": p.tries,
            "fsyncs": p.fsyncs, "fsync_p50": q(&p.fsync_p50), "fsync_p99": q(&p.fsync_p99),
            "producer_cpu_us": us(p.producer_cpu),
        })).collect::<Vec<_>>(),
        "latency": st.latency.iter().map(|l| json!({
            "store": l.backend.name(), "rate": l.rate, "published": l.published,
            "received": l.received, "publish_calls": l.publish_calls,
            "publish_p50_us": us(l.publish_p50), "publish_p99_us": us(l.publish_p99),
            "publish_p99_by_event_us": us(l.publish_event_p99),
            "push_p50_us": us(l.push_p50), "push_p99_us": us(l.push_p99),
            "fsyncs": l.fsyncs, "fsync_p50": q(&l.fsync_p50), "fsync_p99": q(&l.fsync_p99),
            "fsync_buckets": l.fsync_buckets.cumulative.iter().map(|(le, n)| json!({
                "le_seconds": le.is_finite().then_some(*le), "cumulative": n,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "catchup": st.catchup.iter().map(|c| json!({
            "store": c.backend.name(), "page_cache_evicted": c.cold, "log_events": c.log_events,
            "cache_bytes": c.cache_bytes, "disk_bytes": c.disk_bytes, "events": c.events,
            "elapsed_us": us(c.elapsed), "events_per_second": c.rate(),
            "tries_events_per_second": c.tries, "store_reads": c.store_reads,
            "cache_reads": c.cache_reads, "producer_cpu_us": us(c.producer_cpu),
            "consumer_cpu_us": us(c.consumer_cpu),
        })).collect::<Vec<_>>(),
        "recovery": st.recovery.iter().map(|v| json!({
            "events": v.events, "fill_events_per_second": v.fill_rate,
            "stop_us": v.stop.map(us), "du_bytes": v.disk_bytes,
            "apparent_bytes": v.apparent_bytes, "du_bytes_per_event": v.du_per_event(),
            "segments": v.segments, "retained_bytes": v.retained_bytes,
            "start_warm_us": us(v.warm), "start_cold_us": us(v.cold),
        })).collect::<Vec<_>>(),
        "empty_start_us": st.empty_start.map(us),
    })
}

type ChartResult = Result<(), Box<dyn std::error::Error>>;

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Two panels, p50 and p99, latency against publish rate, one line per mode (log-log).
fn latency_chart(path: &Path, r: &Results) -> ChartResult {
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "End-to-end latency by read mode and publish rate (lower is better)",
        ("sans-serif", 20),
    )?;
    let panels = root.split_evenly((1, 2));
    let mut modes: Vec<&str> = Vec::new();
    for l in &r.latency {
        if !modes.contains(&l.mode.as_str()) {
            modes.push(&l.mode);
        }
    }
    let rates: Vec<u64> = r.settings.rates.clone();
    let x_min = *rates.iter().min().unwrap_or(&100) as f64 / 2.0;
    let x_max = *rates.iter().max().unwrap_or(&100_000) as f64 * 2.0;
    let all_ms: Vec<f64> = r
        .latency
        .iter()
        .flat_map(|l| [ms(l.p50), ms(l.p99)])
        .filter(|v| *v > 0.0)
        .collect();
    let y_min = all_ms
        .iter()
        .cloned()
        .fold(f64::INFINITY, f64::min)
        .min(0.05)
        / 2.0;
    // Headroom above the slowest mode keeps the legend clear of the lines.
    let y_max = all_ms.iter().cloned().fold(0.0, f64::max).max(1.0) * 40.0;
    for (panel, (title, pick)) in panels.iter().zip([
        (
            "median (p50)",
            (|l: &LatencyRun| l.p50) as fn(&LatencyRun) -> Duration,
        ),
        ("99th percentile (p99)", |l: &LatencyRun| l.p99),
    ]) {
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((x_min..x_max).log_scale(), (y_min..y_max).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("published events/s")
            .y_desc("latency, ms")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v}"))
            .draw()?;
        for (i, mode) in modes.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(f64, f64)> = r
                .latency
                .iter()
                .filter(|l| l.mode == *mode)
                .map(|l| (l.rate as f64, ms(pick(l)).max(y_min)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(*mode)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Horizontal bars: events/s of each throughput run, with the targets as dashed lines.
fn throughput_chart(path: &Path, r: &Results) -> ChartResult {
    let runs = &r.throughput;
    let height = 120 + 48 * runs.len().max(1) as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = runs.iter().map(|t| t.rate()).fold(3.5e6, f64::max) / 1e6 * 1.1;
    let n = runs.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput, M events/s (64-byte payloads; dashed: the 3 M and 1.5 M targets)",
            ("sans-serif", 18),
        )
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(10)
        .build_cartesian_2d(0f64..max, 0f64..n)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc("million events per second")
        .draw()?;
    for (i, t) in runs.iter().enumerate() {
        let y = n - i as f64 - 1.0;
        let v = t.rate() / 1e6;
        let color = PALETTE[i % PALETTE.len()];
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, y + 0.15), (v, y + 0.85)],
            color.mix(0.75).filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{}: {v:.2} M/s", t.name),
            (max * 0.01, y + 0.62),
            ("sans-serif", 14).into_font().color(&BLACK),
        )))?;
    }
    for target in [3.0, 1.5] {
        chart.draw_series(DashedLineSeries::new(
            vec![(target, 0.0), (target, n)],
            6,
            4,
            BLACK.stroke_width(1),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// Fan-out: producer memory per idle subscriber, and p99 latency, against subscriber count.
fn fanout_chart(path: &Path, r: &Results) -> ChartResult {
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let rates: Vec<String> = r
        .fanout
        .iter()
        .map(|f| format!("{} at {}/s", f.subscribers, f.rate))
        .collect();
    let root = root.titled(
        &format!("Fan-out: push subscribers ({})", rates.join(", ")),
        ("sans-serif", 20),
    )?;
    let panels = root.split_evenly((1, 2));
    let x_max = r
        .fanout
        .iter()
        .map(|f| f.subscribers)
        .max()
        .unwrap_or(10)
        .max(10) as f64
        * 2.0;
    let kb: Vec<(f64, f64)> = r
        .fanout
        .iter()
        .map(|f| (f.subscribers as f64, f.idle_bytes_per_subscriber() / 1000.0))
        .collect();
    let kb_target = FANOUT_IDLE_BYTES / 1000.0;
    let kb_max = kb.iter().map(|p| p.1).fold(kb_target * 1.25, f64::max) * 1.2;
    let mut left = ChartBuilder::on(&panels[0])
        .caption(
            format!("producer memory per idle subscriber, KB (target ≤ {kb_target:.0})"),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0.5f64..x_max).log_scale(), 0f64..kb_max)?;
    left.configure_mesh()
        .x_desc("subscribers")
        .y_desc("KB per subscriber")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    left.draw_series(LineSeries::new(kb.clone(), PALETTE[0].stroke_width(2)))?;
    left.draw_series(kb.iter().map(|p| Circle::new(*p, 4, PALETTE[0].filled())))?;
    left.draw_series(DashedLineSeries::new(
        vec![(0.5, kb_target), (x_max, kb_target)],
        6,
        4,
        PALETTE[3].stroke_width(1),
    ))?;

    let p99: Vec<(f64, f64)> = r
        .fanout
        .iter()
        .map(|f| (f.subscribers as f64, ms(f.p99).max(0.01)))
        .collect();
    let p50: Vec<(f64, f64)> = r
        .fanout
        .iter()
        .map(|f| (f.subscribers as f64, ms(f.p50).max(0.01)))
        .collect();
    let max: Vec<(f64, f64)> = r
        .fanout
        .iter()
        .map(|f| (f.subscribers as f64, ms(f.max).max(0.01)))
        .collect();
    let y_max = max.iter().map(|p| p.1).fold(1.0, f64::max) * 2.0;
    let mut right = ChartBuilder::on(&panels[1])
        .caption("latency of delivered events, ms", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0.5f64..x_max).log_scale(), (0.01f64..y_max).log_scale())?;
    right
        .configure_mesh()
        .x_desc("subscribers")
        .y_desc("latency, ms")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v}"))
        .draw()?;
    for (i, (name, points)) in [("p50", p50), ("p99", p99), ("max", max)]
        .into_iter()
        .enumerate()
    {
        let color = PALETTE[i + 1];
        right
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        right.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
    }
    right
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Checks a results directory: every file present, the JSON complete and consistent, each SVG one
/// whole document. Speed is not judged.
pub fn check(dir: &Path) -> Result<String, String> {
    let read =
        |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"));
    for svg in ["latency.svg", "throughput.svg", "fanout.svg"] {
        let text = read(svg)?;
        if !text.starts_with("<svg") || !text.trim_end().ends_with("</svg>") {
            return Err(format!("{svg} is not one complete <svg> document"));
        }
    }
    let md = read("results.md")?;
    let r: serde_json::Value =
        serde_json::from_str(&read("results.json")?).map_err(|e| format!("results.json: {e}"))?;
    let list = |key: &str| r[key].as_array().cloned().unwrap_or_default();
    // What the run was asked for; a report from before the list was written ran every
    // scenario there was then, which is all but the soak.
    let ran = |scenario: &str| match r["scenarios"].as_array() {
        Some(names) => names.iter().any(|n| n == scenario),
        None => !matches!(scenario, "soak" | "peers"),
    };
    for (scenario, heading) in [
        ("", "## Targets"),
        ("latency", "## Latency by mode and rate"),
        ("throughput", "## Throughput"),
        ("fanout", "## Fan-out"),
        ("slow", "## Slow consumer"),
        ("outage", "## Receiver down"),
        ("storage", "## Storage"),
        ("jetstream", "## JetStream"),
        ("peers", "## Peers"),
        ("soak", "## Soak"),
    ] {
        if (scenario.is_empty() || ran(scenario)) && !md.contains(heading) {
            return Err(format!("results.md has no {heading:?}"));
        }
    }
    let errors = list("errors");
    if !errors.is_empty() {
        return Err(format!("scenarios failed: {errors:?}"));
    }
    check_push_and_pull(&r, &ran)?;
    if ran("storage") {
        check_storage(&r["storage"])?;
    }
    if ran("jetstream") {
        jetstream::check(&r["jetstream"])?;
    }
    if ran("peers") {
        peers::check(&r["peers"])?;
    }
    if ran("soak") {
        soak::check(&r["soak"])?;
    }
    let targets = list("targets");
    if targets.is_empty()
        || targets
            .iter()
            .any(|t| !matches!(t["verdict"].as_str(), Some("pass" | "MISS" | "n/a")))
    {
        return Err(format!("targets malformed: {targets:?}"));
    }
    Ok(format!(
        "well-formed: {} latency runs, {} throughput runs, {} fan-out runs, {} storage runs, {}{} targets",
        list("latency").len(),
        list("throughput").len(),
        list("fanout").len(),
        ["publish", "latency", "catchup", "recovery"]
            .iter()
            .map(|k| r["storage"][k].as_array().map_or(0, Vec::len))
            .sum::<usize>(),
        if ran("soak") { "a soak, " } else { "" },
        targets.len()
    ))
}

/// The push and pull scenarios: every mode measured and delivered, the throughput runs, the
/// fan-out, the slow consumer and the receiver-down runs, as far as they ran.
fn check_push_and_pull(r: &serde_json::Value, ran: &impl Fn(&str) -> bool) -> Result<(), String> {
    let list = |key: &str| r[key].as_array().cloned().unwrap_or_default();
    if ran("latency") {
        check_latency(&list("latency"))?;
    }
    let throughput = list("throughput");
    if ran("throughput")
        && (throughput.len() != 5
            || throughput
                .iter()
                .any(|t| t["events_per_second"].as_f64().unwrap_or(0.0) <= 0.0))
    {
        return Err(format!(
            "expected 5 throughput runs with a rate: {throughput:?}"
        ));
    }
    let fanout = list("fanout");
    if ran("fanout") && (fanout.is_empty() || fanout.iter().any(|f| f["all_delivered"] != true)) {
        return Err(format!("fan-out incomplete: {fanout:?}"));
    }
    if ran("slow") && r["slow_consumer"]["delivered_after"] != true {
        return Err("slow consumer: the others did not get every event".into());
    }
    let outage = list("outage");
    if ran("outage")
        && (outage.len() != 2
            || outage.iter().any(|x| {
                x["missed"] != 0 || x["last_sequence"] != x["published"] || x["backlog"] == 0
            }))
    {
        return Err(format!(
            "receiver down: expected push and webhook, each ending on every event: {outage:?}"
        ));
    }
    Ok(())
}

/// Every read mode measured, every event delivered, percentiles in order.
fn check_latency(latency: &[serde_json::Value]) -> Result<(), String> {
    let modes: std::collections::BTreeSet<_> =
        latency.iter().filter_map(|l| l["mode"].as_str()).collect();
    let expected: std::collections::BTreeSet<_> =
        crate::scenarios::modes().iter().map(|m| m.name).collect();
    if modes != expected {
        return Err(format!("latency modes {modes:?}, expected {expected:?}"));
    }
    for l in latency {
        let n = |k: &str| l[k].as_u64().unwrap_or(u64::MAX);
        if n("received") != n("published") || n("published") == 0 {
            return Err(format!("not every event delivered: {l}"));
        }
        if !(n("p50_us") <= n("p99_us")
            && n("p99_us") <= n("p999_us")
            && n("p999_us") <= n("max_us"))
        {
            return Err(format!("percentiles out of order: {l}"));
        }
    }
    Ok(())
}

/// The storage section: every store measured, every event delivered, the catch-up read from
/// the store, every recovery found its whole log.
fn check_storage(st: &serde_json::Value) -> Result<(), String> {
    let list = |key: &str| st[key].as_array().cloned().unwrap_or_default();
    let stores: std::collections::BTreeSet<_> = Backend::ALL.iter().map(|b| b.name()).collect();
    for key in ["publish", "latency"] {
        let runs = list(key);
        let seen: std::collections::BTreeSet<_> =
            runs.iter().filter_map(|p| p["store"].as_str()).collect();
        if seen != stores {
            return Err(format!(
                "storage {key}: stores {seen:?}, expected {stores:?}"
            ));
        }
    }
    if list("publish")
        .iter()
        .any(|p| p["events_per_second"].as_f64().unwrap_or(0.0) <= 0.0)
    {
        return Err(format!(
            "storage publish without a rate: {:?}",
            list("publish")
        ));
    }
    for l in list("latency") {
        if l["received"] != l["published"] || l["published"].as_u64().unwrap_or(0) == 0 {
            return Err(format!("storage latency: not every event delivered: {l}"));
        }
        if l["store"] == Backend::FileAlways.name() && l["fsyncs"].as_u64().unwrap_or(0) == 0 {
            return Err(format!("storage latency: fsync always made no fsync: {l}"));
        }
    }
    let catchup = list("catchup");
    if catchup.len() != 3
        || catchup
            .iter()
            .any(|c| c["store_reads"].as_u64().unwrap_or(0) == 0)
    {
        return Err(format!(
            "storage catch-up: expected 3 runs read from the store: {catchup:?}"
        ));
    }
    let recovery = list("recovery");
    if recovery.is_empty()
        || recovery
            .iter()
            .any(|v| v["start_warm_us"].as_u64().unwrap_or(0) == 0 || v["du_bytes"] == 0)
    {
        return Err(format!("storage recovery incomplete: {recovery:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::FanoutCase;

    #[test]
    fn the_full_run_has_issue_13s_fanout_case() {
        let s = Settings::full();
        let case = FanoutCase {
            subscribers: FANOUT_SUBSCRIBERS,
            rate: FANOUT_RATE,
        };
        assert!(s.fanout.contains(&case), "{:?}", s.fanout);
        assert_eq!(s.fanout_window, Duration::from_secs(5));
        assert_eq!(FANOUT_SUBSCRIBERS / s.streams_per_connection, 100);
        assert!(
            FANOUT_CASE
                .starts_with("10,000 subscribers / 100 connections, 100 events/s each for 5 s")
        );
    }

    fn ten_thousand(max: Duration) -> FanoutRun {
        FanoutRun {
            subscribers: FANOUT_SUBSCRIBERS,
            rate: FANOUT_RATE,
            rss_before: 10_000_000,
            rss_idle: 10_000_000 + 7_900 * FANOUT_SUBSCRIBERS as u64,
            rss_peak: 200_000_000,
            published: 500,
            delivered: 500 * FANOUT_SUBSCRIBERS as u64,
            all_delivered: true,
            elapsed: Duration::from_secs(5),
            p50: Duration::from_millis(2),
            p99: Duration::from_millis(19),
            max,
            producer_cpu: Duration::from_secs(3),
            responses: 500 * FANOUT_SUBSCRIBERS as u64,
            client_cpu: Duration::from_secs(4),
        }
    }

    #[test]
    fn the_fanout_targets_judge_the_ten_thousand_subscriber_run() {
        let mut r = Results::new(&Settings::quick());
        let verdicts = |r: &Results| -> Vec<&'static str> {
            r.fanout_targets().iter().map(Target::verdict).collect()
        };
        assert_eq!(verdicts(&r), ["n/a"; 4], "not run");
        r.fanout.push(ten_thousand(Duration::from_millis(49)));
        assert_eq!(verdicts(&r), ["pass"; 4]);
        r.fanout[0].max = Duration::from_millis(51);
        assert_eq!(verdicts(&r), ["pass", "pass", "pass", "MISS"]);
        r.fanout[0].delivered -= 1;
        r.fanout[0].rss_idle += FANOUT_SUBSCRIBERS as u64 * 200;
        r.fanout[0].p99 = Duration::from_millis(21);
        assert_eq!(verdicts(&r), ["MISS"; 4]);
        r.fanout[0].rate = 1_000;
        assert_eq!(
            verdicts(&r),
            ["n/a"; 4],
            "another rate is not the issue's case"
        );
    }
}
