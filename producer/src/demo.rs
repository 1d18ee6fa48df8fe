//! The demo source: readable events at a steady rate, so a fresh `docker compose up` or
//! `cargo run` shows something moving. Off unless `--demo-rate` is set.
//!
//! Payloads are JSON stock quotes on `quotes.<SYMBOL>` topics, random walks around a start
//! price, e.g. `{"symbol":"AAPL","price":189.27,"bid":189.26,"ask":189.28}`.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng as _;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::log::{EventLog, NewEvent};

const SYMBOLS: &[(&str, f64)] = &[
    ("AAPL", 190.0),
    ("MSFT", 420.0),
    ("GOOG", 170.0),
    ("AMZN", 180.0),
    ("NVDA", 120.0),
];

/// Publishes `rate` events per second until `stop` is cancelled. Ticks every 10 ms (or every
/// event, for rates under 100/s) and publishes what is due since the start, so the long-run
/// rate is exact even when ticks are late.
pub async fn run(log: EventLog, rate: u32, max_per_publish: usize, stop: CancellationToken) {
    if rate == 0 {
        return;
    }
    info!(rate, "demo source publishing quotes.* events");
    let tick = Duration::from_secs_f64((1.0 / f64::from(rate)).max(0.01));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut published: u64 = 0;
    let mut prices: Vec<f64> = SYMBOLS.iter().map(|(_, p)| *p).collect();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        let n = (due.saturating_sub(published) as usize).min(max_per_publish);
        if n == 0 {
            continue;
        }
        let events = quotes(&mut prices, published, n);
        match log.append(events).await {
            Ok(_) => published += n as u64,
            Err(err) => {
                warn!(%err, "demo source could not publish; stopping it");
                return;
            }
        }
    }
}

/// `n` quote events, advancing each symbol's random walk. `offset` rotates the symbols so every
/// topic gets events at any rate.
fn quotes(prices: &mut [f64], offset: u64, n: usize) -> Vec<NewEvent> {
    let mut rng = rand::rng();
    (0..n)
        .map(|i| {
            let idx = ((offset + i as u64) % SYMBOLS.len() as u64) as usize;
            let (symbol, _) = SYMBOLS[idx];
            let price = &mut prices[idx];
            *price = (*price * (1.0 + rng.random_range(-0.001..0.001))).max(0.01);
            let spread = (*price * 0.0001).max(0.01);
            let payload = serde_json::json!({
                "symbol": symbol,
                "price": round2(*price),
                "bid": round2(*price - spread),
                "ask": round2(*price + spread),
            });
            NewEvent {
                topic: format!("quotes.{symbol}").into(),
                payload: Bytes::from(payload.to_string()),
            }
        })
        .collect()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::validate_topic;

    #[test]
    fn quotes_are_valid_json_on_valid_topics() {
        let mut prices: Vec<f64> = SYMBOLS.iter().map(|(_, p)| *p).collect();
        let events = quotes(&mut prices, 0, SYMBOLS.len() * 2);
        assert_eq!(events.len(), SYMBOLS.len() * 2);
        for event in &events {
            validate_topic("topic", &event.topic).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
            assert_eq!(
                format!("quotes.{}", v["symbol"].as_str().unwrap()),
                &*event.topic
            );
            assert!(v["bid"].as_f64().unwrap() < v["ask"].as_f64().unwrap());
        }
    }
}
