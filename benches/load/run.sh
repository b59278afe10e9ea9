#!/usr/bin/env bash
# Whole-proxy load benchmark: caching-proxy, nginx (proxy_cache) and Varnish side by side in
# front of one origin (examples/bench_origin.rs), on this machine, over loopback only.
#
#   bash benches/load/run.sh                  # DURATION=10 s per row, about 4 minutes
#   DURATION=3 WARMUP=1 bash benches/load/run.sh
#
# Each server runs pinned to CPU 0 (caching-proxy --threads 1, nginx with 1 worker, Varnish
# with its defaults); wrk (1 thread) and the origin share CPU 1. Caches are warmed before the
# HIT rows. Prints one Markdown table and writes it, with the machine and versions, to
# benches/results/latest.md (RESULTS=FILE to write elsewhere). See benches/README.md.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
BURST=${BURST:-200}
RESULTS=${RESULTS:-$ROOT/benches/results/latest.md}
RUN_ID=$(date +%s)-$$

start_nginx() {
    NGINX_PORT=$(free_ports 1)
    local dir="$WORK/nginx" cache="$SHM_DIR/nginx-cache"
    mkdir -p "$dir"/{body,proxy,fastcgi,uwsgi,scgi} "$cache"
    cat >"$dir/nginx.conf" <<EOF
# caching-proxy load benchmark: nginx as a caching proxy (written by benches/load/run.sh)
worker_processes 1;
daemon off;
user root;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    # On tmpfs; keys_zone 256m holds about 2M keys (the MISS row stores one per request).
    proxy_cache_path $cache levels=1:2 keys_zone=bench:256m max_size=4g inactive=1h use_temp_path=off;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 512;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_lock on;
            # Only when the origin gives no freshness: Cache-Control/Expires come first.
            proxy_cache_valid 200 5m;
            add_header X-Cache \$upstream_cache_status;
        }
    }
}
EOF
    spawn "$CPU_SERVER" "$dir/stderr.log" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
    NGINX_PID=$LAST_PID
    wait_http "http://127.0.0.1:$NGINX_PORT/__stats" 10
}

start_varnish() {
    VARNISH_PORT=$(free_ports 1)
    # The work dir (shared memory log) on tmpfs, as Varnish recommends. -j none: no
    # privilege separation, so the temporary directories need no other owner.
    spawn "$CPU_SERVER" "$WORK/varnish.log" varnishd -F -j none -n "$SHM_DIR/varnish" \
        -a "127.0.0.1:$VARNISH_PORT" -b "127.0.0.1:$ORIGIN_PORT" -s malloc,1G -T none
    VARNISH_PID=$LAST_PID
    wait_http "http://127.0.0.1:$VARNISH_PORT/__stats" 30
}

SERVERS=(ours nginx varnish)
declare -A NAME=([ours]=caching-proxy [nginx]=nginx [varnish]=Varnish)
declare -A PORT PID R
ROWS=()
declare -A LABEL

# Stores one result: record ROW SERVER req_s p50 p99 mean max rss_kib fetches errors cpu%
record() {
    local row=$1 s=$2
    R[$row,$s,rps]=$3
    R[$row,$s,p50]=$4
    R[$row,$s,p99]=$5
    R[$row,$s,mean]=$6
    R[$row,$s,max]=$7
    R[$row,$s,rss]=$8
    R[$row,$s,fetches]=$9
    R[$row,$s,errors]=${10}
    R[$row,$s,cpu]=${11}
    log "$row ${NAME[$s]}: req/s $3, p50 $4 ms, p99 $5 ms, mean $6 ms, RSS $(($8 / 1024)) MiB, CPU ${11} %, origin fetches $9, errors ${10}"
}

# A wrk row against every server: wrk_row ROW LABEL PATH CONNECTIONS hit|miss
wrk_row() {
    local row=$1 path=$3 conns=$4 mode=$5 s url before after
    local rps p50 p99 mean max errors ticks t0 cpu
    ROWS+=("$row")
    LABEL[$row]=$2
    for s in "${SERVERS[@]}"; do
        url="http://127.0.0.1:${PORT[$s]}$path"
        local script=()
        if [[ $mode == miss ]]; then
            script=(-s "$LOAD_DIR/unique.lua")
            export WRK_PREFIX="/1k/warm-$RUN_ID-$s-"
        else
            # Fill, then make sure the next answer comes from the cache.
            curl -s -o /dev/null "$url"
            curl -s -o /dev/null "$url"
        fi
        if ((WARMUP > 0)); then
            run_wrk "$WORK/warmup.txt" "$conns" "$WARMUP" "$url" "${script[@]}"
        fi
        export WRK_PREFIX="/1k/miss-$RUN_ID-$s-"
        before=$(origin_count)
        ticks=$(cpu_ticks "${PID[$s]}") t0=$(now_ns)
        run_wrk "$WORK/$row-$s.txt" "$conns" "$DURATION" "$url" "${script[@]}"
        cpu=$(calc %.0f "100 * ($(cpu_ticks "${PID[$s]}") - $ticks) / $CLK_TCK / (($(now_ns) - $t0) / 1e9)")
        after=$(origin_count)
        read -r rps p50 p99 mean max errors < <(parse_wrk "$WORK/$row-$s.txt")
        record "$row" "$s" "$rps" "$p50" "$p99" "$mean" "$max" "$(rss_kib "${PID[$s]}")" \
            $((after - before)) "$errors" "$cpu"
    done
}

