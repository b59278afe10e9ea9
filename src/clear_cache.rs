//! `caching-proxy --clear-cache`: asks a running instance's admin service to clear its cache.
//!
//! The instance is found through the same settings it was started with (`--config`,
//! `PROXY_ADMIN_*`, `--admin-port`, ...), so on one machine the plain command reaches the
//! instance running with the defaults.

use std::time::Duration;

use crate::admin::health::connectable;
use crate::config::AdminConfig;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClearError {
    #[error("no admin service answers at {url}: {cause} (is caching-proxy running? point at it with --admin-port/--admin-host, PROXY_ADMIN_PORT or --config)")]
    Unreachable { url: String, cause: String },
    #[error("the admin service at {url} refused to clear the cache: {status} {message} (set the token with --admin-token or PROXY_ADMIN_TOKEN)")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error("the admin service at {url} answered {status}: {message}")]
    Failed {
        url: String,
        status: u16,
        message: String,
    },
}

/// Clears the cache; returns how many entries were removed and the URL used.
pub fn clear(admin: &AdminConfig) -> Result<(u64, String), ClearError> {
    let url = format!("http://{}/cache", connectable(admin.listen));
    let agent = ureq::AgentBuilder::new()
        .timeout(TIMEOUT)
        .redirects(0)
        .build();
    let mut request = agent.delete(&url);
    if let Some(token) = &admin.token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    match request.call() {
        Ok(resp) => {
            let body: serde_json::Value = resp
                .into_string()
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
                .map_err(|e| ClearError::Failed {
                    url: url.clone(),
                    status: 200,
                    message: format!("unreadable answer: {e}"),
                })?;
            let cleared = body["cleared"].as_u64().unwrap_or(0);
            Ok((cleared, url))
        }
        Err(ureq::Error::Status(status, resp)) => {
            let message = resp
                .into_string()
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_default();
            if status == 401 || status == 403 {
                Err(ClearError::Refused {
                    url,
                    status,
                    message,
                })
            } else {
                Err(ClearError::Failed {
                    url,
                    status,
                    message,
                })
            }
        }
        Err(e) => Err(ClearError::Unreachable {
            url,
            cause: e.to_string(),
        }),
    }
}
