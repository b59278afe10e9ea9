//! The shared Redis tier: entries in Redis (standalone or Redis Cluster), the fill lock that
//! makes concurrent misses on many instances one origin fetch, and the events (pub/sub) that
//! tell every instance about purges and clears.
//!
//! It fails open. Every call is bounded by `cache.redis.timeout`; a failed or timed-out call
//! is a miss (reads) or a skipped write, never an error on the request path. After
//! [`FAILURES_TO_OPEN`] failures in a row a circuit breaker stops calling Redis for
//! [`OPEN_FOR`]; the health task probes it meanwhile and closes the breaker as soon as Redis
//! answers again, so recovery needs no restart.
//!
//! Keys, all of one URL in one Cluster slot (the hash tag is the primary key hash):
//! ```text
//! <prefix><gen>:{<primary>}:m:<combined>        meta (+ inline body), see entry.rs
//! <prefix><gen>:{<primary>}:b:<combined>:<g>:<i> body chunk i of write generation g
//! <prefix><gen>:{<primary>}:v                    set of the URL's variant (combined) keys
//! <prefix><gen>:{<primary>}:l                    fill lock (SET NX PX), value: a token
//! <prefix>gen                                    the current key generation
//! <prefix>events                                 pub/sub channel
//! ```
//! `<gen>` changes on clear: the old keys become unreachable at once on every instance and
//! age out through their TTL or Redis's LRU, so a clear is O(1) in standalone and in Cluster.
//! This module knows Redis and the entry format; the tier in front of it is `tiered.rs`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use log::{debug, info, warn};
use once_cell::sync::Lazy;
use parking_lot::RwLock;
use pingora_cache::key::HashBinary;
use pingora_cache::CacheMeta;
use prometheus::{Histogram, IntCounter};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline};

use super::entry::{self, EntryHead};
use crate::config::RedisConfig;
use crate::metrics::REDIS_METRICS;

/// Failures in a row that open the circuit breaker.
pub const FAILURES_TO_OPEN: u32 = 5;
/// How long an open breaker keeps calls away from Redis before letting them try again.
pub const OPEN_FOR: Duration = Duration::from_secs(1);
/// How often the health task pings Redis (and re-reads the key generation).
pub const HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// Chunks fetched per call when a large body is read.
const CHUNKS_PER_CALL: usize = 4;

/// A kind of Redis call: the `op` label of the Redis metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    GetChunks,
    PutChunks,
    Put,
    Purge,
    Clear,
    Delete,
    Publish,
    Lock,
    Unlock,
    FillState,
    Connect,
    Health,
}

impl Op {
    const ALL: [Op; 13] = [
        Op::Get,
        Op::GetChunks,
        Op::PutChunks,
        Op::Put,
        Op::Purge,
        Op::Clear,
        Op::Delete,
        Op::Publish,
        Op::Lock,
        Op::Unlock,
        Op::FillState,
        Op::Connect,
        Op::Health,
    ];

    fn label(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::GetChunks => "get_chunks",
            Op::PutChunks => "put_chunks",
            Op::Put => "put",
            Op::Purge => "purge",
            Op::Clear => "clear",
            Op::Delete => "delete",
            Op::Publish => "publish",
            Op::Lock => "lock",
            Op::Unlock => "unlock",
            Op::FillState => "fill_state",
            Op::Connect => "connect",
            Op::Health => "health",
        }
    }

    /// This op's duration histogram and error counter, resolved once: every hit read from
    /// Redis records one, and a label lookup costs a hash and a lock.
    fn metrics(self) -> &'static (Histogram, IntCounter) {
        static BY_OP: Lazy<Vec<(Histogram, IntCounter)>> = Lazy::new(|| {
            Op::ALL
                .iter()
                .map(|op| {
                    (
                        REDIS_METRICS.duration.with_label_values(&[op.label()]),
                        REDIS_METRICS.errors.with_label_values(&[op.label()]),
                    )
                })
                .collect()
        });
        &BY_OP[self as usize]
    }
}

