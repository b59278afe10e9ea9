# shellcheck shell=bash disable=SC2034
# (SC2034: the variables set here are read by run.sh.)
#
# The TLS rows of run.sh (sourced, not run): caching-proxy's TLS listener beside nginx's
# `listen ... ssl http2` server, both in the processes of the plain rows (same cache setup,
# same origin), with one ECDSA P-256 certificate made for the run.
#
#   tlshit1k   1 KiB HIT over HTTPS/1.1, 64 keep-alive connections (wrk)
#   tlsrate1k  the same at a fixed rate, RATE requests a second for every server (bench_rate)
#   h2hit1k    1 KiB HIT over HTTP/2, 64 connections x 10 streams (h2load)
#   handshake  new TLS 1.3 connections, one request each (bench_handshakes): handshakes per
#              second and the server's CPU time per handshake

TLS_ROWS=(tlshit1k tlsrate1k h2hit1k handshake)
# Connections in flight at once in the handshake row (each one new connection after the other).
HANDSHAKE_CONNECTIONS=${HANDSHAKE_CONNECTIONS:-64}

# A self-signed ECDSA P-256 certificate for localhost and 127.0.0.1: sets TLS_CERT, TLS_KEY.
make_tls_certificate() {
    TLS_CERT="$WORK/tls.crt" TLS_KEY="$WORK/tls.key"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$TLS_KEY" -out "$TLS_CERT" 2>/dev/null || die "openssl could not make a certificate"
}

# nginx's TLS listener, in the server block of the plain one (same cache): nothing when no
# TLS row runs. Session tickets off: caching-proxy (rustls as Pingora sets it up) does not
# issue stateless tickets either; h2load resumes no session anyway.
nginx_tls_listen() {
    [[ -n ${NGINX_TLS_PORT:-} ]] || return 0
    cat <<EOF
        listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
        ssl_certificate $TLS_CERT;
        ssl_certificate_key $TLS_KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
EOF
}

# h2load's durations (115us, 25.33ms, 1.02s) in ms.
h2load_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) printf "%.3f", substr(v, 1, length(v) - 2) / 1000
        else if (v ~ /ms$/) printf "%.3f", substr(v, 1, length(v) - 2)
        else if (v ~ /s$/) printf "%.3f", substr(v, 1, length(v) - 1) * 1000
        else printf "%.3f", v
    }'
}

# Reads h2load's output: prints "req_s succeeded errors mean_ms max_ms connect_mean_ms
# connect_max_ms protocol" (errors: failed, errored, timed out, or 4xx/5xx).
parse_h2load() {
    local rps ok errors mean max cmean cmax proto
    rps=$(awk '$1 == "finished" { print $4 }' "$1")
    read -r ok errors < <(awk '$1 == "requests:" { print $8, $10 + $12 + $14 }' "$1")
    errors=$((errors + $(awk '$1 == "status" && $2 == "codes:" { print $7 + $9 }' "$1")))
    read -r mean max < <(awk '$1 == "time" && $3 == "request:" { print $6, $5 }' "$1")
    read -r cmean cmax < <(awk '$1 == "time" && $3 == "connect:" { print $6, $5 }' "$1")
    proto=$(awk -F': ' '/^TLS Protocol/ { print $2 }' "$1")
    echo "${rps:-0} ${ok:-0} $errors $(h2load_ms "${mean:-0}") $(h2load_ms "${max:-0}") $(h2load_ms "${cmean:-0}") $(h2load_ms "${cmax:-0}") ${proto:-none}"
}

# Runs h2load on the client CPU: run_h2load OUTFILE TIMEOUT_S h2load-args...
run_h2load() {
    local out=$1 limit=$2
    shift 2
    taskset -c "$CPU_CLIENT" timeout "$limit" h2load -t1 "$@" >"$out" 2>&1 ||
        { cat "$out" >&2; die "h2load failed: $*"; }
}

# An HTTP/2 HIT row: h2load_row ROW LABEL PATH CONNECTIONS STREAMS SERVER...
h2load_row() {
    local row=$1 label=$2 path=$3 conns=$4 streams=$5 s url before after ticks t0 cpu c0 wall
    local rps ok errors mean max cmean cmax proto
    shift 5
    begin_row "$row" "$label" "$@"
    for s in "${ORDER[@]}"; do
        url="https://127.0.0.1:${PORT[$s]}$path"
        curl -sk --http2 -o /dev/null "$url"
        curl -sk --http2 -o /dev/null "$url"
        before=$(origin_count)
        ticks=$(server_ticks "$s") c0=$(client_ticks) t0=$(now_ns)
        run_h2load "$WORK/$row-$s.txt" $((DURATION + WARMUP + 30)) \
            -c "$conns" -m "$streams" -D "$DURATION" --warm-up-time "$WARMUP" "$url"
        wall=$(calc %.6f "($(now_ns) - $t0) / 1e9")
        cpu=$(cpu_percent "$(server_ticks "$s") - $ticks" "$wall")
        after=$(origin_count)
        read -r rps ok errors mean max cmean cmax proto < <(parse_h2load "$WORK/$row-$s.txt")
        [[ $proto == TLSv1.3 ]] || log "$row ${NAME[$s]}: negotiated $proto"
        put "$row" "$s" requests "$ok"
        # h2load gives no percentiles: p50 and p99 are "-".
        record "$row" "$s" "$(calc %.0f "$rps")" - - "$mean" "$max" "$(server_rss "$s")" \
            $((after - before)) "$errors" "$cpu" \
            "$(cpu_percent "$(client_ticks) - $c0" "$wall")"
    done
}

