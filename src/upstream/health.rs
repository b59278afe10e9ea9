//! Active health checks: Pingora's TCP and HTTP checks, wrapped so that every result is
//! recorded (for `GET /upstreams`) and every change of health is logged and exported.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use log::{info, warn};
use parking_lot::Mutex;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;

use crate::config::routing::{HealthCheckConfig, HealthCheckKind};
use crate::metrics::METRICS;

/// The last check of one server.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub ok: bool,
    pub at: SystemTime,
    pub error: Option<String>,
}

/// Results by server address, shared with the admin service.
#[derive(Debug, Default)]
pub struct CheckResults(Mutex<HashMap<String, CheckResult>>);

impl CheckResults {
    pub fn get(&self, addr: &str) -> Option<CheckResult> {
        self.0.lock().get(addr).cloned()
    }
}

/// A check of `config`'s kind that records what it finds.
pub struct RecordedCheck {
    inner: Box<dyn HealthCheck + Send + Sync>,
    group: String,
    results: Arc<CheckResults>,
}

impl RecordedCheck {
    pub fn new(group: &str, config: &HealthCheckConfig, tls: bool, sni: &str) -> Self {
        let inner: Box<dyn HealthCheck + Send + Sync> = match &config.kind {
            HealthCheckKind::Tcp => {
                let mut tcp = if tls {
                    TcpHealthCheck::new_tls(sni)
                } else {
                    TcpHealthCheck::new()
                };
                tcp.consecutive_success = config.healthy_after;
                tcp.consecutive_failure = config.unhealthy_after;
                tcp.peer_template.options.connection_timeout = Some(config.timeout);
                tcp.peer_template.options.total_connection_timeout = Some(config.timeout);
                tcp
            }
            HealthCheckKind::Http { path, host } => {
                let mut http = HttpHealthCheck::new(host, tls);
                if tls {
                    http.peer_template.sni = sni.to_owned();
                }
                http.consecutive_success = config.healthy_after;
                http.consecutive_failure = config.unhealthy_after;
                let mut req =
                    RequestHeader::build("GET", path.as_bytes(), None).expect("a validated path");
                req.append_header("Host", host.as_str())
                    .expect("a validated host");
                req.append_header("User-Agent", "caching-proxy health check")
                    .expect("valid");
                http.req = req;
                let opts = &mut http.peer_template.options;
                opts.connection_timeout = Some(config.timeout);
                opts.total_connection_timeout = Some(config.timeout);
                opts.read_timeout = Some(config.timeout);
                opts.write_timeout = Some(config.timeout);
                let expected = config.expect_status.clone();
                http.validator = Some(Box::new(move |resp| {
                    let status = resp.status.as_u16();
                    if expected.contains(&status) {
                        Ok(())
                    } else {
                        Error::e_explain(
                            ErrorType::HTTPStatus(status),
                            format!("status {status}, expected one of {expected:?}"),
                        )
                    }
                }));
                Box::new(http)
            }
        };
        RecordedCheck {
            inner,
            group: group.to_owned(),
            results: Arc::default(),
        }
    }

    pub fn results(&self) -> Arc<CheckResults> {
        self.results.clone()
    }
}

#[async_trait]
impl HealthCheck for RecordedCheck {
    async fn check(&self, target: &Backend) -> Result<()> {
        let result = self.inner.check(target).await;
        self.results.0.lock().insert(
            target.addr.to_string(),
            CheckResult {
                ok: result.is_ok(),
                at: SystemTime::now(),
                error: result.as_ref().err().map(|e| e.to_string()),
            },
        );
        result
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        let server = target.addr.to_string();
        METRICS
            .upstream_healthy
            .with_label_values(&[self.group.as_str(), server.as_str()])
            .set(healthy as i64);
        if healthy {
            info!("upstream {}: {server} is healthy again", self.group);
        } else {
            warn!(
                "upstream {}: {server} is unhealthy ({}); it gets no traffic until it recovers",
                self.group,
                self.results
                    .get(&server)
                    .and_then(|r| r.error)
                    .unwrap_or_default()
            );
        }
        self.inner.health_status_change(target, healthy).await;
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}
