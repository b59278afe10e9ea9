#!/usr/bin/env bash
# Fuzzes each target for FUZZ_SECONDS (600) one after the other, then minimises its corpus
# (cargo fuzz cmin), so that fuzz/corpus/ stays small enough to commit and to replay in
# `cargo test --test fuzz_corpus`.
#
#   bash fuzz/run.sh                         # every target, 10 minutes each
#   FUZZ_SECONDS=60 bash fuzz/run.sh vary    # one target, one minute
#
# Needs the nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`). Runs at `nice -n NICE` (10): the sanitizer build and the
# fuzzers take whole cores. A crash stops the script with the input under
# fuzz/artifacts/<target>/; once fixed, copy that input to fuzz/regressions/<target>/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-600}
NICE=${NICE:-10}
ALL=(response_directives request_directives vary cache_key config_units redis_entry handover_stream)
TARGETS=("${@:-${ALL[@]}}")

nice -n "$NICE" cargo +nightly fuzz build
for target in "${TARGETS[@]}"; do
    echo "== $target: ${FUZZ_SECONDS}s" >&2
    mkdir -p "fuzz/corpus/$target"
    # -rss_limit_mb also bounds a single allocation: an input that makes the code allocate
    # at will is a crash.
    nice -n "$NICE" cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=1
    nice -n "$NICE" cargo +nightly fuzz cmin "$target" "fuzz/corpus/$target"
done
