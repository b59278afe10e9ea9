//! RFC 9213 (Targeted HTTP Cache Control): `CDN-Cache-Control` and configured targeted
//! fields, through the real proxy, with the in-memory cache. The rules are in
//! `rfc9213/rules.rs`; `rfc9213_redis.rs` runs them again with the shared Redis tier.

mod support;

use support::ProxyBuilder;

/// Every proxy in the rules is built here.
fn builder(origin: &str) -> ProxyBuilder {
    ProxyBuilder::new(origin)
}

#[path = "rfc9213/rules.rs"]
mod rules;
