//! Unit tests of vendored Pingora code that stand alone, run here because the vendored
//! crates' own tests are not part of this package's suite.

#[path = "../vendor/pingora-core/src/protocols/l4/write_buffer.rs"]
#[allow(dead_code)]
mod write_buffer;
