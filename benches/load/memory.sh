#!/usr/bin/env bash
# Memory runs of caching-proxy (PART=urls, PART=vary, PART=inflight, or all three by default),
# each on a fresh proxy:
#
# urls: 1,000,000 distinct 1 KiB URLs through caching-proxy with a 256 MiB cache, then its
# peak RSS and the memory each cached entry costs beyond its body.
#
# vary: the same with a Vary-heavy workload: the origin's /1k-vary route varies on
# X-Variant, and each URL is asked for VARIANTS (4) times with another X-Variant, so that
# responses are stored as variants, in their shard's variant index.
#
#   bash benches/load/memory.sh                  # about 2-4 minutes, then the in-flight run
#   REQUESTS=200000 bash benches/load/memory.sh  # shorter
#
# caching-proxy runs with --threads 1 --cache-max-bytes 256MiB --cache-size 2000000, pinned
# to CPU 0; wrk (64 connections, benches/load/unique.lua) and the origin on CPU 1. wrk stops
# after REQUESTS answers (or after TIME_LIMIT seconds). Reports:
#
#   - peak RSS (VmHWM) against the target: cache size + 32 MiB;
#   - overhead per entry = (RSS - baseline RSS - entries x 1 KiB) / entries, where the
#     baseline is the RSS of the ready proxy before the run and entries come from the admin
#     API (GET /cache/stats), against the target of 600 bytes, and beside the overhead as
#     accounted against the byte bound (which must be at least the measured one).
#
# inflight: INFLIGHT_CLIENTS (100) concurrent clients each ask for a distinct 8 MiB object,
# reading it at INFLIGHT_RATE (2M bytes/s: slow readers), through a proxy with
# --cache-max-bytes INFLIGHT_CACHE_MIB (64) MiB, filled first with 8 MiB objects. Bodies being stored reserve their bytes within
# the cache's bound (cache.max_inflight_size, a quarter of it by default); the rest are served
# without being stored. Reports peak RSS against cache size + 32 MiB + clients x
# PER_CONNECTION_KIB (768: the per-connection allowance, Pingora's buffers of a response
# streaming to a client; the run first measures it with the same clients through a proxy that
# stores nothing), every client's status and size, and
# caching_proxy_cache_store_aborted_total{reason="memory"}.
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
RESULTS=${RESULTS:-$ROOT/benches/results/memory.md}
BODY=1024
PART=${PART:-all}
INFLIGHT_CLIENTS=${INFLIGHT_CLIENTS:-100}
INFLIGHT_RATE=${INFLIGHT_RATE:-2M}
INFLIGHT_CACHE_MIB=${INFLIGHT_CACHE_MIB:-64}
PER_CONNECTION_KIB=${PER_CONNECTION_KIB:-768}
BIG=$((8 << 20))

mib() { awk "BEGIN { printf \"%.1f\", $1 / 1048576 }"; }

cache_stats() { curl -s --max-time 5 "http://127.0.0.1:$PROXY_ADMIN_PORT/cache/stats"; }

