//! A POST response that names its own URL in `Content-Location` and carries explicit
//! freshness is a representation of that URL (RFC 9110 §9.3.3): it is stored for later GETs
//! of it (RFC 9111 §4).
//!
//! POSTs do not go through Pingora's cache phases: enabling them there would look up the
//! cache and take its (and the Redis tier's) fill lock for every POST, and serialise POSTs
//! to one URL. Instead the response is recognised in `response_filter` (after the
//! invalidation every successful POST causes), its body collected as it streams to the
//! client (up to `cache.max_object_size`), and written to the storage backend once the
//! response is complete, in `logging`. A response with `Vary` is not stored this way.

use bytes::{Bytes, BytesMut};
use log::warn;
use pingora_cache::trace::Span;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_http::{RequestHeader, ResponseHeader};

use crate::cache::{vary, Cache};

/// A POST response being collected for the cache.
pub struct PendingStore {
    key: CacheKey,
    meta: CacheMeta,
    body: BytesMut,
    max_bytes: usize,
    complete: bool,
}

impl PendingStore {
    /// Starts collecting `resp` when it may be stored for GETs of `key`.
    pub fn start(
        cache: &Cache,
        key: CacheKey,
        req: &RequestHeader,
        resp: &ResponseHeader,
    ) -> Option<Self> {
        if vary::variance(resp, req).is_some() {
            return None;
        }
        let meta = cache.policy.post_response_cacheable(req, resp)?;
        Some(PendingStore {
            key,
            meta,
            body: BytesMut::new(),
            max_bytes: cache.max_object_bytes,
            complete: false,
        })
    }

    /// Adds a body chunk; `false` when the body grew past the object size bound and the
    /// response is given up.
    pub fn push(&mut self, chunk: Option<&Bytes>, end: bool) -> bool {
        if let Some(chunk) = chunk {
            if self.body.len() + chunk.len() > self.max_bytes {
                return false;
            }
            self.body.extend_from_slice(chunk);
        }
        self.complete |= end;
        true
    }

    /// Writes the entry, if the whole body arrived.
    pub async fn commit(self, cache: &Cache) {
        if !self.complete {
            return;
        }
        let storage = cache.backend.as_storage();
        let span = Span::inactive().handle();
        let result = async {
            let mut handler = storage
                .get_miss_handler(&self.key, &self.meta, &span)
                .await?;
            handler.write_body(self.body.freeze(), true).await?;
            handler.finish().await
        }
        .await;
        if let Err(e) = result {
            warn!("storing a POST response failed: {e}");
        }
    }
}
