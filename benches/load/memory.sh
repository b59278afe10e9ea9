#!/usr/bin/env bash
# Memory run: 1,000,000 distinct 1 KiB responses through caching-proxy with a 256 MiB cache,
# then its peak RSS and the memory each cached entry costs beyond its body. Two workloads,
# each on a fresh proxy: distinct URLs, and a Vary-heavy one (the origin's /1k-vary route
# varies on X-Variant; each URL is asked for VARIANTS times with another X-Variant, so every
# response is a variant stored apart, in its shard's variant index).
#
#   bash benches/load/memory.sh                  # about 3-4 minutes
#   REQUESTS=200000 bash benches/load/memory.sh  # shorter
#   WORKLOADS=plain bash benches/load/memory.sh  # one workload (plain or vary)
#
# caching-proxy runs with --threads 1 --cache-max-bytes 256MiB --cache-size 2000000, pinned
# to CPU 0; wrk (64 connections, benches/load/unique.lua) and the origin on CPU 1. wrk stops
# after REQUESTS answers (or after TIME_LIMIT seconds). Reports:
#
#   - peak RSS (VmHWM) against the target: cache size + 32 MiB;
#   - overhead per entry = (RSS - baseline RSS - entries x 1 KiB) / entries, where the
#     baseline is the RSS of the ready proxy before the run and entries come from the admin
#     API (GET /cache/stats).
#
# Writes benches/results/memory.md (RESULTS=FILE to write elsewhere).
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=${REQUESTS:-1000000}
CACHE_MIB=${CACHE_MIB:-256}
CONNECTIONS=${CONNECTIONS:-64}
TIME_LIMIT=${TIME_LIMIT:-240}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
VARIANTS=${VARIANTS:-4}
WORKLOADS=${WORKLOADS:-plain vary}
RESULTS=${RESULTS:-$ROOT/benches/results/memory.md}
BODY=1024

mib() { awk "BEGIN { printf \"%.1f\", $1 / 1048576 }"; }

cache_stats() { curl -s --max-time 5 "http://127.0.0.1:$PROXY_ADMIN_PORT/cache/stats"; }

