# shellcheck shell=bash disable=SC2034
# (SC2034: the variables set here are read by run.sh and memory.sh.)
#
# Shared by run.sh and memory.sh (sourced, not run): packages, build, ports, the processes
# a run starts (origin, caching-proxy, redis-server) and how they are stopped, readiness,
# RSS, wrk output.
#
# Every server binds 127.0.0.1 only. Every process started here is recorded in PIDS and
# stopped on exit (TERM, then KILL after 5 s), together with its descendants.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOAD_DIR="$ROOT/benches/load"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# PROXY_BIN=PATH benchmarks another build of caching-proxy (the build step still runs).
PROXY_BIN=${PROXY_BIN:-$TARGET_DIR/release/caching-proxy}
ORIGIN_BIN="$TARGET_DIR/release/examples/bench_origin"
BURST_BIN="$TARGET_DIR/release/examples/bench_burst"
HANDSHAKE_BIN="$TARGET_DIR/release/examples/bench_handshakes"
RATE_BIN="$TARGET_DIR/release/examples/bench_rate"
# Servers on one core, the load generator and the origin on the other.
CPU_SERVER=${CPU_SERVER:-0}
CPU_CLIENT=${CPU_CLIENT:-1}
export PATH="$PATH:/usr/sbin:/sbin"

PIDS=()
WORK=$(mktemp -d /tmp/caching-proxy-bench.XXXXXX)
# nginx's cache directory, on tmpfs.
SHM_DIR=""

