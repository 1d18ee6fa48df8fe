//! The soak's section of the report: its targets (which also decide the exit code), its
//! Markdown tables, its JSON, and what `pushpull-bench check` requires of it.

use std::{fmt::Write as _, time::Duration};

use serde_json::json;

use super::{Results, Target, yes};
use crate::{
    scenarios::mib,
    soak::{
        FDS_MARGIN, GRPC_BATCH, HALF_OPEN, HostileTally, JSON_BATCH, RETENTION_EVENTS,
        RSS_GROWTH_BYTES, RSS_GROWTH_SHARE, SETTLE_LIMIT, STALL, Sample, SoakRun, TASKS_MARGIN,
    },
};

pub(super) fn targets(r: &Results) -> Vec<Target> {
    let Some(s) = &r.soak else {
        return vec![];
    };
    let missed: u64 = s.readers.iter().map(|t| t.missed).sum();
    let duplicates: u64 = s.readers.iter().map(|t| t.duplicates).sum();
    let failed_calls: u64 = s.publishers.iter().map(|p| p.errors).sum();
    let short = s.readers.iter().filter(|t| t.last < s.head_end).count();
    vec![
        Target {
            name: format!(
                "soak: producer RSS flat (end ≤ start + {:.0} % or + {:.0} MiB, whichever is larger)",
                RSS_GROWTH_SHARE * 100.0,
                mib(RSS_GROWTH_BYTES)
            ),
            measured: format!(
                "{:.1} → {:.1} MiB ({:+.1} MiB; allowed +{:.1})",
                mib(s.start.rss_bytes),
                mib(s.end.rss_bytes),
                signed_mib(s.start.rss_bytes, s.end.rss_bytes),
                mib(s.rss_allowance())
            ),
            pass: Some(s.rss_flat()),
        },
        Target {
            name: format!("soak: producer open fds back within ±{FDS_MARGIN} of start after the clients left"),
            measured: format!("{} → {}", s.start.open_fds, s.end.open_fds),
            pass: Some(s.fds_back()),
        },
        Target {
            name: format!(
                "soak: producer tokio tasks back within ±{TASKS_MARGIN} of start after the clients left"
            ),
            measured: format!(
                "{} → {} ({:.1} s after the last client left)",
                s.start.tasks,
                s.end.tasks,
                s.settled_in.as_secs_f64()
            ),
            pass: Some(s.tasks_back()),
        },
        Target {
            name: "soak: every well-behaved reader got every event once, in order; every publish accepted".into(),
            measured: format!(
                "{} readers × {} events: {missed} missed, {duplicates} duplicates, {short} short of the head; {failed_calls} failed publish calls",
                s.readers.len(),
                s.head_end - s.head_start
            ),
            pass: Some(s.every_event_once()),
        },
    ]
}

fn signed_mib(from: u64, to: u64) -> f64 {
    (to as f64 - from as f64) / (1024.0 * 1024.0)
}

