"""Load over a fixed key space, for the hand-over run (benches/load/handover.sh).

    python3 keyspace.py HOST:PORT PREFIX KEYS SECONDS [THREADS]

Each thread keeps one HTTP/1.1 connection (a new one when the server closes it) and asks for
PREFIX + a key drawn uniformly from 0..KEYS-1, until SECONDS have passed. Every response is
counted in the half-second bucket it ended in, by its X-Cache value; prints one line per
bucket: `offset_s hits requests errors` (offset from the start), then nothing else.
Python standard library only.
"""
import http.client
import random
import sys
import threading
import time

BUCKET = 0.5


def main():
    addr, prefix, keys, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    host, port = addr.rsplit(":", 1)
    start = time.monotonic()
    end = start + seconds
    n = int(seconds / BUCKET) + 2
    buckets = [[0, 0, 0] for _ in range(n)]  # hits, requests, errors
    lock = threading.Lock()

    def worker(seed):
        rng = random.Random(seed)
        conn = None
        while time.monotonic() < end:
            if conn is None:
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
            path = prefix + str(rng.randrange(keys))
            hit = error = 0
            try:
                conn.request("GET", path)
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    error = 1
                hit = r.getheader("x-cache") == "HIT"
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                # A connection the draining process closed before answering: retried on a
                # new one, as an HTTP client does for an idempotent request.
                conn.close()
                conn = None
                continue
            i = min(int((time.monotonic() - start) / BUCKET), n - 1)
            with lock:
                b = buckets[i]
                b[0] += hit
                b[1] += 1
                b[2] += error

    workers = [threading.Thread(target=worker, args=(s,)) for s in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for i, (hits, requests, errors) in enumerate(buckets):
        if requests:
            print(f"{i * BUCKET:.1f} {hits} {requests} {errors}")


if __name__ == "__main__":
    main()
