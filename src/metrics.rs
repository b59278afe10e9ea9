//! Prometheus metrics, `caching_proxy_*`, in the default registry of the `prometheus` crate
//! (the one Pingora's own metrics use), served as text by the admin service at `/metrics`.
//!
//! Per-request metrics are recorded by the proxy as requests finish. Cache counters and
//! gauges are not recorded twice: [`CacheCollector`] reads them at scrape time from the
//! counters and storage usage the cache already keeps, so the two can never disagree.
//! Process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, ...) come from the crate's process collector.

use std::sync::{Arc, OnceLock};

use once_cell::sync::Lazy;
use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    exponential_buckets, register_histogram, register_histogram_vec, register_int_counter_vec,
    register_int_gauge_vec, Encoder, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, TextEncoder,
};

use crate::cache::{Cache, CacheStatus};

/// Number of latency buckets (the status page reads the origin histogram's buckets).
pub const LATENCY_BUCKETS: usize = 16;

/// Latency buckets from 0.5 ms to about 16 s.
pub fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.0005, 2.0, LATENCY_BUCKETS).expect("valid buckets")
}

pub struct Metrics {
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_connect: Histogram,
    pub upstream_response: Histogram,
    pub origin_errors: IntCounterVec,
    pub admin_actions: IntCounterVec,
    pub upstream_healthy: IntGaugeVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_retries: IntCounterVec,
    build_info: IntGaugeVec,
}

/// `caching_proxy_handover_entries_total{direction="sent"|"received"}`: cache entries
/// handed to a new process on an upgrade or reload, and taken over from the old one.
pub static HANDOVER_ENTRIES: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "caching_proxy_handover_entries_total",
        "Cache entries handed over on an upgrade or reload: sent by the old process, received (and stored) by the new one.",
        &["direction"]
    )
    .expect("register")
});

/// `caching_proxy_reloads_total{result="ok"|"failed"}`: a failed reload is counted by the
/// process that keeps serving, a successful one by the new process.
pub static RELOADS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "caching_proxy_reloads_total",
        "Reloads (SIGHUP): ok counted by the new process, failed by the one that keeps serving.",
        &["result"]
    )
    .expect("register")
});

/// `caching_proxy_requests_rejected_total{reason}`: requests the proxy refused itself for a
/// `limits.*` bound or because they could not be parsed (`proxy::limits::Reason`, which
/// creates every label value at start-up).
pub static REQUESTS_REJECTED: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "caching_proxy_requests_rejected_total",
        "Requests refused by the proxy itself, by reason: uri_too_long, header_too_large, headers_too_large, too_many_headers, body_too_large, header_timeout, malformed.",
        &["reason"]
    )
    .expect("register")
});

/// `caching_proxy_cache_store_aborted_total{reason}`: responses that were being stored and
/// were given up (still served): `memory` (no room in the in-flight budget or the cache's
/// bound), `object_size` (larger than `cache.max_object_size`).
pub static CACHE_STORE_ABORTED: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "caching_proxy_cache_store_aborted_total",
        "Responses given up while being stored (still served), by reason: memory, object_size.",
        &["reason"]
    )
    .expect("register")
});

pub static METRICS: Lazy<Metrics> = Lazy::new(|| {
    let m = Metrics {
        requests: register_int_counter_vec!(
            "caching_proxy_requests_total",
            "Requests answered by the proxy, by method, status class, cache status and route.",
            &["method", "status_class", "cache_status", "route"]
        )
        .expect("register"),
        request_duration: register_histogram_vec!(
            "caching_proxy_request_duration_seconds",
            "Time from request to the end of the response, by cache status.",
            &["cache_status"],
            latency_buckets()
        )
        .expect("register"),
        upstream_connect: register_histogram!(
            "caching_proxy_upstream_connect_duration_seconds",
            "Time to open a new connection to the origin (TCP and TLS).",
            latency_buckets()
        )
        .expect("register"),
        upstream_response: register_histogram!(
            "caching_proxy_upstream_response_duration_seconds",
            "Time from sending a request to the origin to receiving its response header.",
            latency_buckets()
        )
        .expect("register"),
        origin_errors: register_int_counter_vec!(
            "caching_proxy_origin_errors_total",
            "Failed exchanges with the origin, by kind: connect, timeout, reset, 5xx.",
            &["kind"]
        )
        .expect("register"),
        admin_actions: register_int_counter_vec!(
            "caching_proxy_admin_actions_total",
            "Cache changes made through the admin API or PURGE, by action: clear, purge.",
            &["action"]
        )
        .expect("register"),
        upstream_healthy: register_int_gauge_vec!(
            "caching_proxy_upstream_healthy",
            "1 while a server of an upstream group passes its health checks, else 0.",
            &["upstream", "server"]
        )
        .expect("register"),
        upstream_requests: register_int_counter_vec!(
            "caching_proxy_upstream_requests_total",
            "Requests sent to each server of each upstream group, by response status class.",
            &["upstream", "server", "status_class"]
        )
        .expect("register"),
        upstream_retries: register_int_counter_vec!(
            "caching_proxy_upstream_retries_total",
            "Attempts made again on another server of an upstream group.",
            &["upstream"]
        )
        .expect("register"),
        build_info: register_int_gauge_vec!(
            "caching_proxy_build_info",
            "Always 1; labels name the build.",
            &["version", "git_sha"]
        )
        .expect("register"),
    };
    m.build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("CACHING_PROXY_GIT_SHA")])
        .set(1);
    for kind in ["connect", "timeout", "reset", "5xx"] {
        m.origin_errors.with_label_values(&[kind]);
    }
    for action in ["clear", "purge"] {
        m.admin_actions.with_label_values(&[action]);
    }
    m
});