# url_run NAME: the distinct-URL workload (urls) or the Vary-heavy one (vary).
url_run() {
    local name=$1 path=/1k/mem variants=1 t0=$SECONDS busy
    if [[ $name == vary ]]; then path=/1k-vary/mem variants=$VARIANTS; fi
    start_proxy "memory-$name" --cache-max-bytes "${CACHE_MIB}MiB" --cache-size 2000000
    local baseline before
    busy=$(cpu_busy)
    baseline=$(($(rss_kib "$PROXY_PID") * 1024))
    before=$(origin_count)
    log "$name: caching-proxy :$PROXY_PORT ready, baseline RSS $(mib "$baseline") MiB; sending $REQUESTS requests"

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
    # Bodies from 16 KiB live in the body file, outside VmRSS (none at 1 KiB).
    hwm=$((($(rss_kib "$PROXY_PID" VmHWM) + $(body_file_kib "$PROXY_PID")) * 1024))
    fetched=$(($(origin_count) - before))
    rps=$(awk '$1 == "Requests/sec:" { printf "%.0f", $2 }' "$WORK/wrk-$name.txt")
    samples+="| $elapsed (end) | $fetched | $entries | $(mib "$bytes") | $(mib "$rss") |"$'\n'
    body=$((entries * BODY))
    overhead=$(awk "BEGIN { printf \"%.0f\", ($rss - $baseline - $body) / $entries }")
    accounted=$(awk "BEGIN { printf \"%.0f\", $bytes / $entries - $BODY }")
    local limit=$(((CACHE_MIB + 32) * 1048576)) verdict="met" size_verdict="met" bound="yes"
    ((hwm <= limit)) || verdict="**NOT met**"
    ((overhead <= 600)) || size_verdict="**NOT met**"
    ((accounted >= overhead)) || bound="**no**"
    local title="Distinct 1 KiB URLs"
    [[ $name == vary ]] && title="Vary-heavy: $VARIANTS variants per URL (Vary: X-Variant)"

    {
        echo
        echo "## $title"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); other work: CPUs $busy% busy in the second before the run"
        echo "- caching-proxy --threads 1 --cache-max-bytes ${CACHE_MIB}MiB --cache-size 2000000"
        echo "- load: $fetched origin fetches (each a new stored response) for $((fetched / variants)) URLs, wrk $CONNECTIONS connections, $elapsed s, $rps req/s"
        echo
        echo "| seconds | origin fetches | entries | cache bytes (MiB, as accounted) | RSS MiB |"
        echo "|--:|--:|--:|--:|--:|"
        printf '%s' "$samples"
        echo
        echo "| measure | value |"
        echo "|---|--:|"
        echo "| baseline RSS (ready, empty cache) | $(mib "$baseline") MiB |"
        echo "| RSS at the end | $(mib "$rss") MiB |"
        echo "| peak RSS (VmHWM) with the body file's peak | $(mib "$hwm") MiB |"
        echo "| entries / evictions | $entries / $evictions |"
        echo "| cache bytes as accounted (admin \`bytes\`) | $(mib "$bytes") MiB |"
        echo "| stored body bytes (entries x 1 KiB) | $(mib "$body") MiB |"
        echo "| overhead per entry: (RSS - baseline - bodies) / entries | $overhead bytes |"
        echo "| overhead per entry as accounted: bytes / entries - 1 KiB | $accounted bytes |"
        echo
        echo "Targets: peak RSS ≤ cache size + 32 MiB = $((CACHE_MIB + 32)) MiB: $verdict (peak $(mib "$hwm") MiB); overhead per entry by RSS ≤ 600 bytes: $size_verdict ($overhead bytes); the byte bound holds against RSS (accounted overhead at least the measured one): $bound ($accounted vs $overhead bytes)."
    } >>"$RESULTS"
    log "$name run done in $((SECONDS - t0)) s"
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
}

metric() {
    curl -s --max-time 5 "http://127.0.0.1:$PROXY_ADMIN_PORT/metrics" |
        awk -v s="$1" '$1 == s { print $2 }'
}

# Starts INFLIGHT_CLIENTS slow readers of distinct 8 MiB objects; their PIDs in CLIENTS.
start_slow_readers() {
    local tag=$1 i
    CLIENTS=()
    for ((i = 0; i < INFLIGHT_CLIENTS; i++)); do
        taskset -c "$CPU_CLIENT" curl -s -o /dev/null --max-time 600 --limit-rate "$INFLIGHT_RATE" \
            -w '%{http_code} %{size_download}\n' \
            "http://127.0.0.1:$PROXY_PORT/8m/$tag-$i" >"$WORK/$tag-$i.txt" 2>&1 &
        CLIENTS+=($!)
        PIDS+=($!)
    done
}

# The same slow readers through a proxy that stores nothing (their bodies are over its
# object size): what streaming to them costs per connection without any cache. Sets
# STREAMING_KIB.
streaming_only_run() {
    start_proxy streaming-only --cache-max-bytes "${INFLIGHT_CACHE_MIB}MiB" --cache-max-object-size 1KiB
    local base hwm
    base=$(($(rss_kib "$PROXY_PID") * 1024))
    start_slow_readers "streaming-$(date +%s)"
    wait "${CLIENTS[@]}" 2>/dev/null || true
    hwm=$(($(rss_kib "$PROXY_PID" VmHWM) * 1024))
    STREAMING_KIB=$(((hwm - base) / INFLIGHT_CLIENTS / 1024))
    log "streaming alone: peak $(mib "$hwm") MiB from $(mib "$base") MiB, $STREAMING_KIB KiB per connection"
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
}

