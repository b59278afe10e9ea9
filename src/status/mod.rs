//! The figures behind the admin status page (`GET /` and `GET /status`): rates and ratios
//! over the last second, minute and 15 minutes, a 5-minute chart, origin latency quantiles,
//! and the busiest URLs.
//!
//! Nothing here runs per request except [`top::TopUrls::record`] (see its module for the
//! cost). The rest comes from counters the proxy keeps anyway (cache statistics, Prometheus
//! metrics), read once a second by [`sampler::Sampler`] into a fixed-size [`ring::Ring`]
//! of [`RING`] samples (about 250 KB); `GET /status` reads the ring and computes the
//! figures from differences of samples.
//!
//! This module knows the cache and the metrics; it knows nothing of the admin service's
//! routes or of the proxy's phases.

pub mod ring;
pub mod sample;
pub mod sampler;
pub mod top;

use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde_json::{json, Value};

use ring::Ring;
pub use sample::{Delta, Sample, ORIGIN_ERRORS, X_CACHE};
pub use sampler::Sampler;
pub use top::{Lookup, TopUrl, TopUrls};

/// Samples kept: one a second for 15 minutes, plus the one the window starts from.
pub const RING: usize = 15 * 60 + 1;
/// Points of the chart: one a second for 5 minutes.
pub const CHART_POINTS: usize = 5 * 60;
/// The windows reported, by name, in samples (seconds).
pub const WINDOWS: [(&str, usize); 3] = [("1s", 1), ("1m", 60), ("15m", 15 * 60)];
/// How many URLs the top list shows.
pub const TOP_URLS: usize = 20;

/// Shared by the sampler (writes), the proxy (records URLs) and the admin service (reads).
pub struct StatusBoard {
    started: Instant,
    started_at: SystemTime,
    samples: Mutex<Ring<Sample>>,
    pub top: TopUrls,
}

impl Default for StatusBoard {
    /// A board for a process starting now. Its first sample is the start itself, when every
    /// counter is zero, so that the first requests count even if they come before the
    /// sampler's first tick.
    fn default() -> Self {
        let mut samples = Ring::new(RING);
        samples.push(Sample::default());
        StatusBoard {
            started: Instant::now(),
            started_at: SystemTime::now(),
            samples: Mutex::new(samples),
            top: TopUrls::default(),
        }
    }
}

impl StatusBoard {
    /// Time since start, the clock samples are taken on.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    pub fn push(&self, sample: Sample) {
        self.samples.lock().push(sample);
    }

    /// The figures as of the latest sample.
    pub fn report(&self) -> Report {
        let samples = self.samples.lock();
        let latest = samples.latest().copied().unwrap_or_default();
        let windows = WINDOWS.map(|(name, n)| {
            let older = samples.back_or_oldest(n).copied().unwrap_or_default();
            (name, latest.since(&older))
        });
        let mut chart = Vec::with_capacity(CHART_POINTS);
        let mut previous: Option<&Sample> = None;
        for s in samples.last(CHART_POINTS + 1) {
            if let Some(p) = previous {
                chart.push(s.since(p));
            }
            previous = Some(s);
        }
        Report {
            latest,
            windows,
            chart,
        }
    }
}

/// Figures computed from the ring: the latest sample, the difference over each window,
/// and one difference per second for the chart.
#[derive(Debug, Clone)]
pub struct Report {
    pub latest: Sample,
    pub windows: [(&'static str, Delta); 3],
    pub chart: Vec<Delta>,
}

impl Report {
    /// A counter as `/status` reports it: `{"total": N, "per_s": {"1s": r, "1m": r, "15m": r}}`
    /// (a rate is null before two samples exist).
    pub fn counter(&self, pick: impl Fn(&Sample) -> u64) -> Value {
        json!({
            "total": pick(&self.latest),
            "per_s": self.per_window(|d| d.rate(pick(&d.0)).map(round3)),
        })
    }

    /// The hit ratio (0 to 1) over each window; null where there was no lookup.
    pub fn hit_ratio(&self) -> Value {
        self.per_window(|d| d.hit_ratio().map(round4))
    }

    /// How long each window actually spans, in seconds (shorter than its name while the
    /// process is younger than that).
    pub fn spans(&self) -> Value {
        self.per_window(|d| Some(round3(d.span().as_secs_f64())))
    }

    /// Origin response time p50 and p99 over the last minute, in milliseconds.
    pub fn latency(&self) -> Value {
        let minute = &self.windows[1].1;
        let bounds = crate::metrics::latency_buckets();
        let ms = |q| {
            minute
                .latency_quantile(q, &bounds)
                .map(|s| round3(s * 1000.0))
        };
        json!({
            "p50_ms": ms(0.5),
            "p99_ms": ms(0.99),
            "responses": minute.0.latency_count,
            "window_s": round3(minute.span().as_secs_f64()),
        })
    }

    /// The last 5 minutes, one point a second, oldest first.
    pub fn chart(&self) -> Value {
        json!({
            "interval_s": 1,
            "requests_per_s": self.chart.iter().map(|d| d.rate(d.0.requests).map(round3)).collect::<Vec<_>>(),
            "origin_per_s": self.chart.iter().map(|d| d.rate(d.0.origin_requests).map(round3)).collect::<Vec<_>>(),
            "hit_ratio": self.chart.iter().map(|d| d.hit_ratio().map(round4)).collect::<Vec<_>>(),
        })
    }

    fn per_window(&self, f: impl Fn(&Delta) -> Option<f64>) -> Value {
        Value::Object(
            self.windows
                .iter()
                .map(|(name, d)| ((*name).to_owned(), json!(f(d))))
                .collect(),
        )
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(secs: u64, requests: u64, hits: u64, misses: u64) -> Sample {
        Sample {
            at: Duration::from_secs(secs),
            requests,
            x_cache: [hits, misses, 0, 0, 0, 0],
            ..Sample::default()
        }
    }

    #[test]
    fn report_over_a_young_process_uses_what_it_has() {
        let board = StatusBoard::default();
        let empty = board.report();
        assert_eq!(empty.counter(|s| s.requests)["per_s"]["1m"], Value::Null);
        assert!(empty.chart.is_empty());

        // The start, when every counter is zero, is already there.
        board.push(sample(1, 10, 0, 10));
        board.push(sample(2, 30, 10, 20));
        let r = board.report();
        let requests = r.counter(|s| s.requests);
        assert_eq!(requests["total"], 30);
        assert_eq!(requests["per_s"]["1s"], 20.0);
        assert_eq!(requests["per_s"]["1m"], 15.0, "over the 2 s there are");
        assert_eq!(r.hit_ratio()["1s"], 0.5);
        assert_eq!(r.hit_ratio()["15m"], 0.3333);
        assert_eq!(r.spans()["15m"], 2.0);
        let chart = r.chart();
        assert_eq!(chart["requests_per_s"], json!([10.0, 20.0]));
        assert_eq!(chart["hit_ratio"], json!([0.0, 0.5]));
    }

    #[test]
    fn windows_and_chart_are_bounded_by_the_ring() {
        let board = StatusBoard::default();
        for i in 0..2000u64 {
            board.push(sample(i, i * 2, i, 0));
        }
        assert_eq!(board.samples.lock().len(), RING);
        let r = board.report();
        assert_eq!(r.chart.len(), CHART_POINTS);
        assert_eq!(r.spans(), json!({"1s": 1.0, "1m": 60.0, "15m": 900.0}));
        assert_eq!(r.counter(|s| s.requests)["per_s"]["15m"], 2.0);
        assert_eq!(r.hit_ratio()["1m"], 1.0);
    }
}
