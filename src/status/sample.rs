//! One sample of the counters the proxy keeps anyway, and what two samples tell: rates,
//! the hit ratio, origin latency quantiles.

use std::time::Duration;

use crate::cache::CacheStatus;

/// Buckets of `caching_proxy_upstream_response_duration_seconds` (see `metrics`).
pub const LATENCY_BUCKETS: usize = crate::metrics::LATENCY_BUCKETS;

/// The `X-Cache` statuses, in the order of [`Sample::x_cache`].
pub const X_CACHE: [CacheStatus; 6] = CacheStatus::ALL;

/// The kinds of `caching_proxy_origin_errors_total`, in the order of
/// [`Sample::origin_errors`].
pub const ORIGIN_ERRORS: [&str; 4] = ["connect", "timeout", "reset", "5xx"];

/// Counters at one moment. Every field only grows, so the difference of two samples is
/// what happened in between.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// When it was taken, from the board's start.
    pub at: Duration,
    /// `caching_proxy_requests_total`, all labels.
    pub requests: u64,
    /// Responses by `X-Cache`, in [`X_CACHE`] order.
    pub x_cache: [u64; 6],
    pub coalesced_waits: u64,
    pub evictions: u64,
    pub expirations: u64,
    /// `caching_proxy_upstream_requests_total`, all labels.
    pub origin_requests: u64,
    /// In [`ORIGIN_ERRORS`] order.
    pub origin_errors: [u64; 4],
    /// Cumulative bucket counts of the origin response time histogram, and its count.
    pub latency: [u64; LATENCY_BUCKETS],
    pub latency_count: u64,
}

impl Sample {
    /// What happened between `older` and `self`.
    pub fn since(&self, older: &Sample) -> Delta {
        let sub = |a: u64, b: u64| a.saturating_sub(b);
        let subs = |a: &[u64], b: &[u64], out: &mut [u64]| {
            for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
                *o = sub(*a, *b);
            }
        };
        let mut d = Sample {
            at: self.at.saturating_sub(older.at),
            requests: sub(self.requests, older.requests),
            coalesced_waits: sub(self.coalesced_waits, older.coalesced_waits),
            evictions: sub(self.evictions, older.evictions),
            expirations: sub(self.expirations, older.expirations),
            origin_requests: sub(self.origin_requests, older.origin_requests),
            latency_count: sub(self.latency_count, older.latency_count),
            ..Sample::default()
        };
        subs(&self.x_cache, &older.x_cache, &mut d.x_cache);
        subs(
            &self.origin_errors,
            &older.origin_errors,
            &mut d.origin_errors,
        );
        subs(&self.latency, &older.latency, &mut d.latency);
        Delta(d)
    }
}

/// The difference of two samples; `at` is the time between them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delta(pub Sample);

impl Delta {
    pub fn span(&self) -> Duration {
        self.0.at
    }

    /// `count` per second over the span; `None` over no time at all.
    pub fn rate(&self, count: u64) -> Option<f64> {
        let secs = self.0.at.as_secs_f64();
        (secs > 0.0).then(|| count as f64 / secs)
    }

    /// Responses served from the cache (HIT, STALE, REVALIDATED) over cache lookups (those
    /// plus MISS and EXPIRED), as `GET /cache/stats` counts it; `None` without lookups.
    pub fn hit_ratio(&self) -> Option<f64> {
        let [hit, miss, expired, stale, revalidated, _bypass] = self.0.x_cache;
        let served = hit + stale + revalidated;
        let lookups = served + miss + expired;
        (lookups > 0).then(|| served as f64 / lookups as f64)
    }

    /// The `q` quantile of origin response times, in seconds, estimated from the histogram
    /// buckets as Prometheus' `histogram_quantile` does (linear within a bucket).
    pub fn latency_quantile(&self, q: f64, bounds: &[f64]) -> Option<f64> {
        quantile(q, bounds, &self.0.latency, self.0.latency_count)
    }
}

/// `cumulative[i]` counts observations `<= bounds[i]`; `total` counts all of them (the
/// `+Inf` bucket). A quantile in the `+Inf` bucket is reported as the largest bound.
pub fn quantile(q: f64, bounds: &[f64], cumulative: &[u64], total: u64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for (&upper, &count) in bounds.iter().zip(cumulative) {
        if count as f64 >= rank && count > below {
            let within = (rank - below as f64) / (count - below) as f64;
            return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
        }
        below = count;
        lower = upper;
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Sample {
        Sample {
            at: Duration::from_secs(secs),
            ..Sample::default()
        }
    }

    #[test]
    fn rates_and_hit_ratio_over_a_span() {
        let mut old = at(10);
        old.requests = 100;
        old.x_cache = [10, 10, 0, 0, 0, 5];
        let mut new = at(20);
        new.requests = 150;
        // +30 HIT, +10 MISS, +5 STALE, +5 BYPASS
        new.x_cache = [40, 20, 0, 5, 0, 10];
        let d = new.since(&old);
        assert_eq!(d.span(), Duration::from_secs(10));
        assert_eq!(d.rate(d.0.requests), Some(5.0));
        assert_eq!(d.hit_ratio(), Some(35.0 / 45.0));
        assert_eq!(at(3).since(&at(3)).rate(7), None, "no time, no rate");
        assert_eq!(
            at(5).since(&at(3)).hit_ratio(),
            None,
            "no lookups, no ratio"
        );
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let bounds = [0.001, 0.002, 0.004, 0.008];
        // 10 in (0, 1 ms], 10 in (1, 2 ms], none in (2, 4], 0 in (4, 8], 0 above.
        let cum = [10, 20, 20, 20];
        assert_eq!(quantile(0.5, &bounds, &cum, 20), Some(0.001));
        assert_eq!(quantile(0.25, &bounds, &cum, 20), Some(0.0005));
        let p99 = quantile(0.99, &bounds, &cum, 20).unwrap();
        assert!((p99 - 0.00198).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.5, &bounds, &[0; 4], 0), None);
        // Everything above the largest bound: the largest bound.
        assert_eq!(quantile(0.99, &bounds, &[0, 0, 0, 0], 5), Some(0.008));
        // The histogram of a delta: differences of cumulative counts.
        let mut a = at(0);
        let mut b = at(60);
        a.latency[..4].copy_from_slice(&[5, 5, 5, 5]);
        a.latency_count = 5;
        b.latency[..4].copy_from_slice(&[5, 5, 105, 105]);
        b.latency_count = 105;
        let d = b.since(&a);
        let bounds = crate::metrics::latency_buckets();
        let p50 = d.latency_quantile(0.5, &bounds).unwrap();
        assert!(p50 > bounds[1] && p50 <= bounds[2], "{p50}");
    }
}