log() { echo "[bench $(date +%T)] $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# The descendants of a process, deepest last (nginx workers, the varnish child).
descendants() {
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}

cleanup() {
    local rc=$? pid all=()
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        # shellcheck disable=SC2207 # pids: one word each
        all+=("$pid" $(descendants "$pid"))
    done
    if ((${#all[@]})); then
        kill -TERM "${all[@]}" 2>/dev/null || true
        for pid in "${all[@]}"; do
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
        done
        wait 2>/dev/null || true
    fi
    # KEEP_WORK=DIR keeps the run's files (logs, the soak's request records) for a look.
    if [[ -n ${KEEP_WORK:-} ]]; then rm -rf "$KEEP_WORK" && cp -r "$WORK" "$KEEP_WORK"; fi
    rm -rf "$WORK"
    if [[ -n $SHM_DIR ]]; then rm -rf "$SHM_DIR"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Installs what is missing: nginx-light (or nginx), varnish, redis-server (with redis-cli),
# wrk, taskset, curl, jq, python3 (benches/load/burst.py), h2load (nghttp2-client) and
# openssl (the TLS rows). The packages may start their
# distribution services (port 80, 6081, 6379): those are stopped right away, the benchmark
# runs its own instances.
ensure_packages() {
    local missing=() installed_servers=()
    command -v nginx >/dev/null || missing+=(nginx)
    command -v varnishd >/dev/null || missing+=(varnish)
    { command -v redis-server && command -v redis-cli; } >/dev/null || missing+=(redis-server)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v curl >/dev/null || missing+=(curl)
    command -v jq >/dev/null || missing+=(jq)
    command -v python3 >/dev/null || missing+=(python3)
    command -v h2load >/dev/null || missing+=(nghttp2-client)
    command -v openssl >/dev/null || missing+=(openssl)
    ((${#missing[@]})) || return 0
    [[ $(id -u) == 0 ]] || die "missing ${missing[*]}: install them (apt-get install) or run as root"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    local i
    for i in "${!missing[@]}"; do
        if [[ ${missing[$i]} == nginx ]]; then
            installed_servers+=(nginx)
            if apt-cache show nginx-light >/dev/null 2>&1; then missing[i]=nginx-light; fi
        fi
        [[ ${missing[$i]} == varnish ]] && installed_servers+=(varnish varnishncsa)
        [[ ${missing[$i]} == redis-server ]] && installed_servers+=(redis-server)
    done
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    for i in "${installed_servers[@]}"; do
        service "$i" stop >/dev/null 2>&1 || true
    done
}

build() {
    log "building caching-proxy and the bench examples (release)"
    (cd "$ROOT" && cargo build --release --locked -q &&
        cargo build --release --locked -q --example bench_origin --example bench_burst --example bench_handshakes --example bench_rate)
}

# N distinct free ports on 127.0.0.1, drawn at random from 10000-19999: below the kernel's
# ephemeral range (used by wrk's many outgoing connections) and away from the 20000-31999
# the test suite draws from. Called as $(free_ports N), so it remembers nothing: start each
# server and wait until it listens before choosing the next ports.
free_ports() {
    local n=$1 used port got=" "
    # Local ports in use, in the hex of /proc/net/tcp.
    used=" $(awk 'NR > 1 { split($2, a, ":"); printf "%s ", a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null) "
    while (($(wc -w <<<"$got") < n)); do
        port=$((10000 + RANDOM % 10000))
        [[ $used == *" $(printf %04X "$port") "* || $got == *" $port "* ]] && continue
        got+="$port "
    done
    got=${got# }
    echo "${got% }"
}

# Waits until URL answers (any HTTP status), at most $2 seconds.
wait_http() {
    local url=$1 limit=${2:-30} i
    for ((i = 0; i < limit * 10; i++)); do
        if curl -s -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.1
    done
    die "$url did not answer within ${limit}s"
}

# Starts a command in the background on a CPU, records its pid in PIDS and LAST_PID.
# (A function's `$!` cannot be read by the caller through $(...), hence the global.)
spawn() {
    local cpu=$1 logfile=$2
    shift 2
    taskset -c "$cpu" "$@" >"$logfile" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# Starts an origin on the client CPU. Called again, it starts one more (for an upstream group
# of several servers): ORIGIN_PORT is the first one's port, ORIGIN_PORTS every origin's, and
# origin_count sums over all of them.
ORIGIN_PORTS=()
start_origin() {
    local port n=${#ORIGIN_PORTS[@]}
    port=$(free_ports 1)
    spawn "$CPU_CLIENT" "$WORK/origin-$n.log" "$ORIGIN_BIN" "$port"
    wait_http "http://127.0.0.1:$port/__stats" 10
    ORIGIN_PORTS+=("$port")
    ORIGIN_PORT=${ORIGIN_PORTS[0]}
}

# Starts caching-proxy in front of the origin: start_proxy NAME [extra flags...]. NAME keeps
# each instance's log ($WORK/NAME.log), pid file and upgrade socket apart. Sets PROXY_PORT,
# PROXY_ADMIN_PORT, PROXY_PID. With NO_ORIGIN=1 there is no --origin: the extra flags give a
# config file with the proxy's upstreams and routes. The benchmark's tuning is one thread
# (the server has one core) and log level BENCH_LOG_LEVEL (warn: no access log); with
# DEFAULT_SETTINGS=1 both stay at caching-proxy's defaults (the extra flags may still name a
# thread count).
start_proxy() {
    local name=$1 origin=(--origin "http://127.0.0.1:$ORIGIN_PORT") tuning=(--threads 1 --log-level "${BENCH_LOG_LEVEL:-warn}")
    shift
    if [[ ${NO_ORIGIN:-} == 1 ]]; then origin=(); fi
    if [[ ${DEFAULT_SETTINGS:-} == 1 ]]; then tuning=(); fi
    read -r PROXY_PORT PROXY_ADMIN_PORT <<<"$(free_ports 2)"
    spawn "$CPU_SERVER" "$WORK/$name.log" "$PROXY_BIN" \
        --host 127.0.0.1 --port "$PROXY_PORT" \
        --admin-host 127.0.0.1 --admin-port "$PROXY_ADMIN_PORT" \
        "${origin[@]}" "${tuning[@]}" \
        --pid-file "$WORK/$name.pid" --upgrade-sock "$WORK/$name.sock" \
        "$@"
    PROXY_PID=$LAST_PID
    local i
    for ((i = 0; i < 300; i++)); do
        if curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$PROXY_ADMIN_PORT/health/ready"; then
            return 0
        fi
        kill -0 "$PROXY_PID" 2>/dev/null || { cat "$WORK/$name.log" >&2; die "caching-proxy $name exited"; }
        sleep 0.1
    done
    die "caching-proxy $name not ready within 30s"
}

# Starts redis-server for the Redis tier, on the client CPU as the origin (it is a backend of
# the proxy, not the server under test): no persistence, 1 GiB with LRU eviction. Sets
# REDIS_PORT, REDIS_PID.
start_redis() {
    REDIS_PORT=$(free_ports 1)
    mkdir -p "$WORK/redis"
    spawn "$CPU_CLIENT" "$WORK/redis.log" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
        --save "" --appendonly no --maxmemory 1gb --maxmemory-policy allkeys-lru \
        --dir "$WORK/redis"
    REDIS_PID=$LAST_PID
    # Ready when it answers, and it is ours (not another server that took the port first).
    local i
    for ((i = 0; i < 100; i++)); do
        if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server 2>/dev/null |
            grep -q "^process_id:$REDIS_PID"$'\r'; then
            return 0
        fi
        kill -0 "$REDIS_PID" 2>/dev/null || { cat "$WORK/redis.log" >&2; die "redis-server exited"; }
        sleep 0.1
    done
    die "redis-server not ready within 10s"
}

# Resident set of a process and its descendants, in KiB (VmRSS, or VmHWM with $2=VmHWM).
rss_kib() {
    local field=${2:-VmRSS} pid total=0 v
    for pid in "$1" $(descendants "$1"); do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# Memory of caching-proxy's body file (large cached bodies, a memfd), in KiB: shared memory
# that VmRSS shows only for the pages read through its mapping, so memory figures add it.
body_file_kib() {
    local fd blocks total=0
    for fd in /proc/"$1"/fd/*; do
        [[ $(readlink "$fd" 2>/dev/null) == /memfd:caching-proxy-bodies* ]] || continue
        blocks=$(stat -L -c %b "$fd" 2>/dev/null || echo 0)
        total=$((total + blocks / 2))
    done
    echo "$total"
}

# CPU time of a process and its descendants so far, in clock ticks (utime + stime).
cpu_ticks() {
    local pid total=0 v
    for pid in "$1" $(descendants "$1"); do
        # Fields after the command name: state is $1, utime $12, stime $13.
        v=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }' || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# CPU ticks of this script's finished children (cutime + cstime of the main shell: a load
# generator run and waited for counts once it has exited). The difference around one client
# run is the client's CPU time: whether the load generator, not the server, was the limit.
client_ticks() {
    sed 's/.*) //' "/proc/$$/stat" | awk '{ print $14 + $15 }'
}

# How busy the machine's CPUs are over one second, in percent (both CPUs together). Work
# that is not the benchmark's (a compile, say) skews every row, so the reports record it.
cpu_busy() {
    local s1 s2
    s1=$(head -1 /proc/stat)
    sleep 1
    s2=$(head -1 /proc/stat)
    # cpu user nice system idle iowait irq softirq steal ...
    awk -v a="$s1" -v b="$s2" 'BEGIN {
        split(a, x); split(b, y)
        for (i = 2; i <= 9; i++) total += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.0f", total ? 100 * (total - idle) / total : 0
    }'
}

# Nanoseconds since the epoch.
now_ns() { date +%s%N; }

# Origin request counts, summed over every origin: origin_count     -> all requests
#                                                  origin_count URL -> requests for one slow URL
origin_count() {
    local port stats n total=0
    for port in "${ORIGIN_PORTS[@]}"; do
        stats=$(curl -s --max-time 5 "http://127.0.0.1:$port/__stats")
        if (($# == 0)); then
            n=$(jq -r '.total' <<<"$stats")
        else
            n=$(jq -r --arg u "$1" '.urls[$u] // 0' <<<"$stats")
        fi
        total=$((total + n))
    done
    echo "$total"
}

# Runs wrk on the client CPU: run_wrk OUTFILE CONNECTIONS SECONDS URL [wrk args...]
run_wrk() {
    local out=$1 conns=$2 secs=$3 url=$4
    shift 4
    taskset -c "$CPU_CLIENT" timeout $((secs + 20)) \
        wrk -t1 -c "$conns" -d "${secs}s" --timeout 5s --latency "$@" "$url" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk failed against $url"; }
}

# bench_rate at URL with CONNECTIONS for WARMUP + DURATION s at RATE req/s: run_rate OUT URL
# CONNECTIONS; prints its JSON line.
run_rate() {
    local out=$1
    taskset -c "$CPU_CLIENT" timeout $((DURATION + WARMUP + 30)) \
        "$RATE_BIN" "$2" "$3" "$RATE" "$DURATION" "$WARMUP" >"$out" 2>&1 ||
        { cat "$out" >&2; die "bench_rate failed: $*"; }
    cat "$out"
}

# Reads wrk's output: prints "req_s p50_ms p99_ms mean_ms max_ms errors" (errors = socket
# errors plus non-2xx/3xx answers).
parse_wrk() {
    awk '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /m$/) return substr(v, 1, length(v) - 1) * 60000
            if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
            return v + 0
        }
        $1 == "Latency" && NF >= 5 { mean = ms($2); max = ms($4) }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        $1 == "Requests/sec:" { rps = $2 }
        /Non-2xx or 3xx responses:/ { errors += $NF }
        /Socket errors:/ { for (i = 3; i <= NF; i += 2) { v = $(i + 1); gsub(",", "", v); errors += v } }
        END { printf "%.0f %.3f %.3f %.3f %.3f %d\n", rps, p50, p99, mean, max, errors }
    ' "$1"
}