/// Metrics of the shared Redis tier, registered when that tier is built.
pub struct RedisMetrics {
    pub up: IntGauge,
    pub errors: IntCounterVec,
    pub duration: HistogramVec,
    /// `caching_proxy_cache_tier_hits_total{tier="l1"}` and `{tier="l2"}`, resolved once:
    /// the L1 one is counted on every hit.
    pub l1_hits: IntCounter,
    pub l2_hits: IntCounter,
}

pub static REDIS_METRICS: Lazy<RedisMetrics> = Lazy::new(|| {
    let tier_hits = register_int_counter_vec!(
        "caching_proxy_cache_tier_hits_total",
        "Cache lookups answered by each tier: l1 (this process), l2 (Redis).",
        &["tier"]
    )
    .expect("register");
    RedisMetrics {
        up: prometheus::register_int_gauge!(
            "caching_proxy_redis_up",
            "1 while Redis answers, 0 while it does not (the proxy then serves without it)."
        )
        .expect("register"),
        errors: register_int_counter_vec!(
            "caching_proxy_redis_errors_total",
            "Redis calls that failed or timed out, by operation.",
            &["op"]
        )
        .expect("register"),
        duration: register_histogram_vec!(
            "caching_proxy_redis_duration_seconds",
            "Time of Redis calls, by operation.",
            &["op"],
            exponential_buckets(0.0001, 2.0, 14).expect("valid buckets")
        )
        .expect("register"),
        l1_hits: tier_hits.with_label_values(&["l1"]),
        l2_hits: tier_hits.with_label_values(&["l2"]),
    }
});

/// Metrics of the TLS listener, registered when one is configured.
pub struct TlsMetrics {
    /// By negotiated version: `TLSv1.2`, `TLSv1.3`.
    pub handshakes: IntCounterVec,
    /// Handshakes that failed or timed out (see `tls::handshake` for how they are seen).
    pub handshake_errors: IntCounter,
    /// `notAfter` of each certificate in use, by its first name.
    pub certificate_expiry: IntGaugeVec,
}

pub static TLS_METRICS: Lazy<TlsMetrics> = Lazy::new(|| {
    let m = TlsMetrics {
        handshakes: register_int_counter_vec!(
            "caching_proxy_tls_handshakes_total",
            "TLS handshakes completed on the TLS listener, by negotiated version.",
            &["version"]
        )
        .expect("register"),
        handshake_errors: prometheus::register_int_counter!(
            "caching_proxy_tls_handshake_errors_total",
            "TLS handshakes on the TLS listener that failed or timed out."
        )
        .expect("register"),
        certificate_expiry: register_int_gauge_vec!(
            "caching_proxy_tls_certificate_expiry_timestamp_seconds",
            "When each certificate in use expires (notAfter, Unix seconds), by its first name.",
            &["name"]
        )
        .expect("register"),
    };
    for version in ["TLSv1.2", "TLSv1.3"] {
        m.handshakes.with_label_values(&[version]);
    }
    m
});

/// The `status_class` label values, in [`status_class_index`] order.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// The position in [`STATUS_CLASSES`] of a status code's class: "2xx", "3xx", ...; "none"
/// for 0 (no response) and codes outside 100-599.
pub fn status_class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 5,
    }
}

