//! DNS discovery of an upstream group's servers (pingora-load-balancing has none built in).
//!
//! The first discovery returns the addresses resolved at start-up (config validation already
//! resolved every name), so the group is usable before any background work ran. Later ones
//! resolve each name again off the request path; a name that fails to resolve keeps its last
//! good addresses, so a DNS outage never empties a group.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use log::{info, warn};
use parking_lot::Mutex;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_error::Result;

use crate::config::routing::ServerConfig;

/// Resolves a name; the default asks the system resolver without blocking the runtime.
#[async_trait]
pub trait Resolver: Send + Sync {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

pub struct SystemResolver;

#[async_trait]
impl Resolver for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        addrs.sort_by_key(|a| !a.is_ipv4());
        addrs.dedup();
        Ok(addrs)
    }
}

/// The configured name of a server, carried on each of its addresses (for SNI and reports).
#[derive(Debug, Clone)]
pub struct ServerName(pub String);

pub struct DnsDiscovery {
    group: String,
    servers: Vec<ServerConfig>,
    /// Last good addresses of each server, in `servers` order.
    last_good: Mutex<Vec<Vec<SocketAddr>>>,
    resolver: Arc<dyn Resolver>,
    started: AtomicBool,
}

impl DnsDiscovery {
    pub fn new(group: &str, servers: Vec<ServerConfig>, resolver: Arc<dyn Resolver>) -> Self {
        DnsDiscovery {
            group: group.to_owned(),
            last_good: Mutex::new(servers.iter().map(|s| s.addrs.clone()).collect()),
            servers,
            resolver,
            started: AtomicBool::new(false),
        }
    }

    fn backends(&self) -> BTreeSet<Backend> {
        let last = self.last_good.lock();
        let mut set = BTreeSet::new();
        for (server, addrs) in self.servers.iter().zip(last.iter()) {
            for addr in addrs {
                let mut ext = pingora::lb::Extensions::new();
                ext.insert(ServerName(server.host.clone()));
                set.insert(Backend {
                    addr: PingoraAddr::Inet(*addr),
                    weight: server.weight,
                    ext,
                });
            }
        }
        set
    }
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        if self.started.swap(true, Ordering::Relaxed) {
            for (i, server) in self.servers.iter().enumerate() {
                if server.host.parse::<std::net::IpAddr>().is_ok() {
                    continue; // an address, nothing to resolve
                }
                match self.resolver.resolve(&server.host, server.port).await {
                    Ok(addrs) if !addrs.is_empty() => {
                        let mut last = self.last_good.lock();
                        if last[i] != addrs {
                            info!(
                                "upstream {}: {}:{} now resolves to {addrs:?}",
                                self.group, server.host, server.port
                            );
                            last[i] = addrs;
                        }
                    }
                    Ok(_) => warn!(
                        "upstream {}: {} resolved to nothing; keeping its last addresses",
                        self.group, server.host
                    ),
                    Err(e) => warn!(
                        "upstream {}: cannot resolve {} ({e}); keeping its last addresses",
                        self.group, server.host
                    ),
                }
            }
        }
        Ok((self.backends(), HashMap::new()))
    }
}

/// A resolver the tests control.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use parking_lot::Mutex;

    use super::Resolver;

    /// Answers from a table the test changes; a missing name is a resolution failure. Counts
    /// the lookups, so a test can wait for the next one instead of sleeping.
    #[derive(Default)]
    pub struct Table {
        answers: Mutex<HashMap<String, Vec<SocketAddr>>>,
        lookups: AtomicUsize,
    }

    impl Table {
        pub fn set(&self, host: &str, addrs: &[&str]) {
            let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
            self.answers.lock().insert(host.to_owned(), addrs);
        }

        /// From now on `host` fails to resolve.
        pub fn fail(&self, host: &str) {
            self.answers.lock().remove(host);
        }

        pub fn lookups(&self) -> usize {
            self.lookups.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Resolver for Table {
        async fn resolve(&self, host: &str, _port: u16) -> std::io::Result<Vec<SocketAddr>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            self.answers
                .lock()
                .get(host)
                .cloned()
                .ok_or_else(|| std::io::Error::other("NXDOMAIN"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Table;
    use super::*;

    fn addrs(d: &BTreeSet<Backend>) -> Vec<String> {
        d.iter().map(|b| b.addr.to_string()).collect()
    }

    fn server(host: &str, weight: usize, addrs: &[&str]) -> ServerConfig {
        ServerConfig {
            host: host.into(),
            port: 80,
            weight,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[tokio::test]
    async fn follows_dns_and_keeps_the_last_good_answer() {
        let table = Arc::new(Table::default());
        table.set("app.internal", &["10.0.0.1:80"]);
        let d = DnsDiscovery::new(
            "app",
            vec![server("app.internal", 2, &["10.0.0.1:80"])],
            table.clone(),
        );
        let (first, _) = d.discover().await.unwrap();
        assert_eq!(addrs(&first), ["10.0.0.1:80"]);
        assert_eq!(first.iter().next().unwrap().weight, 2);
        assert_eq!(
            table.lookups(),
            0,
            "the first answer is the start-up resolution"
        );

        table.set("app.internal", &["10.0.0.2:80"]);
        let (moved, _) = d.discover().await.unwrap();
        assert_eq!(addrs(&moved), ["10.0.0.2:80"], "the new answer is followed");

        table.fail("app.internal");
        let (kept, _) = d.discover().await.unwrap();
        assert_eq!(
            addrs(&kept),
            ["10.0.0.2:80"],
            "a failed lookup keeps the last"
        );

        table.set("app.internal", &[]);
        let (kept, _) = d.discover().await.unwrap();
        assert_eq!(addrs(&kept), ["10.0.0.2:80"], "so does an empty answer");
    }

    #[tokio::test]
    async fn each_name_keeps_its_own_answer_and_addresses_are_not_looked_up() {
        let table = Arc::new(Table::default());
        let d = DnsDiscovery::new(
            "app",
            vec![
                server("a.internal", 1, &["10.0.0.1:80"]),
                server("b.internal", 1, &["10.0.1.1:80"]),
                server("10.0.2.1", 3, &["10.0.2.1:80"]),
            ],
            table.clone(),
        );
        d.discover().await.unwrap();
        // a fails, b moves to two addresses.
        table.set("b.internal", &["10.0.1.2:80", "10.0.1.3:80"]);
        let (now, _) = d.discover().await.unwrap();
        assert_eq!(
            addrs(&now),
            ["10.0.0.1:80", "10.0.1.2:80", "10.0.1.3:80", "10.0.2.1:80"]
        );
        assert_eq!(table.lookups(), 2, "only the names are resolved");
        let names: Vec<_> = now
            .iter()
            .map(|b| b.ext.get::<ServerName>().unwrap().0.clone())
            .collect();
        assert_eq!(
            names,
            ["a.internal", "b.internal", "b.internal", "10.0.2.1"]
        );
        let weights: Vec<_> = now.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [1, 1, 1, 3]);
    }
}
