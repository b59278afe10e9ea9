//! Shared helpers for the whole-proxy tests: a scripted origin that records what it
//! receives, the real `caching-proxy` binary on ephemeral ports, a small HTTP client, real
//! `redis-server` processes for the Redis tier, a WebSocket echo origin, the metrics page,
//! waiting with a deadline, headless Chromium for the status page, and TLS / HTTP/2 clients
//! with a test CA.
#![allow(dead_code, unused_imports)] // each test file uses a different subset

pub mod browser;
pub mod client;
pub mod h2_origin;
pub mod load;
pub mod metrics;
pub mod net;
pub mod origin;
pub mod proxy;
pub mod redis;
pub mod tls;
pub mod wait;
pub mod websocket;

pub use client::{get, parse_response, raw, request, Response};
pub use origin::{Failure, Gate, Origin, Recorded, Reply, TestPki};
pub use proxy::{free_port, Proxy, ProxyBuilder, Reloaded};
pub use redis::{RedisCluster, RedisServer};
pub use wait::{poll, wait_until};