/// The `method` label values: the standard methods and PURGE; anything else is OTHER, so
/// clients cannot create label values at will.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE", "OTHER",
];

fn method_index(method: &http::Method) -> usize {
    use http::Method;
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ if method.as_str() == "PURGE" => 7,
        _ => 8,
    }
}

/// The per-request series of one route (`caching_proxy_requests_total`) and of every route
/// (`caching_proxy_request_duration_seconds`), each looked up in its vector once.
///
/// `with_label_values` hashes the label values and takes the vector's lock on every call:
/// about 330 instructions, twice per request. A route's label sets are few (method x
/// status class x cache status), so each handle is resolved on first use and kept.
pub struct RequestSeries {
    route: String,
    requests: Box<[OnceLock<IntCounter>]>,
}

static DURATION: [OnceLock<Histogram>; CacheStatus::ALL.len()] =
    [const { OnceLock::new() }; CacheStatus::ALL.len()];

impl RequestSeries {
    pub fn new(route: &str) -> Self {
        let sets = METHODS.len() * STATUS_CLASSES.len() * CacheStatus::ALL.len();
        RequestSeries {
            route: route.to_owned(),
            requests: (0..sets).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts a finished request and its duration.
    pub fn record(&self, method: &http::Method, status: u16, cache: CacheStatus, secs: f64) {
        let c = cache.index();
        // The duration first: a scrape that sees a request counted sees its duration too.
        DURATION[c]
            .get_or_init(|| {
                METRICS
                    .request_duration
                    .with_label_values(&[cache.as_str()])
            })
            .observe(secs);
        let (m, s) = (method_index(method), status_class_index(status));
        let set = (m * STATUS_CLASSES.len() + s) * CacheStatus::ALL.len() + c;
        self.requests[set]
            .get_or_init(|| {
                METRICS.requests.with_label_values(&[
                    METHODS[m],
                    STATUS_CLASSES[s],
                    cache.as_str(),
                    &self.route,
                ])
            })
            .inc();
    }
}

/// Cache counters and gauges, read from the cache at scrape time.
pub struct CacheCollector {
    cache: Arc<Cache>,
    counters: Vec<(&'static str, IntCounter)>,
    gauges: Vec<(&'static str, IntGauge)>,
    descs: Vec<Desc>,
    /// Serialises scrapes: values are written into the metric objects, then collected.
    scrape: Mutex<()>,
}

impl CacheCollector {
    pub fn new(cache: Arc<Cache>) -> Self {
        let counter = |name: &'static str, help: &str| {
            (
                name,
                IntCounter::with_opts(Opts::new(format!("caching_proxy_cache_{name}_total"), help))
                    .expect("valid"),
            )
        };
        let gauge = |name: &'static str, help: &str| {
            (
                name,
                IntGauge::with_opts(Opts::new(format!("caching_proxy_cache_{name}"), help))
                    .expect("valid"),
            )
        };
        let counters = vec![
            counter("hits", "Requests served from a fresh stored response."),
            counter(
                "misses",
                "Cacheable requests fetched from the origin with nothing usable stored.",
            ),
            counter(
                "expired",
                "Requests whose stored response had expired and was fetched again in full.",
            ),
            counter("stale", "Requests served from a stale stored response."),
            counter(
                "revalidations",
                "Stored responses revalidated with the origin (304).",
            ),
            counter("bypass", "Requests that did not consult the cache."),
            counter(
                "coalesced_waits",
                "Requests that waited for another request's fetch of the same URL.",
            ),
            counter(
                "evictions",
                "Entries removed to stay within the size bounds.",
            ),
            counter("expirations", "Expired entries freed."),
        ];
        let gauges = vec![
            gauge("entries", "Entries stored."),
            gauge("bytes", "Bytes stored, headers and bookkeeping included."),
            gauge("max_entries", "Configured bound on entries."),
            gauge("max_bytes", "Configured bound on bytes."),
        ];
        let descs = counters
            .iter()
            .flat_map(|(_, c)| c.desc().into_iter().cloned())
            .chain(
                gauges
                    .iter()
                    .flat_map(|(_, g)| g.desc().into_iter().cloned()),
            )
            .collect();
        CacheCollector {
            cache,
            counters,
            gauges,
            descs,
            scrape: Mutex::new(()),
        }
    }
}

impl Collector for CacheCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _scrape = self.scrape.lock();
        let s = self.cache.stats.snapshot();
        let u = self.cache.backend.usage();
        let mut families = Vec::new();
        for (name, counter) in &self.counters {
            let value = match *name {
                "hits" => s.hits,
                "misses" => s.misses,
                "expired" => s.expired,
                "stale" => s.stale,
                "revalidations" => s.revalidated,
                "bypass" => s.bypass,
                "coalesced_waits" => s.coalesced_waits,
                "evictions" => u.evictions,
                "expirations" => u.expirations,
                _ => unreachable!("every counter is listed"),
            };
            counter.reset();
            counter.inc_by(value);
            families.extend(counter.collect());
        }
        let limits = self.cache.limits;
        for (name, gauge) in &self.gauges {
            let value = match *name {
                "entries" => u.entries,
                "bytes" => u.bytes,
                "max_entries" => limits.max_entries as u64,
                "max_bytes" => limits.max_bytes as u64,
                _ => unreachable!("every gauge is listed"),
            };
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
            families.extend(gauge.collect());
        }
        families
    }
}