/// Compare-and-delete: a lock is released only by the holder whose token it still carries.
const RELEASE_LOCK: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// An event from another instance (or this one) on the events channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A fill of this primary key ended (stored, or given up): waiters look again.
    Filled(HashBinary),
    /// Every variant of this primary key was removed.
    Purged(HashBinary),
    /// Everything was removed; keys now use this generation.
    Cleared(u64),
}

impl Event {
    fn encode(&self) -> String {
        match self {
            Event::Filled(p) => format!("f {}", hex(p)),
            Event::Purged(p) => format!("p {}", hex(p)),
            Event::Cleared(g) => format!("c {g:016x}"),
        }
    }

    fn decode(text: &str) -> Option<Event> {
        let (kind, arg) = text.split_once(' ')?;
        match kind {
            "f" => Some(Event::Filled(unhex(arg)?)),
            "p" => Some(Event::Purged(unhex(arg)?)),
            "c" => Some(Event::Cleared(u64::from_str_radix(arg, 16).ok()?)),
            _ => None,
        }
    }
}

fn hex(b: &HashBinary) -> String {
    let mut out = String::with_capacity(32);
    push_hex(&mut out, b);
    out
}

/// Appends `bytes` in lower-case hex. Keys are built on every lookup; `format!` of a `u128`
/// cost several times more.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

fn unhex(s: &str) -> Option<HashBinary> {
    (s.len() == 32)
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
        .map(u128::to_be_bytes)
}

/// Counters of the tier, for `/cache/stats`.
#[derive(Debug, Default)]
pub struct RedisCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub writes: AtomicU64,
    pub errors: AtomicU64,
}

/// An entry read from Redis, complete.
pub struct Found {
    pub meta: CacheMeta,
    pub body: Bytes,
}

pub struct RedisTier {
    config: RedisConfig,
    conn: RwLock<Option<Conn>>,
    /// Consecutive failed calls.
    failures: AtomicU32,
    /// While `Instant` (as ms since `started`) is before this, calls are skipped.
    open_until_ms: AtomicU64,
    started: Instant,
    up: AtomicBool,
    generation: AtomicU64,
    pub counters: RedisCounters,
    /// Distinguishes this instance's lock tokens from other instances'.
    instance: u64,
}

impl RedisTier {
    pub fn new(config: RedisConfig) -> Self {
        if config
            .nodes
            .iter()
            .any(|n| matches!(n.addr(), redis::ConnectionAddr::TcpTls { .. }))
        {
            // rediss:// runs on rustls, which needs a process-wide provider; ring, as
            // Pingora's rustls uses. Already installed is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        Lazy::force(&REDIS_METRICS);
        RedisTier {
            config,
            conn: RwLock::new(None),
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            started: Instant::now(),
            up: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            counters: RedisCounters::default(),
            instance: rand::random(),
        }
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Whether the last call (or health probe) reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Whether the breaker is keeping calls away from Redis right now.
    pub fn circuit_open(&self) -> bool {
        self.now_ms() < self.open_until_ms.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                info!("redis tier up: {:?}", self.config.addresses());
            } else {
                warn!(
                    "redis tier down: {:?}; serving from this process and the origin",
                    self.config.addresses()
                );
            }
        }
        REDIS_METRICS.up.set(up as i64);
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.open_until_ms.store(0, Ordering::Relaxed);
        self.set_up(true);
    }

    fn failed(&self, op: Op, why: &dyn std::fmt::Display) {
        debug!("redis {} failed: {why}", op.label());
        op.metrics().1.inc();
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= FAILURES_TO_OPEN {
            self.open_until_ms.store(
                self.now_ms() + OPEN_FOR.as_millis() as u64,
                Ordering::Relaxed,
            );
            self.set_up(false);
        }
    }

    /// Opens a connection. Called by the health task, never on the request path: a request
    /// finds either a connection or none (and skips Redis).
    async fn open(&self) -> redis::RedisResult<Conn> {
        let timeout = self.config.timeout.max(Duration::from_millis(500));
        let conn = if self.config.cluster {
            let client = redis::cluster::ClusterClient::builder(self.config.nodes.clone())
                .connection_timeout(timeout)
                .response_timeout(self.config.timeout)
                .retries(1)
                .build()?;
            Conn::Cluster(client.get_async_connection().await?)
        } else {
            let client = redis::Client::open(self.config.nodes[0].clone())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(self.config.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(200));
            Conn::Single(client.get_connection_manager_with_config(config).await?)
        };
        Ok(conn)
    }