# BURST requests at once for one uncached URL: burst_row ROW LABEL fresh|expired
burst_row() {
    local row=$1 mode=$3 s target before after json
    ROWS+=("$row")
    LABEL[$row]=$2
    for s in "${SERVERS[@]}"; do
        if [[ $mode == fresh ]]; then
            target="/slow?key=$RUN_ID-$s"
        else
            # Fill with max-age=1, let it expire, then the burst.
            target="/slow-expiring?key=$RUN_ID-$s"
            curl -s -o /dev/null "http://127.0.0.1:${PORT[$s]}$target"
            sleep 2.5
        fi
        before=$(origin_count "$target")
        json=$(taskset -c "$CPU_CLIENT" timeout 60 "$BURST_BIN" "127.0.0.1:${PORT[$s]}" "$target" "$BURST")
        after=$(origin_count "$target")
        log "$row ${NAME[$s]}: $json"
        record "$row" "$s" "-" \
            "$(jq -r .p50_ms <<<"$json")" "$(jq -r .p99_ms <<<"$json")" \
            "$(jq -r .mean_ms <<<"$json")" "$(jq -r .max_ms <<<"$json")" \
            "$(rss_kib "${PID[$s]}")" $((after - before)) \
            "$(jq -r '.requests - .ok' <<<"$json")" -
    done
}

# The first version number a tool prints (wrk -v prints it with its usage and exits 1).
version() { { "$@" 2>&1 || true; } | grep -o '[0-9][0-9.]*[0-9]' | sed -n 1p || true; }

calc() { awk "BEGIN { printf \"$1\", $2 }"; }

report() {
    local row s rps cpu versions
    cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p')
    versions="nginx $(version nginx -v), Varnish $(version varnishd -V), wrk $(version wrk -v)"
    echo "# caching-proxy load benchmark: results"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: $cpu, $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
    echo "- versions: caching-proxy $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') (working tree), $versions"
    echo "- setup: servers pinned to CPU $CPU_SERVER (caching-proxy --threads 1, nginx 1 worker, Varnish defaults with -s malloc,1G); wrk -t1 and the origin pinned to CPU $CPU_CLIENT; ${DURATION} s per row after ${WARMUP} s of warm-up; coalescing rows: $BURST requests at once"
    echo "- other work on the machine: CPUs $BUSY_BEFORE% busy in the second before the first row, $(cpu_busy)% after the last (servers idle); much above 0 means the rows are noisy"
    echo
    echo "| row | server | req/s | p50 ms | p99 ms | mean ms | max ms | RSS MiB | CPU % | origin fetches | ours/nginx | ours/Varnish |"
    echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    for row in "${ROWS[@]}"; do
        for s in "${SERVERS[@]}"; do
            local ratio_n="" ratio_v="" note=""
            rps=${R[$row,$s,rps]}
            if [[ $s == ours && $rps != - ]]; then
                ratio_n=$(calc "%.2f×" "$rps / ${R[$row,nginx,rps]}")
                ratio_v=$(calc "%.2f×" "$rps / ${R[$row,varnish,rps]}")
            fi
            if ((${R[$row,$s,errors]} > 0)); then note=" (${R[$row,$s,errors]} errors)"; fi
            local cpu_cell=${R[$row,$s,cpu]}
            if noisy "$row" "$s"; then cpu_cell+=" ⚠"; fi
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
                "${LABEL[$row]}" "${NAME[$s]}$note" "$rps" \
                "$(calc %.2f "${R[$row,$s,p50]}")" "$(calc %.2f "${R[$row,$s,p99]}")" \
                "$(calc %.2f "${R[$row,$s,mean]}")" "$(calc %.1f "${R[$row,$s,max]}")" \
                "$(calc %.1f "${R[$row,$s,rss]} / 1024")" "$cpu_cell" \
                "${R[$row,$s,fetches]}" "$ratio_n" "$ratio_v"
        done
    done
    echo
    echo "req/s ratios: caching-proxy's req/s over the other server's (higher is better)."
    echo "CPU %: the server's CPU time during the row over the row's wall time (100 = all of CPU"
    echo "$CPU_SERVER). Each server is the bottleneck, so it should be near 100; ⚠ marks less than ${MIN_CPU}%:"
    echo "other work on the machine took the CPU (or the load generator fell behind), so the row is"
    echo "not a fair measure: rerun. Origin fetches: requests the origin received during the"
    echo "measured part of the row (0 for a warm HIT row; one per request on the MISS row). RSS:"
    echo "after the row; nginx's leaves out its cache on tmpfs ($NGINX_SHM_MIB MiB after the MISS row)."
    echo "Coalescing rows: latency of each of the $BURST requests from its own write to the last byte"
    echo "of its answer (p50/p99/mean/max over the $BURST)."
    echo
    echo "## Targets"
    echo
    targets
}

