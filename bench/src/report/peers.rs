//! The Peers section of the report (issue 13): each of our throughputs as a ratio to its peer's
//! with a verdict, the push p99 target, the tables, the JSON, and what `pushpull-bench check`
//! requires of it.

use std::{fmt::Write as _, time::Duration};

use serde_json::json;

use super::{Results, Target, nats_version, or_dash, per_event_us, rates};
use crate::{
    peers::{COMPARISONS, Comparison, Figure, PeerResults, PeerRun},
    scenarios::ms,
};

/// Issue 13: push p99 at 10,000 events/s.
const PUSH_P99_GOAL: Duration = Duration::from_micros(300);
/// The rate that goal is for.
const PUSH_P99_RATE: u64 = 10_000;

/// Why a comparison has no verdict.
fn missing(p: &PeerResults, c: &Comparison) -> String {
    match &p.nats_skipped {
        Some(why) if c.peer == Figure::NatsCore => format!("not run: {why}"),
        _ => "not measured".into(),
    }
}

/// Our figure over its peer's, with the verdict against the comparison's goal; `missing` says
/// why there is none when either figure is absent.
pub fn ratio_target(
    c: &Comparison,
    ours: Option<&PeerRun>,
    peer: Option<&PeerRun>,
    missing: String,
) -> Target {
    let name = c.target.to_owned();
    let (Some(ours), Some(peer)) = (ours, peer) else {
        return Target {
            name,
            measured: missing,
            pass: None,
        };
    };
    let ratio = ours.rate() / peer.rate().max(1e-9);
    let dropped = if peer.events < peer.expected {
        format!(
            "; the peer delivered {} of {} events, its rate is of those",
            peer.events, peer.expected
        )
    } else {
        String::new()
    };
    Target {
        name,
        measured: format!(
            "{:.2} M vs {:.2} M events/s: {ratio:.2}× (goal ≥ {:.1}×){dropped}",
            ours.rate() / 1e6,
            peer.rate() / 1e6,
            c.goal
        ),
        pass: Some(ratio >= c.goal),
    }
}

pub(super) fn targets(r: &Results) -> Vec<Target> {
    let p = &r.peers;
    let mut t: Vec<Target> = COMPARISONS
        .iter()
        .map(|c| ratio_target(c, p.run(c.ours), p.run(c.peer), missing(p, c)))
        .collect();
    let push = r.latency_of(consumer::Mode::Push.name(), PUSH_P99_RATE);
    t.push(Target {
        name: format!(
            "push p99 at {PUSH_P99_RATE} events/s ≤ {:.1} ms",
            ms(PUSH_P99_GOAL)
        ),
        measured: push.map_or_else(
            || format!("not run (no push latency run at {PUSH_P99_RATE} events/s)"),
            |l| format!("{:.3} ms", ms(l.p99)),
        ),
        pass: push.map(|l| l.p99 <= PUSH_P99_GOAL),
    });
    t
}

pub(super) fn markdown(o: &mut String, r: &Results) {
    let p = &r.peers;
    let _ = writeln!(
        o,
        "\n## Peers\n\nThe producer next to what a user could run instead, in one run on the same 64-byte payloads, {} events per run. **Bare tonic**: the same `pushpull.v1.ProducerService` on a plain `tonic::transport::Server` (defaults, `TCP_NODELAY` on) in a process of its own, its Subscribe written as tonic's streaming example does it: a task builds each `SubscribeResponse` (sequence, topic, a clone of one payload, `produced_at`) and sends it through a bounded channel returned as a `ReceiverStream`; one event per message, or 256. It is read by the generated client our Subscribe runs use. **NATS core**: nats-server {} on loopback, one `async-nats` publisher sending each event as a message flat out and flushing, one subscriber on a connection of its own (its client buffer raised to hold every message; NATS core drops messages for a consumer that falls behind, and a rate is of what arrived). **Ours**: a fresh producer process (memory store) per try; live is one publisher (1,000 events per unary Publish, one call in flight) and one Subscribe stream from the head; the drains read a log prefilled with the run's events (not timed) from the oldest: one Poll in flight, then one Subscribe stream. Each figure is tried {} time(s), peers and ours in turn within a try (so a change in the shared machine's load falls on both), the fastest try kept. Server CPU: the bare peer's process, nats-server, or the producer; client CPU: the benchmark process, where every client runs. Load average (1/5/15 min) during this section: {} at start, {} at end.\n",
        p.events,
        nats_version(),
        r.settings.throughput_tries,
        or_dash(&p.load_start),
        or_dash(&p.load_end)
    );
    if p.runs.is_empty() {
        let _ = writeln!(o, "Not run (`--only` left it out, or it failed).");
        return;
    }
    let _ = writeln!(
        o,
        "| peer | events/s | tries, M/s | delivered | events per message | server CPU µs/event | client CPU µs/event |\n|---|--:|--:|--:|--:|--:|--:|"
    );
    for figure in Figure::PEERS {
        match p.run(figure) {
            Some(run) => {
                let _ = writeln!(o, "| {} | {} |", figure.name(), cells(run));
            }
            None => {
                let why = match &p.nats_skipped {
                    Some(why) if figure == Figure::NatsCore => format!("not run: {why}"),
                    _ => "not measured".into(),
                };
                let _ = writeln!(o, "| {} | {why} | | | | | |", figure.name());
            }
        }
    }
    let _ = writeln!(
        o,
        "\n| ours | events/s | tries, M/s | delivered | events per message or Poll | server CPU µs/event | client CPU µs/event | peer | peer events/s | ours ÷ peer | goal | verdict |\n|---|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|:-:|"
    );
    for c in &COMPARISONS {
        let (ours, peer) = (p.run(c.ours), p.run(c.peer));
        let verdict = ratio_target(c, ours, peer, missing(p, c));
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | ≥ {:.1} | {} |",
            c.ours.name(),
            ours.map_or("not measured | | | | |".into(), cells),
            c.peer.name(),
            peer.map_or("–".into(), |r| format!("{:.2} M", r.rate() / 1e6)),
            match (ours, peer) {
                (Some(o), Some(p)) => format!("{:.2}", o.rate() / p.rate().max(1e-9)),
                _ => "–".into(),
            },
            c.goal,
            verdict.verdict()
        );
    }
}

