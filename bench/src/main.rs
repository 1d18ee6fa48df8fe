//! `pushpull-bench`: measures push vs pull with the real producer and consumer over loopback
//! gRPC, and writes a Markdown report, a JSON file and SVG charts.
//!
//! - [`child`]: the producer and consumer as separate processes, and their `/proc` counters.
//! - [`load`]: publishers, push subscribers (generated client) and the consumer's GetStats.
//! - [`scenarios`]: latency by mode and rate, throughput, fan-out, slow consumer.
//! - [`storage`]: the memory and file stores side by side: publish throughput and latency next
//!   to the store's fsync time, catch-up from disk, recovery and bytes per event.
//! - [`jetstream`]: the JetStream store next to the file and memory stores and next to raw
//!   JetStream: publish throughput, catch-up, push latency, two producers' fan-out.
//! - [`peers`]: the producer next to a bare tonic server stream and NATS core pub/sub, on the
//!   same payloads in the same run: each of our throughputs as a ratio to its peer's.
//! - [`nats`]: the `nats-server` processes it runs on (one node, a three-node cluster).
//! - [`soak`]: one producer for minutes under a mixed load that includes stalled and garbage
//!   clients: its RSS, descriptors and tasks before and after, every reader's every event once.
//! - [`scrape`]: the producer's own counters and histograms, from its `/metrics`.
//! - [`report`]: targets (pass/miss), tables, charts, machine description.
//!
//! ```text
//! cargo run --release -p pushpull-bench -- --full     # minutes; writes docs/bench/
//! cargo run -p pushpull-bench -- --quick              # seconds; writes target/bench-quick/
//! cargo run -p pushpull-bench -- --only fanout         # some scenarios; writes target/bench-partial/
//! cargo run -p pushpull-bench -- --quick --only soak --soak-secs 60 --out target/soak
//! ```

mod child;
mod jetstream;
mod load;
mod nats;
mod peers;
mod report;
mod scenarios;
mod scrape;
mod soak;
mod storage;

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};

use crate::{child::Role, report::Results, scenarios::Settings};

/// Measures push vs pull: latency, throughput, cost per event, fan-out and slow-consumer
/// isolation, with the real producer and consumer as separate processes on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "pushpull-bench", version)]
struct Cli {
    /// The full run: every rate, 3 M-event drains, up to 10,000 subscribers (several minutes).
    #[arg(long, conflicts_with = "quick")]
    full: bool,
    /// A smoke run: every scenario but the soak, small and short (well under a minute);
    /// asserts nothing about speed.
    #[arg(long)]
    quick: bool,
    /// How long the soak's measured round runs, in seconds (its warm-up, a tenth of it within
    /// 3–10 s, comes on top). Default: 180 for a full run, 20 for a quick one.
    #[arg(long, value_name = "SECONDS")]
    soak_secs: Option<u64>,
    /// The fan-out runs, in place of the mode's own: subscriber count and events/s each, e.g.
    /// `--fanout 1000@1000,10000@100` (to look at one case without the others).
    #[arg(long, value_delimiter = ',', value_name = "SUBSCRIBERS@RATE")]
    fanout: Vec<scenarios::FanoutCase>,
    /// Where to write results.md, results.json and the charts. Default: docs/bench for a full
    /// run of every scenario (the report the repository keeps), target/bench-quick for a quick
    /// one, target/bench-partial for a run of some scenarios or chosen fan-out cases (so that
    /// one does not overwrite the kept report).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run only these scenarios (comma-separated), e.g. to compare two builds.
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Scenario>,
    #[command(subcommand)]
    child: Option<ChildCommand>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Latency,
    Throughput,
    Fanout,
    Slow,
    /// The consumer down for a while under load: push next to a webhook receiver.
    Outage,
    Storage,
    Jetstream,
    /// The producer next to a bare tonic server stream and NATS core pub/sub (issue 13).
    Peers,
    /// A producer for minutes under a mixed load with stalled and garbage clients: flat
    /// resources, every event once. Part of a full run; a quick one runs it only when named,
    /// as it would make the quick run several times longer. Exits non-zero when a check fails.
    Soak,
}