    fn connection(&self) -> Option<Conn> {
        self.conn.read().clone()
    }

    /// Runs one command or pipeline under the timeout and the breaker; `None` on any failure.
    async fn call<T: FromRedisValue>(&self, op: Op, req: Req<'_>) -> Option<T> {
        if self.circuit_open() {
            return None;
        }
        let Some(mut conn) = self.connection() else {
            self.failed(op, &"not connected");
            return None;
        };
        let started = Instant::now();
        let run = async {
            match (&mut conn, req) {
                (Conn::Single(c), Req::Cmd(cmd)) => cmd.query_async(c).await,
                (Conn::Single(c), Req::Pipe(p)) => p.query_async(c).await,
                (Conn::Cluster(c), Req::Cmd(cmd)) => cmd.query_async(c).await,
                (Conn::Cluster(c), Req::Pipe(p)) => p.query_async(c).await,
            }
        };
        let result = tokio::time::timeout(self.config.timeout, run).await;
        op.metrics().0.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(v)) => {
                self.succeeded();
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(op, &e);
                None
            }
            Err(_) => {
                self.failed(op, &"timed out");
                None
            }
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// `<prefix><gen>:{<primary>}`, with room for `extra` more bytes.
    fn base(&self, primary: &HashBinary, extra: usize) -> String {
        let prefix = &self.config.key_prefix;
        let mut key = String::with_capacity(prefix.len() + 16 + 2 + 32 + 1 + extra);
        key.push_str(prefix);
        push_hex(&mut key, &self.generation().to_be_bytes());
        key.push_str(":{");
        push_hex(&mut key, primary);
        key.push('}');
        key
    }

    fn meta_key(&self, primary: &HashBinary, combined: &HashBinary) -> String {
        let mut key = self.base(primary, 3 + 32);
        key.push_str(":m:");
        push_hex(&mut key, combined);
        key
    }

    fn chunk_key(&self, primary: &HashBinary, combined: &HashBinary, g: u64, i: u32) -> String {
        format!("{}:b:{}:{g:016x}:{i}", self.base(primary, 0), hex(combined))
    }

    fn lock_key(&self, primary: &HashBinary) -> String {
        let mut key = self.base(primary, 2);
        key.push_str(":l");
        key
    }

    fn variants_key(&self, primary: &HashBinary) -> String {
        let mut key = self.base(primary, 2);
        key.push_str(":v");
        key
    }

    fn generation_key(&self) -> String {
        format!("{}gen", self.config.key_prefix)
    }

    fn channel(&self) -> String {
        format!("{}events", self.config.key_prefix)
    }

    /// Reads an entry. A value that does not decode, or whose body chunks are gone, is a
    /// miss and is deleted. `Err` when Redis could not be asked.
    pub async fn get(
        &self,
        primary: &HashBinary,
        combined: &HashBinary,
    ) -> Result<Option<Found>, Unavailable> {
        let meta_key = self.meta_key(primary, combined);
        let value: Option<Vec<u8>> = self
            .call(Op::Get, Req::Cmd(redis::cmd("GET").arg(&meta_key)))
            .await
            .ok_or(Unavailable)?;
        let found = match value.map(|v| entry::decode(v.into())) {
            None => None,
            Some(Err(e)) => {
                warn!("redis entry {meta_key} is unusable ({e}): deleted, treated as a miss");
                self.delete(&[meta_key]).await;
                None
            }
            Some(Ok(head)) if head.chunks == 0 => Some(Found {
                body: head.inline.clone(),
                meta: head.meta,
            }),
            Some(Ok(head)) => match self.read_chunks(primary, combined, &head).await {
                Some(body) => Some(Found {
                    meta: head.meta,
                    body,
                }),
                None => {
                    self.delete(&[meta_key]).await;
                    None
                }
            },
        };
        let counter = if found.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(found)
    }

