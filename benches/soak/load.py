#!/usr/bin/env python3
"""Steady mixed traffic for the soak run (benches/soak.sh): python3 load.py PORT SECONDS RATE LOG

WORKERS threads share a token bucket of RATE requests per second for SECONDS. Each request
gets a unique X-Soak-Id (which the proxy forwards, so the origin's log names it) and one line
in LOG: {"id", "kind", "method", "path", "t0", "t1", "result", "status", "code", "retried"}.
result is "ok" or the kind of failure: "status" (a status the kind does not expect), "reset",
"closed" (no response), "truncated", "timeout", "bad_body" (a 200 whose body is not the
path's), "refused" (the proxy did not accept the connection).

Kinds: hot (GET of 64 hot URLs, cached, max-age=5), miss (a new URL), nostore, large (64 KiB
to 2 MiB, cached), slow (a large body read at about 256 KiB/s), post (never retried), purge
(PURGE of a hot URL). Each worker keeps one connection alive and, as HTTP allows, sends an
idempotent request again once on a new connection when a reused one closed before any byte
of the response.
"""

import http.client
import json
import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from origin_body import body_for  # noqa: E402

PORT = int(sys.argv[1])
SECONDS = float(sys.argv[2])
RATE = float(sys.argv[3])
LOG = sys.argv[4]
WORKERS = int(os.environ.get("WORKERS", "16"))
KINDS = [("hot", 45), ("miss", 20), ("nostore", 10), ("large", 8), ("slow", 3), ("post", 8), ("purge", 6)]
IDEMPOTENT = {"GET", "HEAD", "PURGE"}

log_lock = threading.Lock()
log_file = open(LOG, "w", buffering=1)
next_id = [0]
deadline = time.time() + SECONDS


class Bucket:
    """RATE tokens a second, shared by the workers."""

    def __init__(self, rate):
        self.rate, self.lock, self.next = rate, threading.Lock(), time.time()

    def take(self):
        with self.lock:
            at = max(self.next, time.time())
            self.next = at + 1.0 / self.rate
        delay = at - time.time()
        if delay > 0:
            time.sleep(delay)
        return at < deadline


def pick_kind():
    total = sum(w for _, w in KINDS)
    r = random.uniform(0, total)
    for kind, w in KINDS:
        r -= w
        if r <= 0:
            return kind
    return KINDS[0][0]


def request_for(kind, n):
    if kind == "hot":
        return "GET", "/hot/%d" % random.randrange(64)
    if kind == "miss":
        return "GET", "/miss/%d-%d" % (os.getpid(), n)
    if kind == "nostore":
        return "GET", "/nostore/%d" % random.randrange(1000)
    if kind in ("large", "slow"):
        return "GET", "/large/%d" % random.randrange(64)
    if kind == "post":
        return "POST", "/post/%d" % n
    return "PURGE", "/hot/%d" % random.randrange(64)


class NoResponse(Exception):
    """The connection ended before any byte of the response."""


def exchange(conn, method, path, soak_id, slow):
    body = b"posted %d" % soak_id if method == "POST" else None
    try:
        conn.request(method, path, body=body, headers={"X-Soak-Id": str(soak_id)})
        resp = conn.getresponse()
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
        raise NoResponse(type(e).__name__)
    if slow:
        data = b""
        while True:
            piece = resp.read(16384)
            if not piece:
                break
            data += piece
            time.sleep(0.06)
        if resp.length not in (None, 0):
            raise http.client.IncompleteRead(data)
    else:
        data = resp.read()
    return resp, data


conn_serial = [0]


def worker():
    conn = None
    while Bucket_take():
        with log_lock:
            next_id[0] += 1
            soak_id = next_id[0]
        kind = pick_kind()
        method, path = request_for(kind, soak_id)
        record = {"id": soak_id, "kind": kind, "method": method, "path": path, "t0": time.time()}
        record.update(result="ok", status=None, code=None, retried=False)
        for attempt in (0, 1):
            reused = conn is not None
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
                with log_lock:
                    conn_serial[0] += 1
                    conn.serial = conn_serial[0]
            record["conn"], record["reused"] = conn.serial, reused
            try:
                resp, data = exchange(conn, method, path, soak_id, kind == "slow")
            except NoResponse as e:
                conn.close()
                conn = None
                if attempt == 0 and reused and method in IDEMPOTENT:
                    record["retried"] = True
                    continue
                record["result"] = "closed" if "Disconnected" in str(e) else "reset"
                break
            except ConnectionRefusedError:
                conn = None
                record["result"] = "refused"
                break
            except http.client.IncompleteRead:
                conn.close()
                conn = None
                record["result"] = "truncated"
                break
            except (socket.timeout, TimeoutError):
                conn.close()
                conn = None
                record["result"] = "timeout"
                break
            except (ConnectionResetError, BrokenPipeError, http.client.HTTPException, OSError) as e:
                conn.close()
                conn = None
                record["result"] = "reset" if isinstance(e, ConnectionResetError) else "closed"
                break
            record["status"] = resp.status
            if resp.getheader("content-type") == "application/json" and resp.status >= 400:
                try:
                    record["code"] = json.loads(data)["code"]
                except (ValueError, KeyError):
                    pass
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
            if resp.status != 200:
                record["result"] = "status"
            elif method == "GET" and data != body_for(path):
                record["result"] = "bad_body"
            break
        record["t1"] = time.time()
        with log_lock:
            log_file.write(json.dumps(record) + "\n")


bucket = Bucket(RATE)
Bucket_take = bucket.take

if __name__ == "__main__":
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0, deadline - time.time()) + 120)