pub(super) fn markdown(o: &mut String, r: &Results) {
    let _ = writeln!(o, "\n## Soak\n");
    let Some(s) = &r.soak else {
        let _ = writeln!(
            o,
            "Not run (a quick run runs it only when named: `--only soak`; or it failed)."
        );
        return;
    };
    let _ = writeln!(
        o,
        "One producer (`--store memory --retention-events {RETENTION_EVENTS}`, filled to its retention first, so the log's size is flat) under a mixed load for {:.0} s, after a warm-up of the same load for {:.0} s. Publishers (one call in flight each, one call every 100 ms): gRPC `Publish` ({GRPC_BATCH} events a call), `POST /publish` and WebSocket `publish` ({JSON_BATCH} events a call). Readers (the table below), each checking it sees every event once and in order from where the round began; those that *come and go* leave after 0.3–3 s and come back on a fresh connection after their last sequence. Stallers open a stream from the oldest event and read nothing for {} s (small receive windows), then drop it; garbage goes to both ports one piece at a time; half-open connections send half an opening and wait up to {} s. Start: when the warm-up's clients had left and the producer's descriptors and tasks stopped moving; end: when the round's clients had left and both were back within their margins (or after {} s). Tasks: the producer's `pushpull_producer_runtime_tasks` (tokio's live task count); descriptors: `/proc/PID/fd`.\n",
        s.duration.as_secs_f64(),
        s.warm_up.as_secs_f64(),
        STALL.as_secs(),
        HALF_OPEN.as_secs(),
        SETTLE_LIMIT.as_secs(),
    );
    let _ = writeln!(
        o,
        "| producer | start | end | change | margin | peak during the load | within |\n|---|--:|--:|--:|---|--:|:-:|"
    );
    let _ = writeln!(
        o,
        "| RSS MiB | {:.1} | {:.1} | {:+.1} ({:+.1} %) | + {:.0} % or + {:.0} MiB (here + {:.1}) | {:.1} | {} |",
        mib(s.start.rss_bytes),
        mib(s.end.rss_bytes),
        signed_mib(s.start.rss_bytes, s.end.rss_bytes),
        (s.end.rss_bytes as f64 / s.start.rss_bytes.max(1) as f64 - 1.0) * 100.0,
        RSS_GROWTH_SHARE * 100.0,
        mib(RSS_GROWTH_BYTES),
        mib(s.rss_allowance()),
        mib(s.peak.rss_bytes),
        yes(s.rss_flat()),
    );
    for (what, pick, margin, ok) in [
        (
            "open file descriptors",
            (|x: &Sample| x.open_fds) as fn(&Sample) -> u64,
            FDS_MARGIN,
            s.fds_back(),
        ),
        (
            "tokio tasks",
            |x: &Sample| x.tasks,
            TASKS_MARGIN,
            s.tasks_back(),
        ),
    ] {
        let _ = writeln!(
            o,
            "| {what} | {} | {} | {:+} | ± {margin} | {} | {} |",
            pick(&s.start),
            pick(&s.end),
            pick(&s.end) as i64 - pick(&s.start) as i64,
            pick(&s.peak),
            yes(ok),
        );
    }
    let _ = writeln!(
        o,
        "\nThe end sample was taken {:.1} s after the last client left. The round published events {} to {} ({} events).\n",
        s.settled_in.as_secs_f64(),
        s.head_start + 1,
        s.head_end,
        s.head_end - s.head_start
    );
    let _ = writeln!(
        o,
        "| publisher | calls | events | failed calls |\n|---|--:|--:|--:|"
    );
    for p in &s.publishers {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            p.kind, p.calls, p.events, p.errors
        );
    }
    let _ = writeln!(
        o,
        "\n| reader | comes and goes | sessions (polls: calls) | interrupted by the producer | events | missed | duplicates | every event once |\n|---|:-:|--:|--:|--:|--:|--:|:-:|"
    );
    for t in &s.readers {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            t.kind,
            yes(t.comes_and_goes),
            t.sessions,
            t.interrupted,
            t.events,
            t.missed,
            t.duplicates,
            yes(t.every_event_once(s.head_end)),
        );
    }
    let _ = writeln!(
        o,
        "\nStallers and garbage: what the producer did each time. Refusing them, cutting them off or closing the connection is what it should do; none of it counts against the soak.\n\n| client | times | what happened |\n|---|--:|---|"
    );
    for t in s.stallers.iter().chain(&s.garbage) {
        let _ = writeln!(o, "| {} | {} | {} |", t.kind, t.attempts, t.outcomes());
    }
}

