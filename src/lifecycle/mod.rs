//! The process's life beyond serving requests: handing the cache to the next process on an
//! upgrade ([`handover`]).
//!
//! Pingora owns the socket hand-over of an upgrade (`-u`, `SIGQUIT`); this module adds what
//! a cache needs on top of it and knows nothing of the request path.

pub mod handover;
pub mod reload;
