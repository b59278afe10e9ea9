//! Waiting for an event with a deadline, instead of sleeping a fixed time: the CI machine is
//! a loaded 2-core box, so every bound is generous and the wait ends as soon as it can.

use std::thread;
use std::time::{Duration, Instant};

/// Polls `done` every 10 ms for up to `limit`; the time it took, or `None`.
pub fn poll(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if done() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Like [`poll`], but a timeout fails the test.
pub fn wait_until(limit: Duration, what: &str, done: impl FnMut() -> bool) -> Duration {
    poll(limit, done).unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}
