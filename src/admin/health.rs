//! Readiness: ready once the server's services are running, not ready again as soon as a
//! shutdown begins, so load balancers stop sending traffic before the listeners close.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
}

/// A background service that marks the process ready when it starts (after the services it
/// depends on) and not ready when shutdown begins.
pub struct ReadinessService(pub Readiness);

#[async_trait]
impl BackgroundService for ReadinessService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.0.set(true);
        let _ = shutdown.changed().await;
        self.0.set(false);
    }
}
