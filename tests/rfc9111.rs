//! RFC 9111 (HTTP Caching) rule by rule through the real proxy, with the in-memory cache.
//! The rules themselves are in `rfc9111/rules.rs`, `rfc9111/rules_part2.rs` and
//! `rfc9111/rules_part3.rs` (partial content); `rfc9111_redis.rs` runs them again with the
//! shared Redis tier as the only cache.

mod support;

use support::ProxyBuilder;

/// Every proxy in the rules is built here.
fn builder(origin: &str) -> ProxyBuilder {
    ProxyBuilder::new(origin)
}

#[path = "rfc9111/rules.rs"]
mod rules;

#[path = "rfc9111/rules_part2.rs"]
mod rules_part2;

#[path = "rfc9111/rules_part3.rs"]
mod rules_part3;