impl Scenario {
    fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }
}

#[derive(Debug, Subcommand)]
enum ChildCommand {
    /// Checks that a results directory is complete and well-formed (the CI smoke test).
    Check {
        /// The directory a run wrote (its --out).
        dir: PathBuf,
    },
    /// Internal: run one service as a child process of the benchmark.
    #[command(hide = true)]
    Child {
        #[arg(value_parser = Role::ALL.map(Role::name))]
        role: String,
        /// The service's own flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(ChildCommand::Check { dir }) = &cli.child {
        return match report::check(dir) {
            Ok(summary) => {
                eprintln!("{summary}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{}: {err}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    if let Some(ChildCommand::Child { role, args }) = cli.child {
        let Some(role) = Role::from_name(&role) else {
            eprintln!("no such child role: {role}");
            return ExitCode::FAILURE;
        };
        return match runtime.block_on(child::serve(role, args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("{role:?}: {err}");
                ExitCode::FAILURE
            }
        };
    }
    child::raise_fd_limit();
    let mut settings = if cli.quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    if !cli.fanout.is_empty() {
        settings.fanout = cli.fanout.clone();
    }
    if let Some(secs) = cli.soak_secs {
        settings.soak.duration = Duration::from_secs(secs.max(1));
    }
    let out = cli.out.unwrap_or_else(|| {
        PathBuf::from(if cli.quick {
            "target/bench-quick"
        } else if !cli.only.is_empty() || !cli.fanout.is_empty() {
            "target/bench-partial"
        } else {
            "docs/bench"
        })
    });
    let (only, quick) = (cli.only, cli.quick);
    let wanted = move |s: Scenario| {
        only.contains(&s) || (only.is_empty() && !(quick && s == Scenario::Soak))
    };
    match runtime.block_on(run(settings, out, wanted)) {
        Ok(all_ran) if all_ran => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("benchmark failed: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every scenario, writes the report; `Ok(false)` when a scenario failed to run, or the
/// soak failed one of its checks.
async fn run(
    settings: Settings,
    out: PathBuf,
    wanted: impl Fn(Scenario) -> bool,
) -> Result<bool, String> {
    let modes = scenarios::modes();
    let mut results = Results::new(&settings);
    results.scenarios = <Scenario as clap::ValueEnum>::value_variants()
        .iter()
        .filter(|s| wanted(**s))
        .map(|s| s.name())
        .collect();
    let total = [
        (Scenario::Latency, (modes.len() + 1) * settings.rates.len()),
        (Scenario::Throughput, 4),
        (Scenario::Fanout, settings.fanout.len()),
        (Scenario::Slow, 1),
        (Scenario::Outage, 2),
        (Scenario::Storage, storage::steps(&settings.storage)),
        (Scenario::Jetstream, jetstream::steps(&settings.jetstream)),
        (Scenario::Peers, peers::steps(&settings)),
        (Scenario::Soak, 1),
    ]
    .into_iter()
    .filter(|(s, _)| wanted(*s))
    .map(|(_, n)| n)
    .sum();
    let mut progress = Progress::new(total);
    eprintln!(
        "pushpull-bench {} run: {} steps; machine: {}",
        if settings.quick { "quick" } else { "full" },
        total,
        results.machine.summary()
    );

    for &rate in settings.rates.iter().filter(|_| wanted(Scenario::Latency)) {
        progress.start(&format!("baseline: publisher alone at {rate} events/s"));
        match scenarios::publish_baseline(rate, &settings).await {
            Ok((events, cpu)) => {
                progress.done(&format!(
                    "producer CPU {:.1} µs per published event",
                    cpu.as_secs_f64() * 1e6 / events.max(1) as f64
                ));
                results.baseline.push((rate, events, cpu));
            }
            Err(err) => results.failed(&mut progress, err),
        }
    }
    for mode in modes.iter().filter(|_| wanted(Scenario::Latency)) {
        for &rate in &settings.rates {
            progress.start(&format!("latency: {} at {rate} events/s", mode.name));
            match scenarios::latency(mode, rate, &settings, &mut progress).await {
                Ok(r) => {
                    progress.done(&format!(
                        "{}/{} delivered, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                        r.received,
                        r.published,
                        scenarios::ms(r.p50),
                        scenarios::ms(r.p99),
                        scenarios::ms(r.max)
                    ));
                    results.latency.push(r);
                }
                Err(err) => results.failed(&mut progress, err),
            }
        }
    }

    let push = &modes[0];
    let poll = scenarios::Mode {
        name: "poll (max_events 1000)",
        ..modes[3].clone()
    };
    let long_poll = &modes[4];
    let throughput = wanted(Scenario::Throughput);
    for mode in [push, &poll].into_iter().filter(|_| throughput) {
        progress.start(&format!("throughput: {} catching up", mode.name));
        let (mut runs, mut publishes) = (vec![], vec![]);
        for _ in 0..settings.throughput_tries {
            match scenarios::catch_up(mode, &settings, &mut progress).await {
                Ok((run, publish)) => {
                    eprintln!("      try: {:.2} M events/s", run.rate() / 1e6);
                    runs.push(run);
                    publishes.push(publish);
                }
                Err(err) => results.failed(&mut progress, err),
            }
        }
        if let Some(best) = scenarios::fastest(runs) {
            progress.done(&format!("fastest {:.2} M events/s", best.rate() / 1e6));
            results.throughput.push(best);
        }
        if mode.name == consumer::Mode::Push.name()
            && let Some(best) = scenarios::fastest(publishes)
        {
            results.throughput.push(best);
        }
    }
    for mode in [push, long_poll].into_iter().filter(|_| throughput) {
        progress.start(&format!("throughput: {} live", mode.name));
        let mut runs = vec![];
        for _ in 0..settings.throughput_tries {
            match scenarios::live(mode, &settings, &mut progress).await {
                Ok(run) => {
                    eprintln!("      try: {:.2} M events/s", run.rate() / 1e6);
                    runs.push(run);
                }
                Err(err) => results.failed(&mut progress, err),
            }
        }
        if let Some(best) = scenarios::fastest(runs) {
            progress.done(&format!("fastest {:.2} M events/s", best.rate() / 1e6));
            results.throughput.push(best);
        }
    }

    for &case in settings.fanout.iter().filter(|_| wanted(Scenario::Fanout)) {
        progress.start(&format!(
            "fan-out: {} subscribers at {} events/s",
            case.subscribers, case.rate
        ));
        match scenarios::fanout(case, &settings, &mut progress).await {
            Ok(r) => {
                progress.done(&format!(
                    "{:.1} KB producer memory per idle subscriber, {}/{} delivered, p99 {:.2} ms, max {:.2} ms",
                    r.idle_bytes_per_subscriber() / 1000.0,
                    r.delivered,
                    r.published * case.subscribers as u64,
                    scenarios::ms(r.p99),
                    scenarios::ms(r.max)
                ));
                results.fanout.push(r);
            }
            Err(err) => results.failed(&mut progress, err),
        }
    }

    if wanted(Scenario::Slow) {
        progress.start(&format!(
            "slow consumer: {} subscribers, then one stops reading",
            settings.slow_subscribers
        ));
        match scenarios::slow_consumer(&settings, &mut progress).await {
            Ok(r) => {
                progress.done(&format!(
                    "p99 {:.2} → {:.2} ms, producer RSS peak {:.1} → {:.1} MiB",
                    scenarios::ms(r.p99_before),
                    scenarios::ms(r.p99_after),
                    scenarios::mib(r.rss_peak_before),
                    scenarios::mib(r.rss_peak_after)
                ));
                results.slow = Some(r);
            }
            Err(err) => results.failed(&mut progress, err),
        }
    }

    for mode in [push, &scenarios::webhook()]
        .into_iter()
        .filter(|_| wanted(Scenario::Outage))
    {
        progress.start(&format!(
            "receiver down: {} consumer stopped for {:.1} s at {} events/s",
            mode.name,
            settings.outage_down.as_secs_f64(),
            settings.outage_rate
        ));
        match scenarios::outage(mode, &settings).await {
            Ok(r) => {
                progress.done(&format!(
                    "backlog {} events, caught up {:.0} ms after restarting ({} by Poll), \
                     {} missed, {} duplicates",
                    r.backlog,
                    r.recovery.as_secs_f64() * 1000.0,
                    r.backfilled,
                    r.missed,
                    r.duplicates
                ));
                results.outage.push(r);
            }
            Err(err) => results.failed(&mut progress, err),
        }
    }

    if wanted(Scenario::Storage) {
        storage::run(&settings, &mut progress, &mut results).await;
    }

    if wanted(Scenario::Jetstream) {
        jetstream::run(&settings, &mut progress, &mut results).await;
    }

    if wanted(Scenario::Peers) {
        peers::run(&settings, &mut progress, &mut results).await;
    }

    if wanted(Scenario::Soak) {
        let s = &settings.soak;
        progress.start(&format!(
            "soak: a mixed load for {:.0} s after a {:.0} s warm-up, stalled and garbage clients \
             included",
            s.duration.as_secs_f64(),
            s.warm_up().as_secs_f64()
        ));
        match soak::run(s, &mut progress).await {
            Ok(r) => {
                progress.done(&format!(
                    "RSS {:.1} → {:.1} MiB, fds {} → {}, tasks {} → {}; {} readers, {} events each, \
                     {} missed, {} duplicates",
                    scenarios::mib(r.start.rss_bytes),
                    scenarios::mib(r.end.rss_bytes),
                    r.start.open_fds,
                    r.end.open_fds,
                    r.start.tasks,
                    r.end.tasks,
                    r.readers.len(),
                    r.head_end - r.head_start,
                    r.readers.iter().map(|t| t.missed).sum::<u64>(),
                    r.readers.iter().map(|t| t.duplicates).sum::<u64>(),
                ));
                results.soak = Some(r);
            }
            Err(err) => results.failed(&mut progress, format!("soak: {err}")),
        }
    }

    results.finish();
    let targets = results.targets();
    eprintln!("\ntargets:");
    for t in &targets {
        eprintln!("  [{}] {} — {}", t.verdict(), t.name, t.measured);
    }
    report::write(&out, &results, &targets)?;
    eprintln!(
        "\nwrote {} (results.md, results.json, *.svg) in {:.0} s",
        out.display(),
        progress.started.elapsed().as_secs_f64()
    );
    let soak_failed = results.soak.as_ref().is_some_and(|s| !s.passed());
    if soak_failed {
        eprintln!("the soak failed a check (see its targets above)");
    }
    Ok(results.errors.is_empty() && !soak_failed)
}

/// Progress lines on stderr: which step of how many, and how long each took.
pub struct Progress {
    step: usize,
    total: usize,
    started: Instant,
    step_started: Instant,
    last_note: Instant,
}

impl Progress {
    fn new(total: usize) -> Self {
        let now = Instant::now();
        Self {
            step: 0,
            total,
            started: now,
            step_started: now,
            last_note: now,
        }
    }

    fn start(&mut self, what: &str) {
        self.step += 1;
        self.step_started = Instant::now();
        eprintln!(
            "[{:>2}/{}] {:>5.0}s  {what} …",
            self.step,
            self.total,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// A line within a step, at most every half second.
    pub fn note(&mut self, what: &str) {
        if self.last_note.elapsed() >= Duration::from_millis(500) {
            eprintln!("      {what}");
            self.last_note = Instant::now();
        }
    }

    fn done(&mut self, what: &str) {
        eprintln!(
            "      done in {:.1} s: {what}",
            self.step_started.elapsed().as_secs_f64()
        );
    }
}
