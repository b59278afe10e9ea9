#!/usr/bin/env bash
# Hand-over run: what a reload (SIGHUP) costs with the warm cache hand-over and without it.
#
#   bash benches/load/handover.sh              # about 4 minutes (+ the build)
#   CACHE_MIB=64 bash benches/load/handover.sh # smaller cache, shorter
#
# For 1 KiB and 64 KiB objects, caching-proxy (--threads 1, pinned to CPU 0) with a
# CACHE_MIB cache is filled to its bound with a key space 10% larger than what fits, then
# serves a steady load drawn uniformly from that key space (benches/load/keyspace.py, on
# CPU 1 with the origin), so its hit ratio is about 90%. Then `caching-proxy --reload`, once
# with the hand-over (warm: the default server.handover_timeout) and once without it (cold:
# --handover-timeout 0), under the same load. Reports per case:
#
#   - the hand-over: entries and bytes taken over, and how fast (entries/s, from the new
#     process's log line);
#   - the hit ratio before the reload; after it, the lowest half-second's hit ratio seen by
#     clients and the time from which it stays within 2 points of the one before;
#   - origin requests in the 10 s after the reload.
#
# Writes benches/results/handover.md (RESULTS=FILE to write elsewhere).
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CACHE_MIB=${CACHE_MIB:-256}
RESULTS=${RESULTS:-$ROOT/benches/results/handover.md}
# Seconds of load before and after the reload.
BEFORE=${BEFORE:-4}
AFTER=${AFTER:-12}
CLIENT_THREADS=${CLIENT_THREADS:-4}

stats() { curl -s --max-time 5 "http://127.0.0.1:$PROXY_ADMIN_PORT/cache/stats"; }