pub(super) fn json(s: &SoakRun) -> serde_json::Value {
    let us = |d: Duration| d.as_micros() as u64;
    let sample =
        |x: &Sample| json!({"rss_bytes": x.rss_bytes, "open_fds": x.open_fds, "tasks": x.tasks});
    let hostile =
        |t: &HostileTally| json!({"kind": t.kind, "attempts": t.attempts, "outcomes": t.outcomes});
    json!({
        "duration_us": us(s.duration), "warm_up_us": us(s.warm_up),
        "start": sample(&s.start), "end": sample(&s.end), "peak": sample(&s.peak),
        "settled_in_us": us(s.settled_in),
        "margins": {
            "rss_growth_share": RSS_GROWTH_SHARE, "rss_growth_bytes": RSS_GROWTH_BYTES,
            "rss_allowed_bytes": s.rss_allowance(), "open_fds": FDS_MARGIN, "tasks": TASKS_MARGIN,
        },
        "checks": {
            "rss_flat": s.rss_flat(), "fds_back": s.fds_back(), "tasks_back": s.tasks_back(),
            "every_event_once": s.every_event_once(),
        },
        "head_start": s.head_start, "head_end": s.head_end, "published": s.published(),
        "publishers": s.publishers.iter().map(|p| json!({
            "kind": p.kind, "calls": p.calls, "events": p.events, "errors": p.errors,
        })).collect::<Vec<_>>(),
        "readers": s.readers.iter().map(|t| json!({
            "kind": t.kind, "comes_and_goes": t.comes_and_goes, "from": t.from, "last": t.last,
            "events": t.events, "missed": t.missed, "duplicates": t.duplicates,
            "sessions": t.sessions, "interrupted": t.interrupted,
        })).collect::<Vec<_>>(),
        "stallers": s.stallers.iter().map(hostile).collect::<Vec<_>>(),
        "garbage": s.garbage.iter().map(hostile).collect::<Vec<_>>(),
        "series": s.series.iter().map(|(at, x)| json!({
            "at_s": at, "rss_bytes": x.rss_bytes, "open_fds": x.open_fds, "tasks": x.tasks,
        })).collect::<Vec<_>>(),
    })
}

/// The soak's section: both samples, every publisher and reader, and each reader ending on the
/// final head with nothing missed or repeated. Whether the samples are within the margins is
/// a target (and the run's exit code), not a matter of form.
pub(super) fn check(s: &serde_json::Value) -> Result<(), String> {
    if s.is_null() {
        return Err("soak: no result".into());
    }
    for at in ["start", "end", "peak"] {
        for key in ["rss_bytes", "open_fds", "tasks"] {
            if s[at][key].as_u64().is_none_or(|v| v == 0 && key != "tasks") {
                return Err(format!("soak: no {at}.{key}: {}", s[at]));
            }
        }
    }
    let list = |key: &str| s[key].as_array().cloned().unwrap_or_default();
    let head = s["head_end"].as_u64().unwrap_or(0);
    let publishers = list("publishers");
    if publishers.is_empty()
        || publishers
            .iter()
            .any(|p| p["errors"] != 0 || p["events"] == 0)
    {
        return Err(format!(
            "soak: a publisher failed or published nothing: {publishers:?}"
        ));
    }
    let readers = list("readers");
    if readers.is_empty()
        || readers.iter().any(|t| {
            t["missed"] != 0 || t["duplicates"] != 0 || t["last"] != head || t["events"] == 0
        })
    {
        return Err(format!(
            "soak: expected every reader to end on {head} with every event once: {readers:?}"
        ));
    }
    if list("stallers").is_empty() || list("garbage").is_empty() || list("series").is_empty() {
        return Err("soak: no stallers, garbage or samples recorded".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_accepts_a_complete_soak_and_refuses_a_lost_or_repeated_event() {
        let good = SoakRun::example();
        assert_eq!(check(&json(&good)), Ok(()));
        assert!(check(&serde_json::Value::Null).is_err(), "not run");
        let mut missed = good.clone();
        missed.readers[0].missed = 1;
        assert!(check(&json(&missed)).is_err());
        let mut repeated = good.clone();
        repeated.readers[0].duplicates = 1;
        assert!(check(&json(&repeated)).is_err());
        let mut short = good.clone();
        short.head_end = 111;
        assert!(check(&json(&short)).is_err(), "a reader short of the head");
        let mut failed = good;
        failed.publishers[0].errors = 1;
        assert!(check(&json(&failed)).is_err());
    }
}