# One workload on a fresh proxy: measure NAME (plain or vary). Appends its section to
# REPORT and stops the proxy.
measure() {
    local name=$1 path=/1k/mem variants=1 busy
    if [[ $name == vary ]]; then path=/1k-vary/mem variants=$VARIANTS; fi
    start_proxy "memory-$name" --cache-max-bytes "${CACHE_MIB}MiB" --cache-size 2000000
    local baseline
    busy=$(cpu_busy)
    baseline=$(($(rss_kib "$PROXY_PID") * 1024))
    log "$name: caching-proxy :$PROXY_PORT ready, baseline RSS $(mib "$baseline") MiB; sending $REQUESTS requests"

    local before
    before=$(origin_count)
    WRK_PREFIX="$path-$(date +%s)-"
    export WRK_PREFIX WRK_LIMIT=$REQUESTS WRK_VARIANTS=$variants
    taskset -c "$CPU_CLIENT" wrk -t1 -c "$CONNECTIONS" -d "${TIME_LIMIT}s" --timeout 5s \
        -s "$LOAD_DIR/unique.lua" "http://127.0.0.1:$PROXY_PORT/" >"$WORK/wrk-$name.txt" 2>&1 &
    local wrk_pid=$! start=$SECONDS next=0 fetched=0 samples=""
    PIDS+=("$wrk_pid")
    # wrk's thread stops itself after REQUESTS answers, but wrk waits out -d unless
    # interrupted: watch the origin's count and send SIGINT (wrk then reports and exits).
    while kill -0 "$wrk_pid" 2>/dev/null; do
        fetched=$(($(origin_count) - before))
        if ((SECONDS - start >= next)); then
            local stats
            stats=$(cache_stats)
            samples+="| $((SECONDS - start)) | $fetched | $(jq -r .entries <<<"$stats") | $(mib "$(jq -r .bytes <<<"$stats")") | $(mib $(($(rss_kib "$PROXY_PID") * 1024))) |"$'\n'
            next=$((next + SAMPLE_EVERY))
        fi
        if ((fetched >= REQUESTS)); then
            kill -INT "$wrk_pid" 2>/dev/null || true
            break
        fi
        sleep 0.5
    done
    wait "$wrk_pid" || die "wrk failed: $(cat "$WORK/wrk-$name.txt")"
    local elapsed=$((SECONDS - start))

    local stats entries bytes evictions rss hwm body overhead accounted rps
    stats=$(cache_stats)
    entries=$(jq -r .entries <<<"$stats")
    bytes=$(jq -r .bytes <<<"$stats")
    evictions=$(jq -r .evictions <<<"$stats")
    rss=$(($(rss_kib "$PROXY_PID") * 1024))
    hwm=$(($(rss_kib "$PROXY_PID" VmHWM) * 1024))
    fetched=$(($(origin_count) - before))
    rps=$(awk '$1 == "Requests/sec:" { printf "%.0f", $2 }' "$WORK/wrk-$name.txt")
    samples+="| $elapsed (end) | $fetched | $entries | $(mib "$bytes") | $(mib "$rss") |"$'\n'
    body=$((entries * BODY))
    overhead=$(awk "BEGIN { printf \"%.0f\", ($rss - $baseline - $body) / $entries }")
    accounted=$(awk "BEGIN { printf \"%.0f\", $bytes / $entries - $BODY }")
    local limit=$(((CACHE_MIB + 32) * 1048576)) verdict="met" size_verdict="met"
    ((hwm <= limit)) || verdict="**NOT met**"
    ((overhead <= 600)) || size_verdict="**NOT met**"
    local title="Distinct URLs"
    [[ $name == vary ]] && title="Vary-heavy: $VARIANTS variants per URL (Vary: X-Variant)"

    REPORT+="## $title"$'\n\n'
    REPORT+="- other work: CPUs $busy% busy in the second before the run"$'\n'
    REPORT+="- load: $fetched origin fetches (each a new stored response) for $((fetched / variants)) URLs, wrk $CONNECTIONS connections, $elapsed s, $rps req/s"$'\n\n'
    REPORT+="| seconds | origin fetches | entries | cache bytes (MiB, as accounted) | RSS MiB |"$'\n'
    REPORT+="|--:|--:|--:|--:|--:|"$'\n'
    REPORT+="$samples"$'\n'
    REPORT+="| measure | value |"$'\n'
    REPORT+="|---|--:|"$'\n'
    REPORT+="| baseline RSS (ready, empty cache) | $(mib "$baseline") MiB |"$'\n'
    REPORT+="| RSS at the end | $(mib "$rss") MiB |"$'\n'
    REPORT+="| peak RSS (VmHWM) | $(mib "$hwm") MiB |"$'\n'
    REPORT+="| entries / evictions | $entries / $evictions |"$'\n'
    REPORT+="| cache bytes as accounted (admin \`bytes\`) | $(mib "$bytes") MiB |"$'\n'
    REPORT+="| stored body bytes (entries x 1 KiB) | $(mib "$body") MiB |"$'\n'
    REPORT+="| overhead per entry: (RSS - baseline - bodies) / entries | $overhead bytes |"$'\n'
    REPORT+="| overhead per entry as accounted: bytes / entries - 1 KiB | $accounted bytes |"$'\n\n'
    REPORT+="Targets: peak RSS ≤ cache size + 32 MiB = $((CACHE_MIB + 32)) MiB: $verdict (peak $(mib "$hwm") MiB); overhead per entry by RSS ≤ 600 bytes: $size_verdict ($overhead bytes); the byte bound holds against RSS when the accounted overhead is at least the measured one: $( ((accounted >= overhead)) && echo yes || echo '**no**') ($accounted vs $overhead bytes)."$'\n\n'
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
}

main() {
    local t0=$SECONDS w
    ensure_packages
    build
    start_origin
    REPORT=""
    for w in $WORKLOADS; do
        [[ $w == plain || $w == vary ]] || die "WORKLOADS: plain or vary, not $w"
        measure "$w"
    done
    mkdir -p "$(dirname "$RESULTS")"
    {
        echo "# caching-proxy memory run: results"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "- machine: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) CPUs, kernel $(uname -r)"
        echo "- caching-proxy $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') (working tree), --threads 1 --cache-max-bytes ${CACHE_MIB}MiB --cache-size 2000000, a fresh process per workload"
        echo
        printf '%s' "$REPORT"
    } | tee "$RESULTS"
    log "done in $((SECONDS - t0)) s; written to $RESULTS"
}

main "$@"