# The handshake row: handshake_row ROW LABEL PATH SERVER... For DURATION seconds,
# HANDSHAKE_CONNECTIONS connections at a time, each a new TLS 1.3 connection (no resumption,
# HTTP/1.1, one request with Connection: close) made by bench_handshakes on the client CPU.
# req/s is handshakes per second (connections answered 200); p50/p99/mean/max the time to
# connect (TCP and TLS).
handshake_row() {
    local row=$1 label=$2 path=$3 s addr before after ticks t0 cpu wall cpu_ms json total c0
    shift 3
    begin_row "$row" "$label" "$@"
    for s in "${ORDER[@]}"; do
        addr="127.0.0.1:${PORT[$s]}"
        curl -sk -o /dev/null "https://$addr$path"
        if ((WARMUP > 0)); then
            run_handshakes "$WORK/$row-$s-warmup.json" "$addr" "$path" "$WARMUP" >/dev/null
        fi
        before=$(origin_count)
        ticks=$(server_ticks "$s") c0=$(client_ticks) t0=$(now_ns)
        json=$(run_handshakes "$WORK/$row-$s.json" "$addr" "$path" "$DURATION")
        wall=$(calc %.3f "($(now_ns) - $t0) / 1e9")
        ticks=$(($(server_ticks "$s") - ticks))
        after=$(origin_count)
        [[ $(jq -r '.versions | keys | join(",")' <<<"$json") == TLSv1.3 ]] ||
            die "$row ${NAME[$s]}: not all TLS 1.3: $json"
        total=$(jq -r .handshakes <<<"$json")
        cpu=$(cpu_percent "$ticks" "$wall")
        cpu_ms=$(calc %.3f "1000 * $ticks / $CLK_TCK / ($total > 0 ? $total : 1)")
        put "$row" "$s" requests "$total"
        put "$row" "$s" cpu_ms "$cpu_ms"
        log "$row ${NAME[$s]}: $json; server CPU $cpu_ms ms per handshake"
        record "$row" "$s" "$(jq -r .rate <<<"$json")" \
            "$(jq -r .p50_ms <<<"$json")" "$(jq -r .p99_ms <<<"$json")" \
            "$(jq -r .mean_ms <<<"$json")" "$(jq -r .max_ms <<<"$json")" \
            "$(server_rss "$s")" $((after - before)) "$(jq -r .errors <<<"$json")" "$cpu" \
            "$(cpu_percent "$(client_ticks) - $c0" "$wall")"
    done
}

# Runs bench_handshakes on the client CPU and prints its JSON line:
# run_handshakes OUTFILE ADDR PATH SECONDS
run_handshakes() {
    local out=$1
    taskset -c "$CPU_CLIENT" timeout $(($4 + 30)) \
        "$HANDSHAKE_BIN" "$2" "$3" "$HANDSHAKE_CONNECTIONS" "$4" >"$out" 2>&1 ||
        { cat "$out" >&2; die "bench_handshakes failed: $*"; }
    cat "$out"
}

# The TLS rows' part of the notes under the table (nothing when none ran).
tls_notes() {
    want_any "${TLS_ROWS[@]}" || return 0
    echo "TLS rows (caching-proxy beside nginx, n/a: Varnish has no TLS): the same servers as the"
    echo "plain rows, on their TLS listeners, with one ECDSA P-256 certificate. HTTPS/1.1: wrk, 64"
    echo "keep-alive connections. HTTP/2: h2load -t1 -c64 -m10 (no percentiles: p50/p99 are -; mean"
    echo "and max per request). Handshakes: bench_handshakes (examples/), $HANDSHAKE_CONNECTIONS connections at a"
    echo "time, each new: TLS 1.3, no resumption, one HTTP/1.1 request with Connection: close; req/s"
    echo "is handshakes per second, p50/p99/mean/max the time to connect (TCP + TLS). The client"
    echo "checks no certificate or signature, the least work a TLS 1.3 client can do, so the"
    echo "server is the bottleneck (CPU % near 100; below 90 is flagged ⚠)."
}

# The TLS targets (from the issue): at least nginx's req/s on each row, and the CPU cost of
# a handshake.
tls_targets() {
    local row o n
    for row in tlshit1k h2hit1k handshake; do
        ran "$row" || continue
        o=${R[$row,ours_tls,rps]} n=${R[$row,nginx_tls,rps]}
        echo "- ${LABEL[$row]} ≥ nginx: $(met "$o >= $n") ($(calc %.0f "$o") vs $(calc %.0f "$n") req/s = $(ratio_cell "$row" ours_tls nginx nginx_tls))$(noise_note "$row" ours_tls nginx_tls)"
    done
    if ran handshake; then
        echo "- Server CPU per new TLS 1.3 handshake (with its one request): caching-proxy ${R[handshake,ours_tls,cpu_ms]} ms, nginx ${R[handshake,nginx_tls,cpu_ms]} ms ($(calc %.2f× "${R[handshake,ours_tls,cpu_ms]} / ${R[handshake,nginx_tls,cpu_ms]}"))"
    fi
}