/// A run's cells: events/s, tries, delivered, events per message, server and client CPU.
fn cells(run: &PeerRun) -> String {
    format!(
        "{:.2} M | {} | {}/{} | {:.0} | {:.2} | {:.2}",
        run.rate() / 1e6,
        rates(&run.tries),
        run.events,
        run.expected,
        run.events as f64 / run.messages.max(1) as f64,
        per_event_us(run.server_cpu, run.events),
        per_event_us(run.client_cpu, run.events),
    )
}

pub(super) fn json(p: &PeerResults) -> serde_json::Value {
    let us = |d: Duration| d.as_micros() as u64;
    json!({
        "events": p.events,
        "nats_skipped": p.nats_skipped,
        "load_start": p.load_start, "load_end": p.load_end,
        "runs": p.runs.iter().map(|r| json!({
            "figure": r.figure.key(), "name": r.figure.name(), "peer": r.figure.is_peer(),
            "events": r.events, "expected": r.expected, "messages": r.messages,
            "elapsed_us": us(r.elapsed), "events_per_second": r.rate(),
            "tries_events_per_second": r.tries,
            "server_cpu_us": us(r.server_cpu), "client_cpu_us": us(r.client_cpu),
        })).collect::<Vec<_>>(),
        "comparisons": COMPARISONS.iter().map(|c| {
            let (ours, peer) = (p.run(c.ours), p.run(c.peer));
            json!({
                "ours": c.ours.key(), "peer": c.peer.key(), "goal": c.goal,
                "ours_events_per_second": ours.map(PeerRun::rate),
                "peer_events_per_second": peer.map(PeerRun::rate),
                "ratio": ours.zip(peer).map(|(o, p)| o.rate() / p.rate().max(1e-9)),
                "verdict": ratio_target(c, ours, peer, missing(p, c)).verdict(),
            })
        }).collect::<Vec<_>>(),
    })
}

/// The Peers section: every figure measured with a rate (NATS core may be missing when
/// nats-server is, outside CI only), every one of ours and the bare peer's delivering every
/// event, and every comparison with a ratio.
pub(super) fn check(p: &serde_json::Value) -> Result<(), String> {
    check_in(p, std::env::var("CI").is_ok_and(|v| v == "true"))
}

