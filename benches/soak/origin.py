#!/usr/bin/env python3
"""A misbehaving origin for the soak run (benches/soak.sh).

Serves HTTP/1.1 keep-alive on 127.0.0.1:PORT, one thread per connection. Bodies are a
function of the path (body_for), so the client can check every byte it gets. At random, a
request is answered with a fault instead:

  reset      the connection is reset (RST) without a response
  stall      the response comes after STALL seconds, past the proxy's read timeout
  garbage    bytes that are not HTTP
  truncate   a header announcing the full body, half of it, then the connection closes
  5xx        during a burst (every BURST_EVERY seconds for BURST_SECONDS), every answer is 503

Restarts (the process killed and started again) are the script's. Every request is logged,
one JSON object per line, to LOG: {"t": time, "id": X-Soak-Id, "path": ..., "fault": ...},
so that the client can tell which of its errors an origin fault explains.

Routes: /hot/K (max-age=5, ETag: revalidated often), /miss/... (max-age=60), /nostore/...
(no-store), /large/K (K KiB .. MiB of body, max-age=30), /post/... (POST: no-store).
"""

import json
import os
import random
import socket
import socketserver
import struct
import sys
import threading
import time
import zlib

sys.path.insert(0, os.path.dirname(__file__))
from origin_body import body_for  # noqa: E402

PORT = int(sys.argv[1])
LOG = sys.argv[2]
FAULT_RATE = float(os.environ.get("FAULT_RATE", "0.05"))
STALL = float(os.environ.get("STALL", "4"))
BURST_EVERY = float(os.environ.get("BURST_EVERY", "45"))
BURST_SECONDS = float(os.environ.get("BURST_SECONDS", "3"))
FAULTS = ["reset", "stall", "garbage", "truncate"]

log_lock = threading.Lock()
log_file = open(LOG, "a", buffering=1)
started = time.time()


def log(**record):
    record["t"] = round(time.time(), 3)
    with log_lock:
        log_file.write(json.dumps(record) + "\n")


def in_burst():
    return (time.time() - started) % BURST_EVERY < BURST_SECONDS


def cache_control(path, method):
    if method == "POST" or path.startswith("/nostore/"):
        return "no-store"
    if path.startswith("/hot/"):
        return "max-age=5"
    if path.startswith("/large/"):
        return "max-age=30"
    return "max-age=60"


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            try:
                method, target, _ = lines[0].split(" ", 2)
            except ValueError:
                return
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            while len(buf) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
            buf = buf[length:]
            path = target.split("?")[0]
            soak_id = headers.get("x-soak-id", "")
            fault = random.choice(FAULTS) if random.random() < FAULT_RATE else None
            if fault is None and in_burst():
                fault = "5xx"
            log(id=soak_id, path=path, method=method, fault=fault)
            if fault == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
                return
            if fault == "garbage":
                sock.sendall(b"\x00\xffthis is not http\r\n\r\n")
                sock.close()
                return
            if fault == "stall":
                time.sleep(STALL)
            if fault == "5xx":
                body = b'{"origin":"overloaded"}'
                status, cc = "503 Service Unavailable", "no-store"
            else:
                body = body_for(path)
                status, cc = "200 OK", cache_control(path, method)
            etag = '"%x"' % zlib.crc32(path.encode())
            if fault is None and headers.get("if-none-match") == etag:
                out = "HTTP/1.1 304 Not Modified\r\nETag: %s\r\nCache-Control: %s\r\n\r\n" % (
                    etag,
                    cc,
                )
                sock.sendall(out.encode())
                continue
            head = (
                "HTTP/1.1 %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n"
                "Cache-Control: %s\r\nETag: %s\r\n\r\n" % (status, len(body), cc, etag)
            ).encode()
            try:
                if fault == "truncate":
                    sock.sendall(head + body[: len(body) // 2])
                    sock.close()
                    return
                sock.sendall(head + (b"" if method == "HEAD" else body))
            except OSError:
                return


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    with Server(("127.0.0.1", PORT), Handler) as server:
        print("soak origin on", PORT, flush=True)
        server.serve_forever()