# One case: handover_case SIZE MODE (SIZE 1k|64k, MODE warm|cold). Appends a table row.
handover_case() {
    local size=$1 mode=$2 name="$1-$2" prefix keys flags=() s w
    prefix="/$size/$mode-$RUN-"
    [[ $mode == cold ]] && flags=(--handover-timeout 0)
    # The log level info: the hand-over's log line says how many entries and how long.
    BENCH_LOG_LEVEL=info start_proxy "$name" --cache-max-bytes "${CACHE_MIB}MiB" \
        --cache-size 10000000 --grace-period 1s --log-format json "${flags[@]}"
    local pid_file="$WORK/$name.pid" old_pid=$PROXY_PID

    # How many entries fit: the weight of one entry from a first thousand.
    curl -s -o /dev/null "http://127.0.0.1:$PROXY_PORT${prefix}probe"
    for ((s = 0; s < 1000; s++)); do echo "url = \"http://127.0.0.1:$PROXY_PORT${prefix}p$s\""; echo "output = /dev/null"; done >"$WORK/probe.curl"
    curl -s --no-progress-meter --parallel --parallel-max 16 -K "$WORK/probe.curl"
    w=$(stats | jq -r '.bytes / .entries | floor')
    keys=$(((CACHE_MIB * 1048576 / w) * 11 / 10))
    log "$name: about $w bytes per entry, $keys keys for a ${CACHE_MIB} MiB cache"

    # Fill: the whole key space once (the cache then holds the most recent ~90%).
    local before_fill fetched
    before_fill=$(origin_count)
    WRK_PREFIX=$prefix WRK_KEYS=$keys taskset -c "$CPU_CLIENT" wrk -t1 -c 32 -d 600s \
        -s "$LOAD_DIR/fill.lua" "http://127.0.0.1:$PROXY_PORT/" >"$WORK/fill-$name.txt" 2>&1 &
    local wrk_pid=$!
    PIDS+=("$wrk_pid")
    while kill -0 "$wrk_pid" 2>/dev/null; do
        fetched=$(($(origin_count) - before_fill))
        ((fetched >= keys)) && kill -INT "$wrk_pid" 2>/dev/null
        sleep 0.5
    done
    local entries bytes
    entries=$(stats | jq -r .entries)
    bytes=$(stats | jq -r .bytes)
    log "$name: filled, $entries entries, $((bytes / 1048576)) MiB"

    # Load across the reload; the reload BEFORE seconds in.
    taskset -c "$CPU_CLIENT" python3 "$LOAD_DIR/keyspace.py" "127.0.0.1:$PROXY_PORT" "$prefix" \
        "$keys" "$((BEFORE + AFTER))" "$CLIENT_THREADS" >"$WORK/load-$name.txt" &
    local load_pid=$!
    PIDS+=("$load_pid")
    sleep "$BEFORE"
    local origin_at_reload t_reload
    origin_at_reload=$(origin_count)
    t_reload=$(now_ns)
    "$PROXY_BIN" --reload --pid-file "$pid_file" >"$WORK/reload-$name.txt" 2>&1 ||
        die "$name: reload failed: $(cat "$WORK/reload-$name.txt")"
    local new_pid
    new_pid=$(cat "$pid_file")
    PIDS+=("$new_pid")
    local reload_ms=$((($(now_ns) - t_reload) / 1000000))
    sleep "$(awk "BEGIN { print 10 - $reload_ms / 1000 }")"
    local origin_10s=$(($(origin_count) - origin_at_reload))
    wait "$load_pid" || true

    # The hit ratio before; after the reload, the lowest half-second's and the time from
    # which every half-second is within 2 points of it again (the old process answers its
    # keep-alive connections for a few seconds after the reload, so a dip comes late).
    local before_ratio back lowest
    before_ratio=$(awk -v b="$BEFORE" '$1 >= 1 && $1 < b { h += $2; n += $3 } END { printf "%.1f", 100 * h / n }' "$WORK/load-$name.txt")
    read -r back lowest < <(awk -v b="$BEFORE" -v r="$before_ratio" '
        $1 >= b { ratio = 100 * $2 / $3; if (low == "" || ratio < low) low = ratio
                  if (ratio < r - 2) last = $1 - b + 0.5 }
        END { printf "%.1f %.1f\n", last + 0, low }' "$WORK/load-$name.txt")
    local errors
    errors=$(awk '{ e += $4 } END { print e + 0 }' "$WORK/load-$name.txt")

    # The hand-over's own figures, from the new process's log line.
    local taken="-" rate="-"
    local line
    line=$(grep -h "cache hand-over: took over" "$WORK/$name.log" | tail -n 1 || true)
    if [[ -n $line ]]; then
        local n b ms
        read -r n b ms < <(sed -E 's/.*took over ([0-9]+) entries \(([0-9]+) bytes\) in ([0-9]+) ms.*/\1 \2 \3/' <<<"$line")
        taken="$n entries, $((b / 1048576)) MiB, $ms ms"
        rate=$(awk "BEGIN { printf \"%.0f\", $n / (($ms + 1) / 1000) }")
    fi
    log "$name: hit ratio before $before_ratio%, lowest after $lowest%, back for good after $back s; origin requests in 10 s $origin_10s; hand-over $taken"
    ROWS_OUT+="| $size | $mode | $entries ($((bytes / 1048576)) MiB) | $taken | $rate | $before_ratio % | $lowest % | $back s | $origin_10s | $errors |"$'\n'

    kill -TERM "$new_pid" "$old_pid" 2>/dev/null || true
    sleep 1
}

main() {
    local t0=$SECONDS busy
    ensure_packages
    command -v python3 >/dev/null || die "python3 is needed"
    build
    RUN=$(date +%s)
    start_origin
    busy=$(cpu_busy)
    ROWS_OUT=""
    for size in 1k 64k; do
        for mode in warm cold; do
            handover_case "$size" "$mode"
        done
    done
    mkdir -p "$(dirname "$RESULTS")"
    {
        echo "# caching-proxy hand-over run: results"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "- machine: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) CPUs, kernel $(uname -r); CPUs $busy% busy before the run"
        echo "- caching-proxy $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), --threads 1 on CPU $CPU_SERVER, a $CACHE_MIB MiB cache; the origin and the load ($CLIENT_THREADS keep-alive connections, uniform over a key space 10% larger than the cache holds) on CPU $CPU_CLIENT"
        echo "- each case: fill, ${BEFORE} s of load, \`caching-proxy --reload\`, ${AFTER} s more; warm = the default hand-over, cold = --handover-timeout 0"
        echo
        echo "| objects | reload | cache before | hand-over (taken over) | entries/s | hit ratio before | lowest after (0.5 s) | within 2 points for good after | origin requests in the 10 s after | failed requests |"
        echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"
        printf '%s' "$ROWS_OUT"
        echo
        echo "Hit ratio: as the clients saw it (X-Cache: HIT over all answers, half-second buckets). A"
        echo "uniform load over a key space 10% larger than the cache can hold keeps it near 90% once"
        echo "warm; with a cold reload the new process refetches what it is asked for."
    } | tee "$RESULTS"
    log "done in $((SECONDS - t0)) s; written to $RESULTS"
}

main "$@"
