#!/usr/bin/env bash
# Whole-proxy load benchmark: caching-proxy, nginx (proxy_cache) and Varnish side by side in
# front of one origin (examples/bench_origin.rs), on this machine, over loopback only;
# caching-proxy's Redis tier (rows for caching-proxy only: the others have no shared tier);
# and TLS at the edge, caching-proxy beside nginx (`listen ... ssl http2`, same certificate):
# HTTPS/1.1 and HTTP/2 hits and new TLS 1.3 handshakes (see tls.sh).
#
#   bash benches/load/run.sh                  # 3 rounds, DURATION=10 s per row: about 20 minutes
#   ROUNDS=1 DURATION=3 WARMUP=1 bash benches/load/run.sh   # one quick pass
#   ROWS="tlshit1k h2hit1k handshake" bash benches/load/run.sh   # only these rows (ids in
#                                             # run_rows; a results file only with RESULTS=FILE)
#
# Each server runs pinned to CPU 0 (caching-proxy --threads 1, nginx with 1 worker, Varnish
# with its defaults); wrk (1 thread), the origin and redis-server share CPU 1. Caches are
# warmed before the HIT rows. One server's throughput drifts by 10-30 % over minutes on a
# shared virtual machine, so a row runs on every server back to back, the whole set of rows
# is repeated ROUNDS times, and the table gives each figure's median over the rounds with
# its spread. Prints one Markdown table and writes it, with the machine and versions, to
# benches/results/latest.md (RESULTS=FILE to write elsewhere). See benches/README.md.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tls.sh
source "$(dirname "${BASH_SOURCE[0]}")/tls.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
BURST=${BURST:-200}
# Requests per second of the fixed-rate rows (rate1k, tlsrate1k), the same for every server:
# well below each one's saturation (a third of caching-proxy's 1 KiB hits on one core here,
# two fifths of nginx's), so their latency is the server's answer to one load.
RATE=${RATE:-20000}
[[ $RATE =~ ^[1-9][0-9]*$ ]] || die "RATE must be a positive number, not \"$RATE\""
# How often the whole set of rows runs; ROUNDS=1 is one pass, for a quick look.
ROUNDS=${ROUNDS:-3}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number, not \"$ROUNDS\""
# The round being run (1-based): every figure is stored per round, see put and summarise.
ROUND=1
# The Host of every request of the 3-proxy row: the cache key includes it, so the three
# proxies share an entry only when the requests name one host.
SHARED_HOST=bench.test
RUN_ID=$(date +%s)-$$
# ROWS="id id ..." (or comma-separated): run only these rows (ids in main below); every row
# by default. A partial run does not replace the full table unless RESULTS names a file.
ROW_FILTER=${ROWS:-}
ROW_FILTER=${ROW_FILTER//,/ }
if [[ -z $ROW_FILTER ]]; then
    RESULTS=${RESULTS:-$ROOT/benches/results/latest.md}
else
    RESULTS=${RESULTS:-}
fi

# Whether a row is to run.
want() { [[ -z $ROW_FILTER || " $ROW_FILTER " == *" $1 "* ]]; }
# Whether any of these rows is to run.
want_any() {
    local row
    for row in "$@"; do want "$row" && return 0; done
    return 1
}
# Whether a row ran (and has results).
ran() { [[ " ${DONE_ROWS[*]} " == *" $1 "* ]]; }

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
$(nginx_tls_listen)
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

# The side-by-side servers, in every row unless a row names its own.
SERVERS=(ours nginx varnish)
# The main HIT and MISS rows add caching-proxy with its default settings (an access record
# per request, one thread per CPU) beside the tuned one, so the cost of each default shows.
MAIN_SERVERS=(ours ours_default nginx varnish)
# caching-proxy on the Redis tier: L1 off (every hit from Redis), the default L1, and three
# instances on one Redis (PORT, PID and ADMIN hold their three values, space-separated).
declare -A NAME=([ours]=caching-proxy [nginx]=nginx [varnish]=Varnish
    [ours_default]="caching-proxy, default settings"
    [l2]="caching-proxy, Redis, L1 off" [l1]="caching-proxy, Redis, L1 64 MiB"
    [shared]="3 × caching-proxy, one Redis"
    [ours_tls]="caching-proxy, TLS" [nginx_tls]="nginx, TLS"
    [lb]="caching-proxy, 2 origins round robin")
declare -A PORT PID ADMIN R
# The scheme of a server's URLs (http unless set).
declare -A SCHEME=([ours_tls]=https [nginx_tls]=https)
# What caching-proxy's lines are compared with in the ratio columns: nginx, Varnish.
declare -A PEER_NGINX=([ours]=nginx [ours_default]=nginx [ours_tls]=nginx_tls)
declare -A PEER_VARNISH=([ours]=varnish [ours_default]=varnish)
# The rows that ran, in order.
DONE_ROWS=()
# A row's label, and the servers it ran against.
declare -A LABEL ROW_SERVERS
# The servers of the row being run, in this round's order (set by begin_row).
ORDER=()

# Registers a row the first time it runs and sets ORDER: begin_row ROW LABEL [SERVER...]
# (default: SERVERS). The servers take turns at going first, one more place each round, so
# that a drift of the machine within a round does not always favour the same server.
begin_row() {
    local row=$1 label=$2 k
    shift 2
    local servers=("$@")
    ((${#servers[@]})) || servers=("${SERVERS[@]}")
    if ! ran "$row"; then
        DONE_ROWS+=("$row")
        LABEL[$row]=$label
        ROW_SERVERS[$row]="${servers[*]}"
    fi
    k=$(((ROUND - 1) % ${#servers[@]}))
    ORDER=("${servers[@]:k}" "${servers[@]:0:k}")
}

# One round's figure: put ROW SERVER FIELD VALUE. summarise turns the rounds' figures into
# R[ROW,SERVER,FIELD] (the median, what the table and the targets read) and its spread.
put() { R[$1,$2,$3,$ROUND]=$4; }

# The figures that are summarised; a field a row does not measure is "-" or absent.
FIELDS=(rps p50 p99 mean max rss fetches errors cpu client_cpu requests cpu_ms l2hits l2misses l2writes l2errors)

# Median, min and max of numbers (one per argument): "median min max". An even count has
# the mean of the middle two as its median.
median_min_max() {
    printf '%s\n' "$@" | sort -g | awk '
        { v[NR] = $1 }
        END {
            m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            print m, v[1], v[NR]
        }'
}

# Every row and server: R[ROW,S,FIELD] = the median over the rounds, R[ROW,S,FIELD,min]
# and R[ROW,S,FIELD,max] the spread, R[ROW,S,FIELD,n] how many rounds gave a figure. Errors
# are summed instead (one failed request in any round is worth seeing). caching-proxy's
# ratios to nginx and Varnish are taken per round (the servers ran back to back) and their
# spread kept in R[ROW,S,ratio_nginx,min|max] and likewise for Varnish.
summarise() {
    local row s f r v peer_v values servers med lo hi peer kind
    for row in "${DONE_ROWS[@]}"; do
        read -ra servers <<<"${ROW_SERVERS[$row]}"
        for s in "${servers[@]}"; do
            for f in "${FIELDS[@]}"; do
                values=()
                for ((r = 1; r <= ROUNDS; r++)); do
                    v=${R[$row,$s,$f,$r]:-}
                    [[ -n $v ]] && values+=("$v")
                done
                ((${#values[@]})) || continue
                R[$row,$s,$f,n]=${#values[@]}
                if [[ " ${values[*]} " == *" - "* ]]; then
                    R[$row,$s,$f]=- R[$row,$s,$f,min]=- R[$row,$s,$f,max]=-
                    continue
                fi
                read -r med lo hi < <(median_min_max "${values[@]}")
                if [[ $f == errors ]]; then
                    med=$(awk '{ for (i = 1; i <= NF; i++) t += $i } END { print t }' <<<"${values[*]}")
                fi
                R[$row,$s,$f]=$med R[$row,$s,$f,min]=$lo R[$row,$s,$f,max]=$hi
            done
            for kind in nginx varnish; do
                if [[ $kind == nginx ]]; then peer=${PEER_NGINX[$s]:-}; else peer=${PEER_VARNISH[$s]:-}; fi
                [[ -n $peer && " ${servers[*]} " == *" $peer "* ]] || continue
                values=()
                for ((r = 1; r <= ROUNDS; r++)); do
                    v=${R[$row,$s,rps,$r]:-} peer_v=${R[$row,$peer,rps,$r]:-}
                    [[ -n $v && $v != - && -n $peer_v && $peer_v != - ]] || continue
                    values+=("$(calc %.4f "$v / $peer_v")")
                done
                ((${#values[@]})) || continue
                read -r med lo hi < <(median_min_max "${values[@]}")
                R[$row,$s,ratio_$kind,min]=$lo R[$row,$s,ratio_$kind,max]=$hi
            done
        done
    done
}

# RSS (KiB) and CPU time (ticks) of a server: the sum over its processes.
server_rss() {
    local p pids total=0
    read -ra pids <<<"${PID[$1]}"
    for p in "${pids[@]}"; do total=$((total + $(rss_kib "$p"))); done
    echo "$total"
}
server_ticks() {
    local p pids total=0
    read -ra pids <<<"${PID[$1]}"
    for p in "${pids[@]}"; do total=$((total + $(cpu_ticks "$p"))); done
    echo "$total"
}

# The Redis tier's counters of a server, summed over its processes: "hits misses writes errors".
l2_counters() {
    local a admins sum=(0 0 0 0) i v
    read -ra admins <<<"${ADMIN[$1]}"
    for a in "${admins[@]}"; do
        read -ra v < <(curl -s --max-time 5 "http://127.0.0.1:$a/cache/stats" |
            jq -r '.tiers.l2 | "\(.hits) \(.misses) \(.writes) \(.errors)"')
        for i in 0 1 2 3; do sum[i]=$((sum[i] + v[i])); done
    done
    echo "${sum[*]}"
}

# For a Redis server, what its L2 did during a row: l2_delta ROW SERVER BEFORE ("hits ...").
l2_delta() {
    local row=$1 s=$2 before after
    read -ra before <<<"$3"
    read -ra after <<<"$(l2_counters "$s")"
    put "$row" "$s" l2hits $((after[0] - before[0]))
    put "$row" "$s" l2misses $((after[1] - before[1]))
    put "$row" "$s" l2writes $((after[2] - before[2]))
    put "$row" "$s" l2errors $((after[3] - before[3]))
    log "$row ${NAME[$s]}: Redis tier hits $((after[0] - before[0])), misses $((after[1] - before[1])), writes $((after[2] - before[2])), errors $((after[3] - before[3]))"
}

# Stores one round's result: record ROW SERVER req_s p50 p99 mean max rss_kib fetches errors cpu%
record() {
    local row=$1 s=$2
    put "$row" "$s" rps "$3"
    put "$row" "$s" p50 "$4"
    put "$row" "$s" p99 "$5"
    put "$row" "$s" mean "$6"
    put "$row" "$s" max "$7"
    put "$row" "$s" rss "$8"
    put "$row" "$s" fetches "$9"
    put "$row" "$s" errors "${10}"
    put "$row" "$s" cpu "${11}"
    put "$row" "$s" client_cpu "${12:--}"
    log "$row ${NAME[$s]} (round $ROUND/$ROUNDS): req/s $3, p50 $4 ms, p99 $5 ms, mean $6 ms, RSS $(($8 / 1024)) MiB, CPU ${11} %, client CPU ${12:--} %, origin fetches $9, errors ${10}"
}

# A wrk row: wrk_row ROW LABEL PATH CONNECTIONS hit|miss [SERVER...] (default: SERVERS)
wrk_row() {
    local row=$1 label=$2 path=$3 conns=$4 mode=$5 s url before after l2before
    local rps p50 p99 mean max errors ticks t0 cpu c0 wall
    shift 5
    begin_row "$row" "$label" "$@"
    for s in "${ORDER[@]}"; do
        url="${SCHEME[$s]:-http}://127.0.0.1:${PORT[$s]}$path"
        local script=()
        if [[ $mode == miss ]]; then
            script=(-s "$LOAD_DIR/unique.lua")
            export WRK_PREFIX="/1k/warm-$RUN_ID-$ROUND-$s-"
        else
            # Fill, then make sure the next answer comes from the cache.
            curl -sk -o /dev/null "$url"
            curl -sk -o /dev/null "$url"
        fi
        if ((WARMUP > 0)); then
            run_wrk "$WORK/warmup.txt" "$conns" "$WARMUP" "$url" "${script[@]}"
        fi
        export WRK_PREFIX="/1k/miss-$RUN_ID-$ROUND-$s-"
        before=$(origin_count)
        if [[ -n ${ADMIN[$s]:-} ]]; then l2before=$(l2_counters "$s"); fi
        ticks=$(server_ticks "$s") c0=$(client_ticks) t0=$(now_ns)
        run_wrk "$WORK/$row-$s.txt" "$conns" "$DURATION" "$url" "${script[@]}"
        wall=$(calc %.6f "($(now_ns) - $t0) / 1e9")
        cpu=$(cpu_percent "$(server_ticks "$s") - $ticks" "$wall")
        after=$(origin_count)
        read -r rps p50 p99 mean max errors < <(parse_wrk "$WORK/$row-$s.txt")
        put "$row" "$s" requests "$(awk '/requests in/ { print $1 }' "$WORK/$row-$s.txt")"
        record "$row" "$s" "$rps" "$p50" "$p99" "$mean" "$max" "$(server_rss "$s")" \
            $((after - before)) "$errors" "$cpu" \
            "$(cpu_percent "$(client_ticks) - $c0" "$wall")"
        if [[ -n ${ADMIN[$s]:-} ]]; then l2_delta "$row" "$s" "$l2before"; fi
    done
}

# Requests at a fixed rate, the same for every server (examples/bench_rate.rs): the latency
# of one load rather than of as many requests as the server takes. A wrk row gives a faster
# server more requests, and over TLS wrk's core is near full against caching-proxy, so its
# latencies there measure the client's own queue as well.
# rate_row ROW LABEL PATH CONNECTIONS [SERVER...] (default: SERVERS); the rate is RATE.
rate_row() {
    local row=$1 label=$2 path=$3 conns=$4 s url before after ticks c0 t0 wall json
    shift 4
    begin_row "$row" "$label" "$@"
    for s in "${ORDER[@]}"; do
        url="${SCHEME[$s]:-http}://127.0.0.1:${PORT[$s]}$path"
        curl -sk -o /dev/null "$url"
        curl -sk -o /dev/null "$url"
        before=$(origin_count)
        ticks=$(server_ticks "$s") c0=$(client_ticks) t0=$(now_ns)
        json=$(run_rate "$WORK/$row-$s.json" "$url" "$conns")
        wall=$(calc %.6f "($(now_ns) - $t0) / 1e9")
        after=$(origin_count)
        put "$row" "$s" requests "$(jq -r .requests <<<"$json")"
        # The whole line: its late requests, p90 and p99.9 are not in the table.
        log "$row ${NAME[$s]}: $json"
        record "$row" "$s" "$(jq -r .rate <<<"$json")" \
            "$(jq -r .p50_ms <<<"$json")" "$(jq -r .p99_ms <<<"$json")" \
            "$(jq -r .mean_ms <<<"$json")" "$(jq -r .max_ms <<<"$json")" \
            "$(server_rss "$s")" $((after - before)) "$(jq -r .errors <<<"$json")" \
            "$(cpu_percent "$(server_ticks "$s") - $ticks" "$wall")" \
            "$(cpu_percent "$(client_ticks) - $c0" "$wall")"
    done
}

# Fires the burst at a server: bench_burst at its address, or, for several proxies, burst.py
# spread over them with one Host (bench_burst sends its address as the Host, and the cache
# key includes it). Prints bench_burst's JSON line.
fire_burst() {
    local s=$1 target=$2 ports p addrs=()
    read -ra ports <<<"${PORT[$s]}"
    if ((${#ports[@]} == 1)); then
        taskset -c "$CPU_CLIENT" timeout 60 "$BURST_BIN" "127.0.0.1:${ports[0]}" "$target" "$BURST"
    else
        for p in "${ports[@]}"; do addrs+=("127.0.0.1:$p"); done
        taskset -c "$CPU_CLIENT" timeout 60 \
            python3 "$LOAD_DIR/burst.py" "$SHARED_HOST" "$target" "$BURST" "${addrs[@]}"
    fi
}

# BURST requests at once for one uncached URL:
# burst_row ROW LABEL fresh|expired [SERVER...] (default: SERVERS)
burst_row() {
    local row=$1 label=$2 mode=$3 s target before after json l2before
    shift 3
    begin_row "$row" "$label" "$@"
    for s in "${ORDER[@]}"; do
        if [[ $mode == fresh ]]; then
            target="/slow?key=$RUN_ID-$ROUND-$s"
        else
            # Fill with max-age=1, let it expire, then the burst.
            target="/slow-expiring?key=$RUN_ID-$ROUND-$s"
            curl -s -o /dev/null "http://127.0.0.1:${PORT[$s]}$target"
            sleep 2.5
        fi
        before=$(origin_count "$target")
        if [[ -n ${ADMIN[$s]:-} ]]; then l2before=$(l2_counters "$s"); fi
        json=$(fire_burst "$s" "$target")
        after=$(origin_count "$target")
        log "$row ${NAME[$s]}: $json"
        record "$row" "$s" "-" \
            "$(jq -r .p50_ms <<<"$json")" "$(jq -r .p99_ms <<<"$json")" \
            "$(jq -r .mean_ms <<<"$json")" "$(jq -r .max_ms <<<"$json")" \
            "$(server_rss "$s")" $((after - before)) \
            "$(jq -r '.requests - .ok' <<<"$json")" -
        if [[ -n ${ADMIN[$s]:-} ]]; then l2_delta "$row" "$s" "$l2before"; fi
    done
}

# The first version number a tool prints (wrk -v prints it with its usage and exits 1).
version() { { "$@" 2>&1 || true; } | grep -o '[0-9][0-9.]*[0-9]' | sed -n 1p || true; }

calc() { awk "BEGIN { printf \"$1\", $2 }"; }
# A process's CPU use over a row, in percent of one core: cpu_percent "TICKS_AFTER - TICKS_BEFORE" WALL_S
cpu_percent() { calc %.0f "100 * ($1) / $CLK_TCK / $2"; }
# calc for a table cell: "-" stays "-" (a figure the row's tool does not give).
cell() { if [[ $2 == - ]]; then echo -; else calc "$1" "$2"; fi; }

# caching-proxy's settings in every row: the Redis rows differ only by the backend flags.
PROXY_FLAGS=(--cache-max-bytes 1GiB --cache-size 2000000)
# The memory row each Redis row compares with.
declare -A MEMORY_ROW=([l2hit1k]=hit1k64 [l2hit256k]=hit256k64 [l2hit1k1]=hit1k1 [l2hit256k1]=hit256k1 [l1hit1k]=hit1k64 [shared]=coalesce)

# The caching-proxy instances on the Redis tier (needs start_redis): L1 off, the default L1,
# and three with the default L1 for the shared row.
start_redis_proxies() {
    local redis=(--cache-backend redis --redis-url "redis://127.0.0.1:$REDIS_PORT") i
    start_proxy l2 "${PROXY_FLAGS[@]}" "${redis[@]}" --redis-l1-max-bytes 0
    PORT[l2]=$PROXY_PORT PID[l2]=$PROXY_PID ADMIN[l2]=$PROXY_ADMIN_PORT
    start_proxy l1 "${PROXY_FLAGS[@]}" "${redis[@]}"
    PORT[l1]=$PROXY_PORT PID[l1]=$PROXY_PID ADMIN[l1]=$PROXY_ADMIN_PORT
    for i in 1 2 3; do
        start_proxy "shared$i" "${PROXY_FLAGS[@]}" "${redis[@]}"
        PORT[shared]+="${PORT[shared]:+ }$PROXY_PORT"
        PID[shared]+="${PID[shared]:+ }$PROXY_PID"
        ADMIN[shared]+="${ADMIN[shared]:+ }$PROXY_ADMIN_PORT"
    done
}

report() {
    local row s rps cpu versions servers
    cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p')
    versions="nginx $(version nginx -v), Varnish $(version varnishd -V), Redis $(version redis-server --version), wrk $(version wrk -v), h2load $(version h2load --version), $(openssl version 2>/dev/null || echo 'openssl ?')"
    echo "# caching-proxy load benchmark: results"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: $cpu, $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
    echo "- versions: caching-proxy $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') (working tree), $versions"
    echo "- setup: servers pinned to CPU $CPU_SERVER (caching-proxy --threads 1, nginx 1 worker, Varnish defaults with -s malloc,1G); wrk -t1 and the origin pinned to CPU $CPU_CLIENT; $ROUNDS round(s) of every row, each row on every server back to back; ${DURATION} s per row after ${WARMUP} s of warm-up; coalescing rows: $BURST requests at once; Redis rows: redis-server (no persistence, maxmemory 1gb, allkeys-lru) pinned to CPU $CPU_CLIENT"
    if want_any "${TLS_ROWS[@]}"; then
        echo "- TLS rows: caching-proxy's TLS listener (rustls) and nginx's \`listen ... ssl http2\` server with the same ECDSA P-256 certificate, in the processes of the rows above; wrk (HTTPS/1.1, keep-alive) and h2load (-t1) on CPU $CPU_CLIENT"
    fi
    echo "- other work on the machine: CPUs $BUSY_BEFORE% busy in the second before the first row, $(cpu_busy)% after the last (servers idle); much above 0 means the rows are noisy"
    echo
    echo "| row | server | req/s | req/s min–max | p50 ms | p99 ms | p99 min–max | mean ms | max ms | RSS MiB | CPU % | client CPU % | origin fetches | ours/nginx | ours/Varnish |"
    echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    for row in "${DONE_ROWS[@]}"; do
        read -ra servers <<<"${ROW_SERVERS[$row]}"
        for s in "${servers[@]}"; do
            local ratio_n="" ratio_v="" note="" fetches
            rps=${R[$row,$s,rps]}
            if [[ -n ${ADMIN[$s]:-} || $s == lb ]]; then
                # A Redis or load-balancing row: caching-proxy alone, compared in the targets.
                ratio_n=n/a ratio_v=n/a
            elif [[ $rps != - && -n ${PEER_NGINX[$s]:-} ]]; then
                ratio_n=$(ratio_cell "$row" "$s" nginx "${PEER_NGINX[$s]}")
                # Varnish has no TLS: no Varnish line on the TLS rows.
                ratio_v=$(ratio_cell "$row" "$s" varnish "${PEER_VARNISH[$s]:-}")
            fi
            if ((${R[$row,$s,errors]} > 0)); then note=" (${R[$row,$s,errors]} errors)"; fi
            local cpu_cell
            cpu_cell=$(cell %.0f "${R[$row,$s,cpu]}")
            if noisy "$row" "$s"; then cpu_cell+=" ⚠"; fi
            local client_cell
            client_cell=$(cell %.0f "${R[$row,$s,client_cpu]:--}")
            if client_bound "$row" "$s"; then client_cell+=" ⚠"; fi
            fetches=$(calc %.0f "${R[$row,$s,fetches]}")
            if [[ ${R[$row,$s,fetches,min]} != "${R[$row,$s,fetches,max]}" ]]; then
                fetches+=" (${R[$row,$s,fetches,min]}–${R[$row,$s,fetches,max]})"
            fi
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
                "${LABEL[$row]}" "${NAME[$s]}$note" "$(cell %.0f "$rps")" "$(spread %.0f "$row" "$s" rps)" \
                "$(cell %.3f "${R[$row,$s,p50]}")" "$(cell %.3f "${R[$row,$s,p99]}")" \
                "$(spread %.2f "$row" "$s" p99)" \
                "$(cell %.3f "${R[$row,$s,mean]}")" "$(cell %.1f "${R[$row,$s,max]}")" \
                "$(calc %.1f "${R[$row,$s,rss]} / 1024")" "$cpu_cell" "$client_cell" \
                "$fetches" "$ratio_n" "$ratio_v"
        done
    done
    echo
    if ((ROUNDS > 1)); then
        echo "Every figure is the median over the $ROUNDS rounds (in each round every row ran on each of its"
        echo "servers back to back, a different server first each round); min–max: the lowest and"
        echo "highest of the rounds; ratios: of the medians, with the lowest and highest of the"
        echo "per-round ratios in brackets; errors: summed over the rounds."
    else
        echo "One round (ROUNDS=1): each figure is from one run, with no spread; a ratio of one pass is"
        echo "not a measurement on a shared machine (see benches/README.md)."
    fi
    echo "req/s ratios: caching-proxy's req/s over the other server's (higher is better)."
    echo "CPU %: the server's CPU time during the row over the row's wall time (100 = all of CPU"
    echo "$CPU_SERVER). Each server is the bottleneck, so it should be near 100; ⚠ marks less than ${MIN_CPU}%:"
    echo "other work on the machine took the CPU (or the load generator fell behind), so the row is"
    echo "not a fair measure: rerun. Client CPU %: the load generator's CPU time (wrk, h2load,"
    echo "bench_handshakes, bench_rate on CPU $CPU_CLIENT) over the row's wall time; ⚠ marks ${MAX_CLIENT_CPU}% or more"
    echo "in any round: the client, not only the server, was near its core's limit, so that"
    echo "server's req/s is a lower bound and its latencies include the client's own queue."
    echo "Origin fetches: requests the origin received during the"
    echo "measured part of the row (0 for a warm HIT row; one per request on the MISS row). RSS:"
    echo "after the row; nginx's leaves out its cache on tmpfs ($NGINX_SHM_MIB MiB after the last MISS row)."
    echo "caching-proxy, default settings: a second instance with the same cache flags but the"
    echo "default log level (info: one access record per request, JSON on stderr, to a file) and"
    echo "threads (one per CPU: --threads $(nproc --all), as unpinned on this machine; pinned to CPU"
    echo "$CPU_SERVER like the others), where the tuned one runs --threads 1 --log-level warn."
    echo "Coalescing rows: latency of each of the $BURST requests from its own write to the last byte"
    echo "of its answer (p50/p99/mean/max over the $BURST)."
    echo "Redis rows (caching-proxy only, n/a: nginx and Varnish have no shared tier): L2 HIT is"
    echo "--cache-backend redis --redis-l1-max-bytes 0, every hit read from Redis; L1 on is the"
    echo "same backend with its default 64 MiB in-process tier. The 3-proxy row sends its $BURST"
    echo "requests round-robin to three caching-proxy instances (all on CPU $CPU_SERVER) on one Redis,"
    echo "all with Host: $SHARED_HOST (benches/load/burst.py); RSS and CPU are the three summed."
    echo "1 conn (latency) rows: one wrk connection, one request at a time, so p50 is the time of"
    echo "one request through the server (and wrk), not a share of a saturated core; their CPU % is"
    echo "low by design and never marked. The Redis tier's target (an L2 hit within 2× the memory"
    echo "hit's p50) reads these rows first; the 64-connection rows' p50 is mostly queueing."
    if ran rate1k || ran tlsrate1k; then
        echo "Fixed-rate rows: bench_rate (examples/) sends $RATE requests a second over 64 keep-alive"
        echo "connections to every server alike (they leave on whole milliseconds, $((RATE / 1000)) at a time); a"
        echo "request's latency runs from when it left, or from when it was due if its connection was"
        echo "still waiting for the previous answer. req/s is the rate answered (the same for every"
        echo "server that keeps up, so the ratio is near 1); CPU % is the server's share of its core"
        echo "at that load, low by design and never marked."
    fi
    echo "2 origins round robin: the MISS row through an upstream group of two origin processes"
    echo "(both on CPU $CPU_CLIENT) in round robin, from a config file (upstreams/routes) instead of"
    echo "--origin; origin fetches are both origins' together."
    tls_notes
    echo
    echo "## Targets"
    echo
    targets
}

# A cell with a figure's spread over the rounds, "min–max": spread FORMAT ROW SERVER FIELD
# ("-" for a single round or a figure the row's tool does not give).
spread() {
    local f=$1 row=$2 s=$3 field=$4
    if [[ ${R[$row,$s,$field,n]:-0} -le 1 || ${R[$row,$s,$field]} == - ]]; then
        echo -
    else
        echo "$(calc "$f" "${R[$row,$s,$field,min]}")–$(calc "$f" "${R[$row,$s,$field,max]}")"
    fi
}

# A ratio cell: caching-proxy's median req/s over the peer's, and the per-round ratios'
# spread: ratio_cell ROW SERVER nginx|varnish PEER ("n/a" without a peer on the row).
ratio_cell() {
    local row=$1 s=$2 kind=$3 peer=$4 out
    [[ -n $peer && -n ${R[$row,$peer,rps]:-} ]] || { echo n/a; return; }
    out=$(calc "%.2f×" "${R[$row,$s,rps]} / ${R[$row,$peer,rps]}")
    if [[ ${R[$row,$s,rps,n]} -gt 1 && -n ${R[$row,$s,ratio_$kind,min]:-} ]]; then
        out+=" ($(calc %.2f "${R[$row,$s,ratio_$kind,min]}")–$(calc %.2f "${R[$row,$s,ratio_$kind,max]}"))"
    fi
    echo "$out"
}

# A wrk row where the server got less than MIN_CPU % of its core in some round: something
# else ran there.
MIN_CPU=${MIN_CPU:-90}
# Whether a row's client was near its core's limit against a server (in any round): its
# latency figures then include the client's own queue.
MAX_CLIENT_CPU=90
client_bound() {
    local c=${R[$1,$2,client_cpu,max]:--}
    [[ $c != - ]] && ((c >= MAX_CLIENT_CPU))
}

noisy() {
    [[ ${LABEL[$1]} == *"(latency)" || ${LABEL[$1]} == *"fixed "*" req/s" ]] && return 1
    local cpu=${R[$1,$2,cpu,min]:--}
    [[ $cpu != - ]] && ((cpu < MIN_CPU))
}

# A warning for the targets when a row's figures are noisy: noise_note ROW [SERVER...]
# (default: caching-proxy and nginx).
noise_note() {
    local row=$1 s
    shift
    (($#)) || set -- ours nginx
    for s in "$@"; do
        if noisy "$row" "$s"; then
            echo " ⚠ noisy row: rerun"
            return
        fi
    done
}

# met CONDITION: "met" or "NOT met" for an awk condition.
met() { awk "BEGIN { exit !($1) }" && echo "met" || echo "**NOT met**"; }

# The issue's targets, on the medians: every row at least nginx's req/s with p99 no worse,
# the 1 KiB HIT at 1.2× nginx.
targets() {
    local o n row factor
    tls_targets
    for row in hit1k64 hit16k64 hit256k64 hit1k256 miss64; do
        ran "$row" || continue
        factor=1
        [[ $row == hit1k64 ]] && factor=1.2
        o=${R[$row,ours,rps]} n=${R[$row,nginx,rps]}
        echo "- ${LABEL[$row]} ≥ $([[ $factor == 1 ]] || echo "$factor× ")nginx req/s with p99 no worse: $(met "$o >= $factor * $n && ${R[$row,ours,p99]} <= ${R[$row,nginx,p99]}") ($(calc %.0f "$o") vs $(calc %.0f "$n") req/s = $(ratio_cell "$row" ours nginx nginx); p99 ${R[$row,ours,p99]} vs ${R[$row,nginx,p99]} ms)$(noise_note "$row")"
    done
    for row in coalesce coalesce_expired; do
        ran "$row" || continue
        o=${R[$row,ours,mean]}
        echo "- ${LABEL[$row]}: 1 origin fetch, mean within 20 ms of 50 ms: $(met "${R[$row,ours,fetches,min]} == 1 && ${R[$row,ours,fetches,max]} == 1 && $o <= 70") (caching-proxy ${R[$row,ours,fetches]} origin fetch(es), in every round: ${R[$row,ours,fetches,min]}–${R[$row,ours,fetches,max]}, mean $o ms; nginx ${R[$row,nginx,fetches]}, mean ${R[$row,nginx,mean]} ms; Varnish ${R[$row,varnish,fetches]}, mean ${R[$row,varnish,mean]} ms)"
    done
    rate_targets
    echo "- Memory (peak RSS ≤ cache size + 32 MiB): measured by benches/load/memory.sh, see benches/results/memory.md"
    defaults_cost
    redis_targets
    if ran miss64lb && ran miss64; then
        o=${R[miss64lb,lb,rps]} n=${R[miss64,ours,rps]}
        echo "- ${LABEL[miss64lb]}, the load-balancing overhead (no target): $o vs $n req/s with one origin = $(calc %.2f× "$o / $n"); p50 ${R[miss64lb,lb,p50]} vs ${R[miss64,ours,p50]} ms, p99 ${R[miss64lb,lb,p99]} vs ${R[miss64,ours,p99]} ms$({ noise_note miss64lb lb; noise_note miss64 ours; } | sed -n 1p)"
    fi
}

# The fixed-rate rows: the p99 target at one load, the same for both servers (a wrk row's
# p99 is at whatever rate each server reaches, and over TLS wrk's own queue is in it).
rate_targets() {
    local pair row o n
    for pair in rate1k:ours:nginx tlsrate1k:ours_tls:nginx_tls; do
        IFS=: read -r row o n <<<"$pair"
        ran "$row" || continue
        echo "- ${LABEL[$row]}: the rate answered, p99 no worse than nginx's at the same load: $(met "${R[$row,$o,rps]} >= 0.99 * $RATE && ${R[$row,$o,p99]} <= ${R[$row,$n,p99]}") (req/s ${R[$row,$o,rps]} vs ${R[$row,$n,rps]}; p50 ${R[$row,$o,p50]} vs ${R[$row,$n,p50]} ms, p99 ${R[$row,$o,p99]} vs ${R[$row,$n,p99]} ms, p99 range $(spread %.2f "$row" "$o" p99) vs $(spread %.2f "$row" "$n" p99))"
    done
}

# What the default settings cost (no target): the default-settings instance beside the tuned
# one on each row that ran both.
defaults_cost() {
    local row o d
    for row in "${DONE_ROWS[@]}"; do
        [[ " ${ROW_SERVERS[$row]} " == *" ours_default "* ]] || continue
        o=${R[$row,ours,rps]} d=${R[$row,ours_default,rps]}
        echo "- ${LABEL[$row]}, default settings (access log, $(nproc --all) threads) vs tuned (no target): $(calc %.0f "$d") vs $(calc %.0f "$o") req/s = $(calc %.2f× "$d / $o"), $(calc %.2f× "$d / ${R[$row,nginx,rps]}") nginx; p99 ${R[$row,ours_default,p99]} vs ${R[$row,ours,p99]} ms$(noise_note "$row" ours ours_default)"
    done
}

# The Redis tier's targets (from the issue): an L2 hit within 2x the memory hit's latency at
# p50; with L1 on, the memory figures unchanged (here: req/s at least 95% and p50 at most
# 105% of the memory backend's, about the noise between two runs). And the 3-proxy burst
# should reach the origin once.
redis_targets() {
    local row mem o m
    for row in l2hit1k1 l2hit256k1 l2hit1k l2hit256k; do
        mem=${MEMORY_ROW[$row]}
        { ran "$row" && ran "$mem"; } || continue
        o=${R[$row,l2,p50]} m=${R[$mem,ours,p50]}
        echo "- ${LABEL[$row]}: p50 within 2× the memory HIT's: $(met "$o <= 2 * $m") ($o vs $m ms = $(calc %.2f× "$o / $m"); req/s ${R[$row,l2,rps]} vs ${R[$mem,ours,rps]} = $(calc %.2f× "${R[$row,l2,rps]} / ${R[$mem,ours,rps]}"); p99 ${R[$row,l2,p99]} vs ${R[$mem,ours,p99]} ms; Redis hits ${R[$row,l2,l2hits]} of ${R[$row,l2,requests]} requests, ${R[$row,l2,l2errors]} Redis errors)"
    done
    row=l1hit1k mem=${MEMORY_ROW[l1hit1k]}
    if ran "$row" && ran "$mem"; then
        o=${R[$row,l1,rps]} m=${R[$mem,ours,rps]}
        echo "- ${LABEL[$row]}: the memory backend's figures unchanged (req/s ≥ 95%, p50 ≤ 105% of theirs): $(met "$o >= 0.95 * $m && ${R[$row,l1,p50]} <= 1.05 * ${R[$mem,ours,p50]}") ($o vs $m req/s = $(calc %.2f× "$o / $m"); p50 ${R[$row,l1,p50]} vs ${R[$mem,ours,p50]} ms, p99 ${R[$row,l1,p99]} vs ${R[$mem,ours,p99]} ms; Redis hits during the row ${R[$row,l1,l2hits]})$({ noise_note "$row" l1; noise_note "$mem" ours; } | sed -n 1p)"
    fi
    row=shared mem=${MEMORY_ROW[shared]}
    { ran "$row" && ran "$mem"; } || return 0
    echo "- ${LABEL[$row]}: 1 origin fetch: $(met "${R[$row,shared,fetches]} == 1") (${R[$row,shared,fetches]} origin fetch(es), mean ${R[$row,shared,mean]} ms, p99 ${R[$row,shared,p99]} ms; one caching-proxy, memory backend: ${R[$mem,ours,fetches]}, mean ${R[$mem,ours,mean]} ms, p99 ${R[$mem,ours,p99]} ms)"
}

# caching-proxy with its default log level and thread count (the main rows' second
# caching-proxy line). The default thread count is one per CPU the process may use: pinned
# to one CPU it would be 1, so the machine's count is given, as an unpinned instance with
# the defaults would have.
start_default_proxy() {
    DEFAULT_SETTINGS=1 start_proxy defaults "${PROXY_FLAGS[@]}" --threads "$(nproc --all)"
    PORT[ours_default]=$PROXY_PORT PID[ours_default]=$PROXY_PID
}

# caching-proxy in front of two origins in round robin (needs start_origin twice): an upstream
# group from a config file, no --origin.
start_lb_proxy() {
    cat >"$WORK/lb.yaml" <<EOF
# caching-proxy load benchmark: two origins in round robin (written by benches/load/run.sh)
upstreams:
  pair:
    servers: ["127.0.0.1:${ORIGIN_PORTS[0]}", "127.0.0.1:${ORIGIN_PORTS[1]}"]
    selection: round_robin
routes:
  - upstream: pair
EOF
    NO_ORIGIN=1 start_proxy lb "${PROXY_FLAGS[@]}" --config "$WORK/lb.yaml"
    PORT[lb]=$PROXY_PORT PID[lb]=$PROXY_PID
}

# One round: every row asked for, in order, each on its servers back to back (ids for ROWS).
run_rows() {
    # Each Redis row right after the memory row it compares with.
    want hit1k64 && wrk_row hit1k64 "HIT 1 KiB, 64 conns" /1k 64 hit "${MAIN_SERVERS[@]}"
    want l2hit1k && wrk_row l2hit1k "L2 HIT 1 KiB, 64 conns" /1k 64 hit l2
    want l1hit1k && wrk_row l1hit1k "Redis backend, L1 on, HIT 1 KiB, 64 conns" /1k 64 hit l1
    want hit16k64 && wrk_row hit16k64 "HIT 16 KiB, 64 conns" /16k 64 hit "${MAIN_SERVERS[@]}"
    want hit256k64 && wrk_row hit256k64 "HIT 256 KiB, 64 conns" /256k 64 hit "${MAIN_SERVERS[@]}"
    want l2hit256k && wrk_row l2hit256k "L2 HIT 256 KiB, 64 conns" /256k 64 hit l2
    # Latency with one connection: the time of one request, not a core's throughput; the
    # Redis tier's target compares these p50s (a saturated row's p50 is mostly queueing).
    want hit1k1 && wrk_row hit1k1 "HIT 1 KiB, 1 conn (latency)" /1k 1 hit ours nginx
    want l2hit1k1 && wrk_row l2hit1k1 "L2 HIT 1 KiB, 1 conn (latency)" /1k 1 hit l2
    want hit256k1 && wrk_row hit256k1 "HIT 256 KiB, 1 conn (latency)" /256k 1 hit ours nginx
    want l2hit256k1 && wrk_row l2hit256k1 "L2 HIT 256 KiB, 1 conn (latency)" /256k 1 hit l2
    want hit1k256 && wrk_row hit1k256 "HIT 1 KiB, 256 conns" /1k 256 hit "${MAIN_SERVERS[@]}"
    # Far more ready connections than a worker's run queue holds (256): whether they are
    # served in turn (p99 near p50) or some wait while others are served.
    want hit1k1000 && wrk_row hit1k1000 "HIT 1 KiB, 1000 conns" /1k 1000 hit ours ours_default nginx
    # Every server the same load: p99 as the answer to it, not to as much as it takes.
    want rate1k && rate_row rate1k "HIT 1 KiB, 64 conns, fixed $RATE req/s" /1k 64 "${MAIN_SERVERS[@]}"
    want miss64 && wrk_row miss64 "MISS 1 KiB (unique URLs), 64 conns" /1k 64 miss "${MAIN_SERVERS[@]}"
    want miss64lb && wrk_row miss64lb "MISS 1 KiB (unique URLs), 64 conns, 2 origins round robin" /1k 64 miss lb
    want coalesce && burst_row coalesce "Coalescing: $BURST at once, uncached /slow (50 ms)" fresh
    want shared && burst_row shared "3-proxy shared MISS: $BURST at once over 3 proxies, uncached /slow (50 ms)" fresh shared
    want coalesce_expired && burst_row coalesce_expired "Coalescing: $BURST at once, just-expired /slow-expiring (50 ms)" expired
    # TLS at the edge: caching-proxy's TLS listener beside nginx's, same certificate.
    want tlshit1k && wrk_row tlshit1k "HTTPS/1.1 HIT 1 KiB, 64 keep-alive conns" /1k 64 hit ours_tls nginx_tls
    want tlsrate1k && rate_row tlsrate1k "HTTPS/1.1 HIT 1 KiB, 64 keep-alive conns, fixed $RATE req/s" /1k 64 ours_tls nginx_tls
    want h2hit1k && h2load_row h2hit1k "HTTP/2 HIT 1 KiB, 64 conns × 10 streams" /1k 64 10 ours_tls nginx_tls
    want handshake && handshake_row handshake "New TLS 1.3 handshakes, 1 request each" /1k ours_tls nginx_tls
    return 0
}

main() {
    local t0=$SECONDS
    ensure_packages
    build
    local t1=$SECONDS
    SHM_DIR=$(mktemp -d /dev/shm/caching-proxy-bench.XXXXXX 2>/dev/null || mktemp -d "$WORK/shm.XXXXXX")
    start_origin
    local tls_flags=()
    if want_any "${TLS_ROWS[@]}"; then
        make_tls_certificate
        read -r TLS_PORT NGINX_TLS_PORT <<<"$(free_ports 2)"
        tls_flags=(--tls-host 127.0.0.1 --tls-port "$TLS_PORT" --tls-cert "$TLS_CERT" --tls-key "$TLS_KEY")
    fi
    start_proxy proxy "${PROXY_FLAGS[@]}" "${tls_flags[@]}"
    PORT[ours]=$PROXY_PORT PID[ours]=$PROXY_PID
    PORT[ours_tls]=${TLS_PORT:-} PID[ours_tls]=$PROXY_PID
    local ours_admin=$PROXY_ADMIN_PORT
    if want_any hit1k64 hit16k64 hit256k64 hit1k256 hit1k1000 rate1k miss64; then
        start_default_proxy
    fi
    start_nginx
    PORT[nginx]=$NGINX_PORT PID[nginx]=$NGINX_PID
    PORT[nginx_tls]=${NGINX_TLS_PORT:-} PID[nginx_tls]=$NGINX_PID
    # Varnish and the Redis tier only for the rows that use them.
    if want_any hit1k64 hit16k64 hit256k64 hit1k256 rate1k miss64 coalesce coalesce_expired; then
        start_varnish
        PORT[varnish]=$VARNISH_PORT PID[varnish]=$VARNISH_PID
    fi
    if want_any l2hit1k l1hit1k l2hit256k l2hit1k1 l2hit256k1 shared; then
        start_redis
        start_redis_proxies
    fi
    if want miss64lb; then
        start_origin
        start_lb_proxy
    fi
    BUSY_BEFORE=$(cpu_busy)
    log "origins :${ORIGIN_PORTS[*]}, caching-proxy :${PORT[ours]} (admin :$ours_admin, TLS :${TLS_PORT:--}), nginx :$NGINX_PORT (TLS :${NGINX_TLS_PORT:--}), Varnish :${VARNISH_PORT:--}, redis-server :${REDIS_PORT:--}, caching-proxy on Redis: L1 off :${PORT[l2]:--}, L1 on :${PORT[l1]:--}, three :${PORT[shared]:--}, 2 origins round robin :${PORT[lb]:--}; work dir $WORK"

    for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
        log "round $ROUND of $ROUNDS"
        run_rows
    done
    NGINX_SHM_MIB=$(du -sm "$SHM_DIR/nginx-cache" | cut -f1)
    ((${#DONE_ROWS[@]})) || die "ROWS=\"$ROW_FILTER\" names no row"
    summarise

    if [[ -n $RESULTS ]]; then
        mkdir -p "$(dirname "$RESULTS")"
        report | tee "$RESULTS"
        log "done in $((SECONDS - t0)) s ($((SECONDS - t1)) s without the build); written to $RESULTS"
    else
        report
        log "done in $((SECONDS - t0)) s ($((SECONDS - t1)) s without the build); a partial run: no results file"
    fi
}

main "$@"
