//! The producer's own numbers, read from its `/metrics` (the HTTP side every benchmark producer
//! serves): counters such as `store_reads`, and histograms such as `fsync_seconds`, as the
//! difference between two scrapes so one measurement window is judged by what happened in it.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// One scrape: every sample, keyed by its series as exposed (`name` or `name{labels}`).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: HashMap<String, f64>,
}

impl Scrape {
    /// Scrapes `http://{addr}/metrics`. HTTP/1.0 with a fresh connection each time, so the
    /// response ends when the server closes it (no chunked encoding, no HTTP client crate).
    pub async fn get(addr: SocketAddr) -> Result<Scrape, String> {
        let fetch = async {
            let mut stream = TcpStream::connect(addr).await?;
            stream
                .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
                .await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(5), fetch)
            .await
            .map_err(|_| format!("GET http://{addr}/metrics: no answer within 5 s"))?
            .map_err(|e| format!("GET http://{addr}/metrics: {e}"))?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("GET http://{addr}/metrics: no HTTP response"))?;
        if head.split_whitespace().nth(1) != Some("200") {
            let status = head.lines().next().unwrap_or_default();
            return Err(format!("GET http://{addr}/metrics: {status}"));
        }
        Ok(Scrape::parse(body))
    }

    /// Parses the Prometheus / OpenMetrics text format (comments skipped).
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), parse_number(value)?))
            })
            .collect();
        Scrape { samples }
    }

    /// A sample's value: `series` as exposed, e.g. `pushpull_producer_store_reads_total`.
    pub fn value(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    /// The cumulative buckets of histogram `name` (unlabelled), ascending by upper bound,
    /// `+Inf` last.
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter_map(|(series, &count)| {
                let le = series.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                Some((parse_number(le)?, count))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }

    /// How much counter `series` grew since `earlier` (0 if absent).
    pub fn grew(&self, earlier: &Scrape, series: &str) -> u64 {
        let now = self.value(series).unwrap_or(0.0);
        let then = earlier.value(series).unwrap_or(0.0);
        (now - then).max(0.0) as u64
    }

    /// What histogram `name` recorded since `earlier`.
    pub fn histogram_since(&self, earlier: &Scrape, name: &str) -> Buckets {
        let before = earlier.buckets(name);
        let buckets = self
            .buckets(name)
            .into_iter()
            .map(|(le, count)| {
                let was = before
                    .iter()
                    .find(|(b, _)| *b == le)
                    .map_or(0.0, |(_, c)| *c);
                (le, (count - was).max(0.0) as u64)
            })
            .collect();
        Buckets {
            cumulative: buckets,
        }
    }
}

fn parse_number(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// A histogram's observations in one window, as cumulative bucket counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    /// (upper bound in the metric's unit, observations ≤ it), ascending, `+Inf` last.
    pub cumulative: Vec<(f64, u64)>,
}

/// A quantile estimated from buckets: the bucket it falls in, and a linear interpolation
/// within it (as Prometheus's `histogram_quantile` does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantile {
    pub estimate: f64,
    /// The bucket's lower and upper bound: the true value lies between them.
    pub lower: f64,
    pub upper: f64,
}

impl Buckets {
    /// Observations in the window.
    pub fn count(&self) -> u64 {
        self.cumulative.last().map_or(0, |b| b.1)
    }

    /// Quantile `q` (0..=1); `None` with no observations. In the `+Inf` bucket, the estimate
    /// is the highest finite bound and the upper bound is infinite.
    pub fn quantile(&self, q: f64) -> Option<Quantile> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut lower = 0.0;
        let mut below = 0u64;
        for &(upper, count) in &self.cumulative {
            if count as f64 >= rank && count > below {
                if upper.is_infinite() {
                    return Some(Quantile {
                        estimate: lower,
                        lower,
                        upper,
                    });
                }
                let within = (rank - below as f64) / (count - below) as f64;
                return Some(Quantile {
                    estimate: lower + (upper - lower) * within.clamp(0.0, 1.0),
                    lower,
                    upper,
                });
            }
            lower = upper;
            below = count;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x_fsync_seconds Time.\n# TYPE x_fsync_seconds histogram\n\
        x_fsync_seconds_sum 0.5\nx_fsync_seconds_count 100\n\
        x_fsync_seconds_bucket{le=\"0.001\"} 50\nx_fsync_seconds_bucket{le=\"0.004\"} 98\n\
        x_fsync_seconds_bucket{le=\"+Inf\"} 100\nx_store_reads_total 7\n# EOF\n";

    #[test]
    fn parses_counters_and_buckets() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.value("x_store_reads_total"), Some(7.0));
        assert_eq!(
            s.buckets("x_fsync_seconds"),
            vec![(0.001, 50.0), (0.004, 98.0), (f64::INFINITY, 100.0)]
        );
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let now = Scrape::parse(TEXT);
        let h = now.histogram_since(&Scrape::default(), "x_fsync_seconds");
        assert_eq!(h.count(), 100);
        let p50 = h.quantile(0.5).unwrap();
        assert_eq!((p50.lower, p50.upper), (0.0, 0.001));
        assert!((p50.estimate - 0.001).abs() < 1e-12);
        let p90 = h.quantile(0.9).unwrap();
        assert_eq!((p90.lower, p90.upper), (0.001, 0.004));
        assert!((p90.estimate - (0.001 + 0.003 * 40.0 / 48.0)).abs() < 1e-12);
        let p99 = h.quantile(0.99).unwrap();
        assert!(p99.upper.is_infinite());
        assert_eq!(p99.estimate, 0.004);
    }

    #[test]
    fn a_window_counts_only_what_it_saw() {
        let before = Scrape::parse(TEXT);
        let after = Scrape::parse(&TEXT.replace("} 98", "} 198").replace("} 100", "} 200"));
        let h = after.histogram_since(&before, "x_fsync_seconds");
        assert_eq!(
            h.cumulative,
            vec![(0.001, 0), (0.004, 100), (f64::INFINITY, 100)]
        );
        assert_eq!(after.grew(&before, "x_store_reads_total"), 0);
        assert!(Buckets::default().quantile(0.99).is_none());
    }
}
