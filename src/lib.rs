//! caching-proxy: a caching HTTP edge proxy built on Pingora.
//!
//! The request path reads top-down: [`server`] wires the services, [`proxy`] runs the
//! request phases, [`cache`] holds the key, policy and storage, [`config`] the settings.
//! [`tls`] holds the TLS listener's certificates, [`lifecycle`] signals, reload, the cache
//! hand-over and draining. [`admin`] is a separate service on its own port; [`status`] holds
//! the figures of its status page. [`error`], [`headers`] and [`auth`] are
//! shared by the proxy and the admin service and depend on neither.

pub mod admin;
pub mod auth;
pub mod cache;
pub mod clear_cache;
pub mod config;
pub mod error;
pub mod headers;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod status;
pub mod tls;
pub mod upstream;