# A wrk row where the server got less than MIN_CPU % of its core: something else ran there.
MIN_CPU=${MIN_CPU:-90}
noisy() {
    local cpu=${R[$1,$2,cpu]}
    [[ $cpu != - ]] && ((cpu < MIN_CPU))
}

# A warning for the targets when caching-proxy's or nginx's figures for a row are noisy.
noise_note() {
    if noisy "$1" ours || noisy "$1" nginx; then echo " ⚠ noisy row: rerun"; fi
}

# met CONDITION: "met" or "NOT met" for an awk condition.
met() { awk "BEGIN { exit !($1) }" && echo "met" || echo "**NOT met**"; }

targets() {
    local o n
    o=${R[hit1k64,ours,rps]} n=${R[hit1k64,nginx,rps]}
    echo "- 1 KiB HIT, 64 connections, ≥ 1.5× nginx req/s with p99 no worse: $(met "$o >= 1.5 * $n && ${R[hit1k64,ours,p99]} <= ${R[hit1k64,nginx,p99]}") ($o vs $n req/s = $(calc %.2f× "$o / $n"); p99 ${R[hit1k64,ours,p99]} vs ${R[hit1k64,nginx,p99]} ms)$(noise_note hit1k64)"
    local row
    for row in hit16k64 hit256k64 miss64; do
        o=${R[$row,ours,rps]} n=${R[$row,nginx,rps]}
        echo "- ${LABEL[$row]} ≥ nginx req/s: $(met "$o >= $n") ($o vs $n req/s = $(calc %.2f× "$o / $n"))$(noise_note "$row")"
    done
    for row in coalesce coalesce_expired; do
        o=${R[$row,ours,mean]}
        echo "- ${LABEL[$row]}: 1 origin fetch, mean within 20 ms of 50 ms: $(met "${R[$row,ours,fetches]} == 1 && $o <= 70") (caching-proxy ${R[$row,ours,fetches]} origin fetch(es), mean $o ms; nginx ${R[$row,nginx,fetches]}, mean ${R[$row,nginx,mean]} ms; Varnish ${R[$row,varnish,fetches]}, mean ${R[$row,varnish,mean]} ms)"
    done
    echo "- Memory (peak RSS ≤ cache size + 32 MiB): measured by benches/load/memory.sh, see benches/results/memory.md"
}

main() {
    local t0=$SECONDS
    ensure_packages
    build
    local t1=$SECONDS
    SHM_DIR=$(mktemp -d /dev/shm/caching-proxy-bench.XXXXXX 2>/dev/null || mktemp -d "$WORK/shm.XXXXXX")
    start_origin
    start_proxy --cache-max-bytes 1GiB --cache-size 2000000
    start_nginx
    start_varnish
    PORT=([ours]=$PROXY_PORT [nginx]=$NGINX_PORT [varnish]=$VARNISH_PORT)
    PID=([ours]=$PROXY_PID [nginx]=$NGINX_PID [varnish]=$VARNISH_PID)
    BUSY_BEFORE=$(cpu_busy)
    log "origin :$ORIGIN_PORT, caching-proxy :$PROXY_PORT (admin :$PROXY_ADMIN_PORT), nginx :$NGINX_PORT, Varnish :$VARNISH_PORT; work dir $WORK"

    wrk_row hit1k64 "HIT 1 KiB, 64 conns" /1k 64 hit
    wrk_row hit16k64 "HIT 16 KiB, 64 conns" /16k 64 hit
    wrk_row hit256k64 "HIT 256 KiB, 64 conns" /256k 64 hit
    wrk_row hit1k256 "HIT 1 KiB, 256 conns" /1k 256 hit
    wrk_row miss64 "MISS 1 KiB (unique URLs), 64 conns" /1k 64 miss
    NGINX_SHM_MIB=$(du -sm "$SHM_DIR/nginx-cache" | cut -f1)
    burst_row coalesce "Coalescing: $BURST at once, uncached /slow (50 ms)" fresh
    burst_row coalesce_expired "Coalescing: $BURST at once, just-expired /slow-expiring (50 ms)" expired

    mkdir -p "$(dirname "$RESULTS")"
    report | tee "$RESULTS"
    log "done in $((SECONDS - t0)) s ($((SECONDS - t1)) s without the build); written to $RESULTS"
}

main "$@"