/// Registers the cache collector and forces the static metrics into the registry, so that
/// every metric is exported (at zero) from the first scrape on.
pub fn register(cache: Arc<Cache>) {
    Lazy::force(&METRICS);
    for direction in ["sent", "received"] {
        HANDOVER_ENTRIES.with_label_values(&[direction]);
    }
    for result in ["ok", "failed"] {
        RELOADS.with_label_values(&[result]);
    }
    for reason in ["memory", "object_size"] {
        CACHE_STORE_ABORTED.with_label_values(&[reason]);
    }
    if let Err(e) = prometheus::register(Box::new(CacheCollector::new(cache))) {
        log::warn!("cache metrics not registered: {e}");
    }
}

/// The Prometheus text exposition of every registered metric.
pub fn render() -> Vec<u8> {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&prometheus::gather(), &mut out)
        .expect("text encoding to memory cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        let class = |status| STATUS_CLASSES[status_class_index(status)];
        assert_eq!(class(204), "2xx");
        assert_eq!(class(404), "4xx");
        assert_eq!(class(503), "5xx");
        assert_eq!(class(0), "none");
        assert_eq!(class(100), "1xx");
        assert_eq!(class(599), "5xx");
        assert_eq!(class(99), "none");
        assert_eq!(class(600), "none");
    }

    /// The kept handles are the registered series: what a scrape reads is what was recorded,
    /// each request under its own label set.
    #[test]
    fn request_series_count_into_the_registered_vectors() {
        let series = RequestSeries::new("series-test");
        let count = |labels: [&str; 3]| {
            let [m, s, c] = labels;
            METRICS
                .requests
                .with_label_values(&[m, s, c, "series-test"])
                .get()
        };
        let hits = || {
            METRICS
                .request_duration
                .with_label_values(&["HIT"])
                .get_sample_count()
        };
        let before = hits();
        let purge = http::Method::from_bytes(b"PURGE").unwrap();
        let odd = http::Method::from_bytes(b"BREW").unwrap();
        series.record(&http::Method::GET, 200, CacheStatus::Hit, 0.001);
        series.record(&http::Method::GET, 204, CacheStatus::Hit, 0.001);
        series.record(&http::Method::POST, 503, CacheStatus::Bypass, 0.001);
        series.record(&purge, 200, CacheStatus::Bypass, 0.001);
        series.record(&odd, 0, CacheStatus::Miss, 0.001);
        assert_eq!(count(["GET", "2xx", "HIT"]), 2);
        assert_eq!(count(["POST", "5xx", "BYPASS"]), 1);
        assert_eq!(count(["PURGE", "2xx", "BYPASS"]), 1);
        assert_eq!(count(["OTHER", "none", "MISS"]), 1);
        assert_eq!(count(["GET", "2xx", "MISS"]), 0);
        assert!(hits() >= before + 2, "durations recorded under HIT");
    }

    /// The handle tables are indexed by `CacheStatus::index`: it must be the position in
    /// `CacheStatus::ALL`, and the method table's last entry the catch-all.
    #[test]
    fn label_tables_line_up() {
        for (i, status) in CacheStatus::ALL.into_iter().enumerate() {
            assert_eq!(status.index(), i, "{status:?}");
        }
        let odd = http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(METHODS[method_index(&odd)], "OTHER");
        assert_eq!(METHODS[method_index(&http::Method::DELETE)], "DELETE");
    }
}
