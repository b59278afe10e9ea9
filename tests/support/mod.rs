//! Shared helpers for the whole-proxy tests: a scripted origin that records what it
//! receives, the real `caching-proxy` binary on ephemeral ports, a small HTTP client, and
//! real `redis-server` processes for the Redis tier.
#![allow(dead_code, unused_imports)] // each test file uses a different subset

pub mod client;
pub mod load;
pub mod net;
pub mod origin;
pub mod proxy;
pub mod redis;

pub use client::{get, parse_response, raw, request, Response};
pub use origin::{Failure, Gate, Origin, Recorded, Reply, TestPki};
pub use proxy::{free_port, Proxy, ProxyBuilder};
pub use redis::{RedisCluster, RedisServer};