inflight_run() {
    streaming_only_run
    local t0=$SECONDS busy baseline i peak=0 rss samples=""
    start_proxy inflight --cache-max-bytes "${INFLIGHT_CACHE_MIB}MiB"
    busy=$(cpu_busy)
    baseline=$(($(rss_kib "$PROXY_PID") * 1024))
    local stamp filled
    stamp=$(date +%s)
    # Fill the cache first: the bodies in flight must then make room within the bound.
    for ((i = 0; i < INFLIGHT_CACHE_MIB / 8; i++)); do
        curl -s -o /dev/null --max-time 60 "http://127.0.0.1:$PROXY_PORT/8m/fill-$stamp-$i"
    done
    filled=$(jq -r .bytes <<<"$(cache_stats)")
    log "in-flight run: cache filled with $(mib "$filled") MiB; $INFLIGHT_CLIENTS clients, distinct 8 MiB objects at $INFLIGHT_RATE/s each, ${INFLIGHT_CACHE_MIB} MiB cache"
    start_slow_readers "inflight-$stamp"
    local start=$SECONDS next=0 running file file_peak=0
    while :; do
        running=0
        for i in "${CLIENTS[@]}"; do kill -0 "$i" 2>/dev/null && running=$((running + 1)); done
        # The stored 8 MiB bodies live in the body file, outside VmRSS: counted with it.
        file=$(($(body_file_kib "$PROXY_PID") * 1024))
        ((file > file_peak)) && file_peak=$file
        rss=$(($(rss_kib "$PROXY_PID") * 1024 + file))
        if ((SECONDS - start >= next)); then
            samples+="| $((SECONDS - start)) | $running | $(mib "$rss") | $(metric 'caching_proxy_cache_store_aborted_total{reason="memory"}') |"$'\n'
            next=$((next + 2))
        fi
        ((running > 0)) || break
        sleep 0.5
    done
    wait "${CLIENTS[@]}" 2>/dev/null || true
    local elapsed=$((SECONDS - start)) hwm ok=0 stats aborted entries bytes
    # An upper bound: the heap's peak and the body file's, whenever each was.
    hwm=$(($(rss_kib "$PROXY_PID" VmHWM) * 1024 + file_peak))
    for ((i = 0; i < INFLIGHT_CLIENTS; i++)); do
        [[ $(cat "$WORK/inflight-$stamp-$i.txt") == "200 $BIG" ]] && ok=$((ok + 1))
    done
    aborted=$(metric 'caching_proxy_cache_store_aborted_total{reason="memory"}')
    stats=$(cache_stats)
    entries=$(jq -r .entries <<<"$stats")
    bytes=$(jq -r .bytes <<<"$stats")
    local allowance=$((INFLIGHT_CLIENTS * PER_CONNECTION_KIB * 1024))
    local limit=$((INFLIGHT_CACHE_MIB * 1048576 + 32 * 1048576 + allowance)) verdict="met"
    ((hwm <= limit)) || verdict="**NOT met**"
    ((ok == INFLIGHT_CLIENTS)) || verdict="**NOT met** ($((INFLIGHT_CLIENTS - ok)) clients did not get the whole body)"
    {
        echo
        echo "## Bodies in flight: $INFLIGHT_CLIENTS slow readers of distinct 8 MiB objects"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); other work: CPUs $busy% busy in the second before the run"
        echo "- caching-proxy --threads 1 --cache-max-bytes ${INFLIGHT_CACHE_MIB}MiB (cache.max_inflight_size: a quarter of it), clients reading at $INFLIGHT_RATE bytes/s each, $elapsed s"
        echo
        echo "| seconds | clients still reading | RSS MiB | stores given up (memory) |"
        echo "|--:|--:|--:|--:|"
        printf '%s' "$samples"
        echo
        echo "| measure | value |"
        echo "|---|--:|"
        echo "| baseline RSS (ready, empty cache) | $(mib "$baseline") MiB |"
        echo "| cache bytes before the clients (filled first) | $(mib "$filled") MiB |"
        echo "| peak RSS (VmHWM) with the body file's peak | $(mib "$hwm") MiB |"
        echo "| streaming alone (the same clients through a proxy storing nothing): peak over baseline per connection | $STREAMING_KIB KiB |"
        echo "| clients that got all 8 MiB (200) | $ok of $INFLIGHT_CLIENTS |"
        echo "| stores given up for memory | $aborted |"
        echo "| entries stored / cache bytes as accounted | $entries / $(mib "$bytes") MiB |"
        echo
        echo "Target: peak RSS ≤ cache size + 32 MiB + $INFLIGHT_CLIENTS x ${PER_CONNECTION_KIB} KiB = $(mib "$limit") MiB: $verdict (peak $(mib "$hwm") MiB)."
    } >>"$RESULTS"
    log "in-flight run done in $((SECONDS - t0)) s"
}

main() {
    ensure_packages
    build
    start_origin
    mkdir -p "$(dirname "$RESULTS")"
    {
        echo "# caching-proxy memory run: results"
        echo
        echo "- machine: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) CPUs, kernel $(uname -r)"
        echo "- caching-proxy $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') (working tree)"
    } >"$RESULTS"
    case $PART in
    urls | vary) url_run "$PART" ;;
    inflight) inflight_run ;;
    all) url_run urls && url_run vary && inflight_run ;;
    *) die "PART must be urls, vary, inflight or all" ;;
    esac
    cat "$RESULTS"
    log "written to $RESULTS"
}

main "$@"
