//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and the crash regressions
//! (`fuzz/regressions/<target>/`) through the fuzz targets' own entry points, on stable
//! Rust: what the fuzzers once found stays fixed without nightly or `cargo fuzz`.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod entry;

use std::path::Path;

/// A target's entry point.
type Entry = fn(&[u8]);

const TARGETS: &[(&str, Entry)] = &[
    ("response_directives", entry::response_directives),
    ("request_directives", entry::request_directives),
    ("vary", entry::vary),
    ("cache_key", entry::cache_key),
    ("config_units", entry::config_units),
    ("redis_entry", entry::redis_entry),
    ("handover_stream", entry::handover_stream),
];

/// Runs every file of `dir/<target>/` through its target; returns how many ran.
fn replay(dir: &str, target: &str, run: Entry) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let Ok(files) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut n = 0;
    for file in files {
        let path = file.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} fails again", path.display());
        n += 1;
    }
    n
}

#[test]
fn the_corpus_of_every_target_replays_cleanly() {
    for (target, run) in TARGETS {
        let n = replay("corpus", target, *run);
        assert!(n > 0, "fuzz/corpus/{target} is empty or missing");
    }
}

#[test]
fn crash_regressions_stay_fixed() {
    for (target, run) in TARGETS {
        replay("regressions", target, *run);
    }
}