fn check_in(p: &serde_json::Value, ci: bool) -> Result<(), String> {
    if p["events"].as_u64().unwrap_or(0) == 0 {
        return Err(format!("peers: no event count: {p}"));
    }
    let nats_skipped = p["nats_skipped"].as_str();
    if let Some(why) = nats_skipped {
        if ci {
            return Err(format!("peers: NATS core not run under CI: {why}"));
        }
        eprintln!("peers: NATS core not run: {why}");
    }
    let runs = p["runs"].as_array().cloned().unwrap_or_default();
    for figure in Figure::ALL {
        let Some(run) = runs.iter().find(|r| r["figure"] == figure.key()) else {
            if figure == Figure::NatsCore && nats_skipped.is_some() {
                continue;
            }
            return Err(format!(
                "peers: no {:?} figure ({})",
                figure.key(),
                figure.name()
            ));
        };
        let n = |k: &str| run[k].as_u64().unwrap_or(0);
        if run["events_per_second"].as_f64().unwrap_or(0.0) <= 0.0 || n("events") == 0 {
            return Err(format!("peers: {} without a rate: {run}", figure.key()));
        }
        if !figure.may_drop() && n("events") != n("expected") {
            return Err(format!(
                "peers: {} did not deliver every event: {run}",
                figure.key()
            ));
        }
    }
    let comparisons = p["comparisons"].as_array().cloned().unwrap_or_default();
    if comparisons.len() != COMPARISONS.len() {
        return Err(format!(
            "peers: expected {} comparisons: {comparisons:?}",
            COMPARISONS.len()
        ));
    }
    for c in &comparisons {
        let skipped = c["peer"] == Figure::NatsCore.key() && nats_skipped.is_some();
        if !skipped
            && (c["ratio"].as_f64().unwrap_or(0.0) <= 0.0
                || !matches!(c["verdict"].as_str(), Some("pass" | "MISS")))
        {
            return Err(format!("peers: a comparison without a ratio: {c}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_at(rate: f64) -> PeerResults {
        PeerResults {
            events: 1_000_000,
            runs: Figure::ALL
                .iter()
                .map(|&f| PeerRun::example(f, rate))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_ratio_at_or_above_its_goal_passes_and_below_misses() {
        let poll = &COMPARISONS[1];
        assert_eq!(poll.goal, 0.7);
        let peer = PeerRun::example(poll.peer, 2e6);
        let target = |rate: f64| {
            ratio_target(
                poll,
                Some(&PeerRun::example(poll.ours, rate)),
                Some(&peer),
                String::new(),
            )
        };
        let above = target(1.42e6);
        assert_eq!(above.verdict(), "pass");
        assert_eq!(
            above.measured,
            "1.42 M vs 2.00 M events/s: 0.71× (goal ≥ 0.7×)"
        );
        let below = target(1.38e6);
        assert_eq!(below.verdict(), "MISS");
        assert_eq!(
            below.measured,
            "1.38 M vs 2.00 M events/s: 0.69× (goal ≥ 0.7×)"
        );
        assert_eq!(target(3e6).verdict(), "pass");
    }

    #[test]
    fn a_missing_figure_has_no_verdict_and_says_why() {
        let live = &COMPARISONS[0];
        assert_eq!(live.peer, Figure::NatsCore);
        let mut p = all_at(1e6);
        p.runs.retain(|r| r.figure != Figure::NatsCore);
        p.nats_skipped = Some("nats-server not installed (no such file)".into());
        let t = ratio_target(live, p.run(live.ours), p.run(live.peer), missing(&p, live));
        assert_eq!(t.verdict(), "n/a");
        assert_eq!(
            t.measured,
            "not run: nats-server not installed (no such file)"
        );
        let catch_up = &COMPARISONS[3];
        let t = ratio_target(catch_up, None, p.run(catch_up.peer), missing(&p, catch_up));
        assert_eq!((t.verdict(), t.measured.as_str()), ("n/a", "not measured"));
    }

    #[test]
    fn a_peer_that_dropped_events_is_named_in_the_measure() {
        let live = &COMPARISONS[0];
        let mut nats = PeerRun::example(Figure::NatsCore, 1e6);
        nats.events = 900_000;
        let t = ratio_target(
            live,
            Some(&PeerRun::example(Figure::Live, 2e6)),
            Some(&nats),
            String::new(),
        );
        assert!(
            t.measured.contains("delivered 900000 of 1000000"),
            "{}",
            t.measured
        );
    }

    #[test]
    fn check_accepts_every_figure_and_refuses_a_missing_or_empty_one() {
        let good = all_at(2e6);
        assert_eq!(check_in(&json(&good), true), Ok(()));
        assert!(
            check_in(&serde_json::Value::Null, false).is_err(),
            "not run"
        );
        for figure in Figure::ALL {
            let mut p = good.clone();
            p.runs.retain(|r| r.figure != figure);
            let err = check_in(&json(&p), false).expect_err("a figure is missing");
            assert!(err.contains(figure.key()), "{err}");
        }
        let mut short = good.clone();
        short.runs[5].events -= 1;
        assert!(
            check_in(&json(&short), false).is_err(),
            "ours short of an event"
        );
        let mut dropped = good.clone();
        dropped.runs[2].events -= 1;
        assert_eq!(dropped.runs[2].figure, Figure::NatsCore);
        assert_eq!(
            check_in(&json(&dropped), false),
            Ok(()),
            "NATS core may drop"
        );
    }

    #[test]
    fn check_lets_nats_core_be_skipped_outside_ci_only() {
        let mut p = all_at(2e6);
        p.runs.retain(|r| r.figure != Figure::NatsCore);
        p.nats_skipped = Some("nats-server not installed".into());
        assert_eq!(check_in(&json(&p), false), Ok(()));
        assert!(check_in(&json(&p), true).is_err());
    }
}
