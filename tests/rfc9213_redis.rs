//! The RFC 9213 rules of `rfc9213/rules.rs` again, with the shared Redis tier as the only
//! cache (`--redis-l1-max-bytes 0`).

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

#[path = "rfc9213/rules.rs"]
mod rules;