    async fn read_chunks(
        &self,
        primary: &HashBinary,
        combined: &HashBinary,
        head: &EntryHead,
    ) -> Option<Bytes> {
        let keys: Vec<String> = (0..head.chunks)
            .map(|i| self.chunk_key(primary, combined, head.generation, i))
            .collect();
        let mut chunks: Vec<Option<Bytes>> = Vec::with_capacity(keys.len());
        for group in keys.chunks(CHUNKS_PER_CALL) {
            let values: Vec<Option<Vec<u8>>> = self
                .call(Op::GetChunks, Req::Cmd(redis::cmd("MGET").arg(group)))
                .await?;
            chunks.extend(values.into_iter().map(|v| v.map(Bytes::from)));
        }
        match entry::join_chunks(head, chunks) {
            Ok(body) => Some(body),
            Err(e) => {
                debug!("redis entry body unusable: {e}");
                None
            }
        }
    }

    /// Writes an entry: body chunks first, the meta last, so a reader sees the whole entry
    /// or none of it. Each key lives for `ttl`. Returns whether it was written.
    pub async fn put(
        &self,
        primary: &HashBinary,
        combined: &HashBinary,
        meta: &CacheMeta,
        body: &Bytes,
        ttl: Duration,
    ) -> bool {
        if body.len() > entry::MAX_BODY_BYTES {
            debug!(
                "redis: not storing a body of {} bytes (over the entry format's bound)",
                body.len()
            );
            return false;
        }
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let generation: u64 = rand::random();
        let chunks = entry::chunk_count(body.len());
        // Chunks go in their own calls (each bounded by the timeout), a few MiB at a time.
        let mut i = 0;
        while i < chunks {
            let mut pipe = redis::pipe();
            for j in i..(i + CHUNKS_PER_CALL as u32).min(chunks) {
                pipe.cmd("SET")
                    .arg(self.chunk_key(primary, combined, generation, j))
                    .arg(entry::chunk(body, j).as_ref())
                    .arg("PX")
                    .arg(ttl_ms)
                    .ignore();
            }
            if self
                .call::<()>(Op::PutChunks, Req::Pipe(&pipe))
                .await
                .is_none()
            {
                return false;
            }
            i += CHUNKS_PER_CALL as u32;
        }
        let value = entry::encode(meta, body, generation);
        let variants = self.variants_key(primary);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.meta_key(primary, combined))
            .arg(value.as_ref())
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("SADD")
            .arg(&variants)
            .arg(hex(combined))
            .ignore()
            .cmd("PEXPIRE")
            .arg(&variants)
            .arg(ttl_ms)
            .arg("NX")
            .ignore()
            .cmd("PEXPIRE")
            .arg(&variants)
            .arg(ttl_ms)
            .arg("GT")
            .ignore();
        let written = self.call::<()>(Op::Put, Req::Pipe(&pipe)).await.is_some();
        if written {
            self.counters.writes.fetch_add(1, Ordering::Relaxed);
        }
        written
    }

    /// Removes every variant of a URL. Returns whether anything was there (`None`: Redis
    /// could not be asked).
    pub async fn purge(&self, primary: &HashBinary) -> Option<bool> {
        let variants = self.variants_key(primary);
        let combined: Vec<String> = self
            .call(Op::Purge, Req::Cmd(redis::cmd("SMEMBERS").arg(&variants)))
            .await?;
        let mut keys: Vec<String> = combined
            .iter()
            .filter_map(|c| unhex(c))
            .map(|c| self.meta_key(primary, &c))
            .collect();
        keys.push(self.meta_key(primary, primary));
        keys.push(variants);
        let removed: u64 = self
            .call(Op::Purge, Req::Cmd(redis::cmd("DEL").arg(&keys)))
            .await?;
        self.publish(Event::Purged(*primary)).await;
        // The variants set counts too; only meta keys say whether an entry was there.
        Some(removed > u64::from(!combined.is_empty()))
    }

    /// Removes one entry of a URL (its body chunks expire with their TTL).
    pub async fn remove_entry(&self, primary: &HashBinary, combined: &HashBinary) {
        self.delete(&[self.meta_key(primary, combined)]).await;
    }

    /// Makes every entry unreachable by moving to a new key generation, and tells the
    /// other instances. Returns whether Redis took it.
    pub async fn clear(&self) -> bool {
        let generation: u64 = rand::random();
        let set = self
            .call::<()>(
                Op::Clear,
                Req::Cmd(redis::cmd("SET").arg(self.generation_key()).arg(generation)),
            )
            .await
            .is_some();
        if set {
            self.generation.store(generation, Ordering::Relaxed);
            self.publish(Event::Cleared(generation)).await;
        }
        set
    }

    async fn delete(&self, keys: &[String]) {
        let _: Option<u64> = self
            .call(Op::Delete, Req::Cmd(redis::cmd("DEL").arg(keys)))
            .await;
    }

    pub async fn publish(&self, event: Event) {
        let _: Option<u64> = self
            .call(
                Op::Publish,
                Req::Cmd(
                    redis::cmd("PUBLISH")
                        .arg(self.channel())
                        .arg(event.encode()),
                ),
            )
            .await;
    }

    /// Tries to take the fill lock of a URL for `hold`. `Some(token)` when taken; `None` when
    /// another instance holds it; `Err` when Redis cannot be asked (then nobody waits).
    pub async fn try_lock(
        &self,
        primary: &HashBinary,
        hold: Duration,
    ) -> Result<Option<u64>, Unavailable> {
        let token = self.instance ^ rand::random::<u64>();
        let taken: Option<Option<String>> = self
            .call(
                Op::Lock,
                Req::Cmd(
                    redis::cmd("SET")
                        .arg(self.lock_key(primary))
                        .arg(token)
                        .arg("NX")
                        .arg("PX")
                        .arg(hold.as_millis().max(1) as u64),
                ),
            )
            .await;
        match taken {
            None => Err(Unavailable),
            Some(Some(_)) => Ok(Some(token)),
            Some(None) => Ok(None),
        }
    }

    /// Releases a fill lock this instance holds and wakes the waiters.
    pub async fn unlock(&self, primary: &HashBinary, token: u64) {
        let _: Option<u64> = self
            .call(
                Op::Unlock,
                Req::Cmd(
                    redis::cmd("EVAL")
                        .arg(RELEASE_LOCK)
                        .arg(1)
                        .arg(self.lock_key(primary))
                        .arg(token),
                ),
            )
            .await;
        self.publish(Event::Filled(*primary)).await;
    }

    /// Whether `(entry stored, lock still held)` for a URL another instance is filling.
    pub async fn fill_state(
        &self,
        primary: &HashBinary,
        combined: &HashBinary,
    ) -> Option<(bool, bool)> {
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS")
            .arg(self.meta_key(primary, combined))
            .cmd("EXISTS")
            .arg(self.lock_key(primary));
        let (stored, locked): (bool, bool) = self.call(Op::FillState, Req::Pipe(&pipe)).await?;
        Some((stored, locked))
    }

    /// Connects, pings and keeps the key generation current; closes the breaker when Redis
    /// answers again. Returns `Some(new generation)` when the generation changed.
    pub async fn health_check(&self) -> Option<u64> {
        // A new connection is published only once the generation is known, so no request
        // uses keys of the wrong generation.
        let (mut conn, new) = match self.connection() {
            Some(conn) => (conn, false),
            None => match self.open().await {
                Ok(conn) => (conn, true),
                Err(e) => {
                    self.failed(Op::Connect, &e);
                    return None;
                }
            },
        };
        let key = self.generation_key();
        let read = async {
            let mut get = redis::cmd("GET");
            get.arg(&key);
            let current: Option<u64> = match &mut conn {
                Conn::Single(c) => get.query_async(c).await?,
                Conn::Cluster(c) => get.query_async(c).await?,
            };
            if let Some(g) = current {
                return Ok::<u64, redis::RedisError>(g);
            }
            // No generation yet (a new Redis, or the key was evicted): agree on one.
            let mut set = redis::cmd("SET");
            set.arg(&key)
                .arg(rand::random::<u64>())
                .arg("NX")
                .arg("GET");
            let _: Option<u64> = match &mut conn {
                Conn::Single(c) => set.query_async(c).await?,
                Conn::Cluster(c) => set.query_async(c).await?,
            };
            let current: Option<u64> = match &mut conn {
                Conn::Single(c) => get.query_async(c).await?,
                Conn::Cluster(c) => get.query_async(c).await?,
            };
            Ok(current.unwrap_or(0))
        };
        match tokio::time::timeout(self.config.timeout.max(Duration::from_millis(200)), read).await
        {
            Ok(Ok(g)) => {
                let old = self.generation.swap(g, Ordering::Relaxed);
                if new {
                    *self.conn.write() = Some(conn);
                }
                self.succeeded();
                (old != g).then_some(g)
            }
            Ok(Err(e)) => {
                self.failed(Op::Health, &e);
                None
            }
            Err(_) => {
                self.failed(Op::Health, &"timed out");
                None
            }
        }
    }

    /// Adopts a generation announced by another instance.
    pub fn set_generation(&self, g: u64) -> bool {
        self.generation.swap(g, Ordering::Relaxed) != g
    }

    /// Subscribes to the events channel and hands each event to `on_event` until the
    /// subscription breaks. `on_subscribed` runs once the subscription stands (the caller
    /// drops its in-process copies then: it may have missed events while it was away).
    pub async fn subscribe(
        &self,
        mut on_subscribed: impl FnMut(),
        mut on_event: impl FnMut(Event),
    ) -> redis::RedisResult<()> {
        // Pub/sub in a Cluster reaches every node's subscribers, so any one node will do.
        let mut last = None;
        for node in &self.config.nodes {
            let client = redis::Client::open(node.clone())?;
            let connect = client.get_async_pubsub();
            match tokio::time::timeout(Duration::from_secs(1), connect).await {
                Ok(Ok(mut pubsub)) => {
                    pubsub.subscribe(self.channel()).await?;
                    on_subscribed();
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(text) = msg.get_payload::<String>() else {
                            continue;
                        };
                        match Event::decode(&text) {
                            Some(event) => on_event(event),
                            None => debug!("ignoring unknown cache event {text:?}"),
                        }
                    }
                    return Ok(());
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "subscribe timed out",
                    )))
                }
            }
        }
        Err(last.unwrap_or_else(|| (redis::ErrorKind::Client, "no Redis node").into()))
    }

    /// How long Redis should keep an entry: until it can no longer be served or revalidated.
    pub fn ttl(meta: &CacheMeta, stale_retention: Duration) -> Option<Duration> {
        let stale = meta
            .stale_while_revalidate_sec()
            .max(meta.stale_if_error_sec());
        let until = meta.fresh_until() + Duration::from_secs(stale.into()) + stale_retention;
        until
            .duration_since(SystemTime::now())
            .ok()
            .filter(|d| !d.is_zero())
    }
}

/// Redis could not be asked (down, slow, circuit open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// A command or a pipeline.
enum Req<'a> {
    Cmd(&'a Cmd),
    Pipe(&'a Pipeline),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spell_hashes_in_lower_case_hex() {
        let b: HashBinary = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 0xff, 2, 3, 4, 5, 6, 7,
        ];
        assert_eq!(hex(&b), format!("{:032x}", u128::from_be_bytes(b)));
        let mut out = String::from("x");
        push_hex(&mut out, &0x0123_4567_89ab_cdefu64.to_be_bytes());
        assert_eq!(out, "x0123456789abcdef");
    }

    #[test]
    fn events_round_trip() {
        for e in [
            Event::Filled([1; 16]),
            Event::Purged([0xab; 16]),
            Event::Cleared(0x1234),
        ] {
            assert_eq!(Event::decode(&e.encode()), Some(e));
        }
        assert_eq!(Event::decode("x 1"), None);
        assert_eq!(Event::decode("p 12"), None);
        assert_eq!(Event::decode("garbage"), None);
    }
}
