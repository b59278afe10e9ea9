//! The RFC 9111 rules of `rfc9111/rules.rs`, `rfc9111/rules_part2.rs` and
//! `rfc9111/rules_part3.rs` (partial content) again, with the shared Redis tier as the only
//! cache (`--redis-l1-max-bytes 0`): every hit, revalidation and invalidation goes through
//! Redis, so the rules must hold there exactly as in memory.

mod support;

use std::sync::Arc;

use support::{ProxyBuilder, RedisServer};

/// Every proxy in the rules is built here, each with a Redis of its own.
fn builder(origin: &str) -> ProxyBuilder {
    let redis = Arc::new(RedisServer::start());
    ProxyBuilder::new(origin)
        .redis(&redis.url())
        .args(&["--redis-l1-max-bytes", "0"])
        .keep_alive(redis)
}

#[path = "rfc9111/rules.rs"]
mod rules;

#[path = "rfc9111/rules_part2.rs"]
mod rules_part2;

#[path = "rfc9111/rules_part3.rs"]
mod rules_part3;
