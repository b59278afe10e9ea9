//! The background service that reads the counters once a second into the status ring and
//! moves the top-URL window on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::core::{Collector, Metric};
use prometheus::IntCounterVec;

use super::sample::{Sample, LATENCY_BUCKETS, ORIGIN_ERRORS};
use super::top::SLICE;
use super::StatusBoard;
use crate::cache::Cache;
use crate::metrics::METRICS;

/// How often counters are sampled.
pub const INTERVAL: Duration = Duration::from_secs(1);

pub struct Sampler {
    pub board: Arc<StatusBoard>,
    pub cache: Arc<Cache>,
}

impl Sampler {
    /// Reads every counter the status page needs, now.
    pub fn read(&self) -> Sample {
        let s = self.cache.stats.snapshot();
        let u = self.cache.backend.usage();
        let histogram = METRICS.upstream_response.metric();
        let histogram = histogram.get_histogram();
        let mut latency = [0u64; LATENCY_BUCKETS];
        for (slot, bucket) in latency.iter_mut().zip(histogram.get_bucket()) {
            *slot = bucket.cumulative_count();
        }
        Sample {
            at: self.board.uptime(),
            requests: sum(&METRICS.requests),
            x_cache: [
                s.hits,
                s.misses,
                s.expired,
                s.stale,
                s.revalidated,
                s.bypass,
            ],
            coalesced_waits: s.coalesced_waits,
            evictions: u.evictions,
            expirations: u.expirations,
            origin_requests: sum(&METRICS.upstream_requests),
            origin_errors: ORIGIN_ERRORS
                .map(|kind| METRICS.origin_errors.with_label_values(&[kind]).get()),
            latency,
            latency_count: histogram.get_sample_count(),
        }
    }
}

/// The sum of a counter over all its label values.
fn sum(counters: &IntCounterVec) -> u64 {
    counters
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[async_trait]
impl BackgroundService for Sampler {
    /// Samples until the process exits: while the proxy drains, the admin service and its
    /// status page keep answering, so the shutdown signal is deliberately not awaited.
    async fn start(&self, _shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(INTERVAL);
        // A late tick (a loaded machine) is not made up for: rates divide by the real time
        // between samples.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut slice_started = Instant::now();
        loop {
            tick.tick().await;
            self.board.push(self.read());
            if slice_started.elapsed() >= SLICE {
                self.board.top.rotate();
                slice_started = Instant::now();
            }
        }
    }
}
