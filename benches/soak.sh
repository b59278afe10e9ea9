#!/usr/bin/env bash
# Soak run: steady mixed traffic through caching-proxy for DURATION seconds (600) while the
# origin misbehaves at random, then a report (benches/results/soak.md).
#
#   bash benches/soak.sh                # 10 minutes
#   DURATION=60 bash benches/soak.sh    # a one-minute check of the script
#   cargo make soak
#
# The origin (benches/soak/origin.py) resets connections, stalls past the proxy's read
# timeout, answers garbage, truncates bodies and has bursts of 503s, at random; this script
# also kills it every RESTART_EVERY seconds (60; a third of runs under 3 minutes) and starts
# it again DOWN_SECONDS (2) later.
# The client (benches/soak/load.py) sends RATE requests a second (100): hits, misses,
# uncacheable responses, large bodies, slow readers, POSTs and PURGEs, and checks every body.
# The report (benches/soak/report.py) counts requests and errors by kind, holds every error
# against the origin's log (an error no origin fault explains must not happen), and shows
# RSS at start, peak and end (flat after warm-up), open file descriptors at the end (back to
# the start) and that the proxy never restarted. Exits 1 when a check fails.
#
# Settings (environment): DURATION, RATE, RESTART_EVERY, DOWN_SECONDS, FAULT_RATE (0.05 of
# origin requests), STALL (4 s; the proxy's read timeout is 2 s), WORKERS (16 client threads),
# RESULTS, KEEP_WORK (a folder to keep the request records and logs in). Needs python3, curl
# and jq; builds the release binary (cargo build --release).
set -euo pipefail

# shellcheck source=load/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/load/lib.sh"

DURATION=${DURATION:-600}
RATE=${RATE:-100}
# Every minute; a third of a shorter run, so that a short check sees restarts too.
RESTART_EVERY=${RESTART_EVERY:-$((DURATION >= 180 ? 60 : DURATION / 3))}
DOWN_SECONDS=${DOWN_SECONDS:-2}
STALL=${STALL:-4}
SAMPLE_EVERY=${SAMPLE_EVERY:-5}
RESULTS=${RESULTS:-$ROOT/benches/results/soak.md}
export FAULT_RATE=${FAULT_RATE:-0.05} STALL
SOAK_DIR="$ROOT/benches/soak"

start_soak_origin() {
    spawn "$CPU_CLIENT" "$WORK/origin-$1.log" python3 "$SOAK_DIR/origin.py" "$ORIGIN_PORT" "$WORK/origin.jsonl"
    ORIGIN_PID=$LAST_PID
    local i
    for ((i = 0; i < 100; i++)); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$ORIGIN_PORT/nostore/ready" && return 0
        sleep 0.05
    done
    die "the soak origin did not start"
}

metric() {
    curl -s --max-time 5 "http://127.0.0.1:$PROXY_ADMIN_PORT/metrics" |
        awk -v s="$1" '$1 == s { print $2 }'
}

cache_bytes() { curl -s --max-time 5 "http://127.0.0.1:$PROXY_ADMIN_PORT/cache/stats" | jq -r '.bytes // 0'; }

fds_of() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

main() {
    local missing=()
    for c in python3 curl jq; do command -v "$c" >/dev/null || missing+=("$c"); done
    ((${#missing[@]} == 0)) || die "missing ${missing[*]} (apt-get install ${missing[*]})"
    log "building caching-proxy (release)"
    (cd "$ROOT" && cargo build --release --locked -q)
    ORIGIN_PORT=$(free_ports 1)
    start_soak_origin 0
    start_proxy soak --timeout 2s --connect-timeout 1s --enable-purge \
        --cache-max-bytes 64MiB --cache-max-object-size 4MiB
    local busy rss_start fds_start
    busy=$(cpu_busy)
    rss_start=$(rss_kib "$PROXY_PID")
    fds_start=$(fds_of "$PROXY_PID")
    log "soak: ${DURATION}s at $RATE req/s; proxy :$PROXY_PORT (pid $PROXY_PID), origin :$ORIGIN_PORT"

    taskset -c "$CPU_CLIENT" python3 "$SOAK_DIR/load.py" "$PROXY_PORT" "$DURATION" "$RATE" \
        "$WORK/load.jsonl" >"$WORK/load.log" 2>&1 &
    local load_pid=$! start=$SECONDS next_sample=0 next_restart=$RESTART_EVERY restarts=0 t
    PIDS+=("$load_pid")
    : >"$WORK/down.txt"
    : >"$WORK/samples.txt"
    while kill -0 "$load_pid" 2>/dev/null; do
        t=$((SECONDS - start))
        if ((t >= next_restart && t < DURATION - DOWN_SECONDS)); then
            local down_at
            down_at=$(date +%s.%N)
            kill -KILL "$ORIGIN_PID" 2>/dev/null || true
            wait "$ORIGIN_PID" 2>/dev/null || true
            sleep "$DOWN_SECONDS"
            restarts=$((restarts + 1))
            start_soak_origin "$restarts"
            echo "$down_at $(date +%s.%N)" >>"$WORK/down.txt"
            next_restart=$((next_restart + RESTART_EVERY))
        fi
        if ((t >= next_sample)); then
            local pid_now
            pid_now=$(curl -s --max-time 5 "http://127.0.0.1:$PROXY_ADMIN_PORT/health/live" | jq -r .pid 2>/dev/null || echo "none")
            echo "$t $(rss_kib "$PROXY_PID") $(fds_of "$PROXY_PID") $pid_now $(cache_bytes)" >>"$WORK/samples.txt"
            next_sample=$((next_sample + SAMPLE_EVERY))
        fi
        sleep 0.5
    done
    wait "$load_pid" || die "the load client failed: $(tail -5 "$WORK/load.log")"
    local rss_end rss_peak alive=false fds_settled i
    rss_end=$(rss_kib "$PROXY_PID")
    rss_peak=$(rss_kib "$PROXY_PID" VmHWM)
    kill -0 "$PROXY_PID" 2>/dev/null && alive=true
    # Idle connections close after their timeouts (60 s for kept-alive upstream connections).
    for ((i = 0; i < 90; i++)); do
        fds_settled=$(fds_of "$PROXY_PID")
        ((fds_settled <= fds_start)) && break
        sleep 1
    done
    cat >"$WORK/meta.json" <<EOF
{"date": "$(date -u '+%Y-%m-%d %H:%M UTC')", "duration": $DURATION, "rate": $RATE,
 "build": "caching-proxy $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), release, --threads 1",
 "restart_every": $RESTART_EVERY, "busy": $busy, "cache_max_bytes": $((64 << 20)),
 "machine": "$(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) CPUs",
 "rss_start_kib": $rss_start, "rss_peak_kib": $rss_peak, "rss_end_kib": $rss_end,
 "fds_start": $fds_start, "fds_settled": $fds_settled, "alive_at_end": $alive,
 "aborted_memory": "$(metric 'caching_proxy_cache_store_aborted_total{reason="memory"}')",
 "aborted_size": "$(metric 'caching_proxy_cache_store_aborted_total{reason="object_size"}')"}
EOF
    mkdir -p "$(dirname "$RESULTS")"
    local verdict=0
    python3 "$SOAK_DIR/report.py" "$WORK" "$STALL" >"$RESULTS" || verdict=$?
    cat "$RESULTS"
    log "written to $RESULTS"
    return "$verdict"
}

main "$@"
