#!/usr/bin/env python3
"""N requests for one URL at the same moment, spread over several proxies, all with one
Host header: the multi-proxy coalescing row of benches/load/run.sh.

examples/bench_burst.rs does the same against one address and sends that address as the
Host. The cache key includes the Host, so proxies on different ports share an entry only
when every request names the same host: this sends HOST to every address. Otherwise it
measures as bench_burst does, so that the two rows compare: all N connections are opened
first (request i to ADDR i mod the number of addresses), then every request is written at
once, each timed from its own write to the last byte of its answer, and it prints the same
JSON line: {"requests", "ok", "errors", "mean_ms", "p50_ms", "p99_ms", "max_ms", "min_ms",
"statuses", "x_cache"}.

Run: python3 benches/load/burst.py bench.test /slow?key=K 200 127.0.0.1:P1 127.0.0.1:P2
Standard library only; one thread (epoll).
"""

import json
import math
import selectors
import socket
import sys
import time

# Bound on the whole burst, connecting included (as bench_burst).
TIMEOUT_S = 30.0


class Fetch:
    """One request on its own connection, and what has come back so far."""

    def __init__(self, sock, request):
        self.sock = sock
        self.request = request
        self.buf = bytearray()
        self.start = 0.0
        self.head_len = None
        self.body_len = None
        self.status = 0
        self.x_cache = "-"

    def parse_head(self):
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                self.body_len = int(value.strip())
            elif name == "x-cache":
                self.x_cache = value.strip()
        self.head_len = end + 4

    def complete(self):
        return (
            self.head_len is not None
            and self.body_len is not None
            and len(self.buf) >= self.head_len + self.body_len
        )


def burst(host, target, n, addrs):
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    ).encode()
    deadline = time.monotonic() + TIMEOUT_S
    fetches = []
    for i in range(n):
        sock = socket.create_connection(addrs[i % len(addrs)], timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        fetches.append(Fetch(sock, request))
    sel = selectors.DefaultSelector()
    # A request of ~80 bytes fits in an empty socket buffer: one send writes it whole.
    for f in fetches:
        f.start = time.perf_counter()
        f.sock.send(f.request)
        sel.register(f.sock, selectors.EVENT_READ, f)
    elapsed, statuses, x_cache, errors = [], {}, {}, 0
    pending = n
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            sys.exit("burst took longer than 30 s")
        for key, _ in sel.select(left):
            f = key.data
            try:
                data = f.sock.recv(65536)
            except ConnectionError:
                data, failed = b"", True
            else:
                failed = False
            now = time.perf_counter()
            f.buf += data
            if f.head_len is None:
                f.parse_head()
            done = f.complete() or not data
            if not done:
                continue
            # Closed before the end of a Content-Length body, or before the head: an error.
            # Without Content-Length the answer ends with the connection (Connection: close).
            if failed or f.head_len is None or (f.body_len is not None and not f.complete()):
                errors += 1
            else:
                statuses[str(f.status)] = statuses.get(str(f.status), 0) + 1
                x_cache[f.x_cache] = x_cache.get(f.x_cache, 0) + 1
                elapsed.append((now - f.start) * 1000.0)
            sel.unregister(f.sock)
            f.sock.close()
            pending -= 1
    elapsed.sort()

    def pct(p):
        # Nearest rank, as bench_burst.
        rank = max(math.ceil(p * len(elapsed)), 1)
        return elapsed[rank - 1] if elapsed else 0.0

    def ms(v):
        return round(v, 1)

    return {
        "requests": n,
        "ok": statuses.get("200", 0),
        "errors": errors,
        "mean_ms": ms(sum(elapsed) / max(len(elapsed), 1)),
        "p50_ms": ms(pct(0.50)),
        "p99_ms": ms(pct(0.99)),
        "max_ms": ms(elapsed[-1] if elapsed else 0.0),
        "min_ms": ms(elapsed[0] if elapsed else 0.0),
        "statuses": dict(sorted(statuses.items())),
        "x_cache": dict(sorted(x_cache.items())),
    }


def main():
    args = sys.argv[1:]
    if len(args) < 4 or not args[2].isdigit() or int(args[2]) < 1:
        sys.exit("usage: burst.py HOST TARGET N HOST:PORT...")
    addrs = []
    for a in args[3:]:
        ip, _, port = a.rpartition(":")
        addrs.append((ip, int(port)))
    print(json.dumps(burst(args[0], args[1], int(args[2]), addrs), separators=(", ", ": ")))


if __name__ == "__main__":
    main()
