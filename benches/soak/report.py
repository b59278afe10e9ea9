#!/usr/bin/env python3
"""The soak run's report: python3 report.py WORKDIR STALL > report.md; exit 1 when a check fails.

Reads from WORKDIR: load.jsonl (the client's requests), origin.jsonl (what the origin
received and which fault it applied), down.txt (when the origin was down: "start end" per
line), samples.txt ("t rss_kib fds pid cache_bytes" per line, the proxy sampled during the run) and
meta.json (start/end figures). An error of the client is explained by an origin fault when
the origin applied one to that request (by X-Soak-Id), or to a request for the same URL while
this one was in flight (a request waiting on another's fetch shares its fate), or the origin
was down meanwhile. A 200 whose body is not the path's is never explained.
"""

import json
import os
import sys
from collections import Counter

work, stall = sys.argv[1], float(sys.argv[2])


def lines(name):
    path = os.path.join(work, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line for line in f if line.strip()]


requests = [json.loads(line) for line in lines("load.jsonl")]
origin = [json.loads(line) for line in lines("origin.jsonl")]
down = [tuple(map(float, line.split())) for line in lines("down.txt")]
samples = [line.split() for line in lines("samples.txt")]
meta = json.load(open(os.path.join(work, "meta.json")))

faults_by_id = {}
faults_by_path = {}
for o in origin:
    if o.get("fault"):
        faults_by_id.setdefault(o.get("id"), []).append(o["fault"])
        faults_by_path.setdefault(o["path"], []).append((o["t"], o["fault"]))


def explanation(r):
    if r["result"] == "bad_body":
        return None
    f = faults_by_id.get(str(r["id"]))
    if f:
        return "fault " + f[-1]
    lo, hi = r["t0"] - stall - 1, r["t1"] + 1
    for t, fault in faults_by_path.get(r["path"], []):
        if lo <= t <= hi:
            return "fault %s (same URL)" % fault
    for start, end in down:
        if start <= hi and lo <= end + 1:
            return "origin down"
    return None


def kind_of(r):
    if r["result"] == "status":
        return "%s %s" % (r["status"], r["code"] or "(origin's)")
    return r["result"]


expected = {"purge": {200}}
failures = []
for r in requests:
    if r["result"] == "status" and r["status"] in expected.get(r["kind"], ()):
        r["result"] = "ok"
    if r["result"] != "ok":
        failures.append(r)

by_kind = Counter(kind_of(r) for r in failures)
explained = Counter()
unexplained = []
for r in failures:
    why = explanation(r)
    if why is None:
        unexplained.append(r)
    else:
        explained[why.split(" (")[0]] += 1

traffic = Counter(r["kind"] for r in requests)
retried = sum(1 for r in requests if r.get("retried"))
faults = Counter(o["fault"] for o in origin if o.get("fault"))
rss = [int(s[1]) for s in samples]
fds = [int(s[2]) for s in samples]
pids = {s[3] for s in samples}
# Warm-up ends once the cache holds 90% of its bound (or at a fifth of the run if it never
# does): RSS must stay flat from there.
full = [i for i, s in enumerate(samples) if len(s) > 4 and int(s[4]) >= 0.9 * meta["cache_max_bytes"]]
warm_at = full[0] if full else len(samples) // 5
warm = rss[warm_at] if rss else 0

checks = [
    ("errors not explained by an origin fault", len(unexplained) == 0, str(len(unexplained))),
    ("the proxy never restarted (one PID, alive to the end)", len(pids) == 1 and meta["alive_at_end"], "%d PID(s), alive at end: %s" % (len(pids), meta["alive_at_end"])),
    ("open file descriptors back to the start", meta["fds_settled"] <= meta["fds_start"], "%d at start, %d at end" % (meta["fds_start"], meta["fds_settled"])),
    ("RSS flat after warm-up (the cache 90% full): end within 10% + 8 MiB of it", bool(rss) and rss[-1] <= warm * 1.1 + 8192, "%.1f MiB at %s s -> %.1f MiB" % (warm / 1024, samples[warm_at][0] if samples else "?", rss[-1] / 1024 if rss else 0)),
]

print("# Soak run")
print()
print("- date: %s; %s s at %s req/s (%s), origin restarted every %s s" % (meta["date"], meta["duration"], meta["rate"], meta["build"], meta["restart_every"]))
print("- machine: %s; other work: CPUs %s%% busy in the second before the run" % (meta["machine"], meta["busy"]))
print()
print("| measure | value |")
print("|---|--:|")
print("| requests | %d (%s) |" % (len(requests), ", ".join("%s %d" % kv for kv in sorted(traffic.items()))))
print("| answered as expected | %d |" % (len(requests) - len(failures)))
print("| failed, explained by an origin fault | %d (%s) |" % (sum(explained.values()), ", ".join("%s %d" % kv for kv in sorted(explained.items())) or "none"))
print("| **failed, not explained by an origin fault** | **%d** |" % len(unexplained))
print("| requests sent again (HTTP retry: reused connection closed before any response byte) | %d |" % retried)
print("| origin faults applied | %s; down %d times |" % (", ".join("%s %d" % kv for kv in sorted(faults.items())) or "none", len(down)))
print("| RSS at start / peak / end | %.1f / %.1f / %.1f MiB |" % (meta["rss_start_kib"] / 1024, meta["rss_peak_kib"] / 1024, meta["rss_end_kib"] / 1024))
print("| open file descriptors at start / peak / after the load (settled) | %d / %d / %d |" % (meta["fds_start"], max(fds) if fds else 0, meta["fds_settled"]))
print("| stores given up (memory / object size) | %s / %s |" % (meta.get("aborted_memory", "?"), meta.get("aborted_size", "?")))
print()
print("Failures by kind:")
print()
print("| kind | count |")
print("|---|--:|")
for kind, n in sorted(by_kind.items(), key=lambda kv: -kv[1]):
    print("| %s | %d |" % (kind, n))
print()
print("| check | result | |")
print("|---|---|---|")
for name, ok, detail in checks:
    print("| %s | %s | %s |" % (name, "yes" if ok else "**no**", detail))
if unexplained:
    print()
    print("Unexplained (first 10):")
    print()
    for r in unexplained[:10]:
        print("- `%s`" % json.dumps(r))
print()
print("RSS (MiB) and open file descriptors, sampled:")
print()
print("| s | RSS MiB | fds | cache MiB |")
print("|--:|--:|--:|--:|")
step = max(1, len(samples) // 20)
for s in samples[::step]:
    cache = int(s[4]) / 1048576 if len(s) > 4 else 0
    print("| %s | %.1f | %s | %.1f |" % (s[0], int(s[1]) / 1024, s[2], cache))
sys.exit(0 if all(ok for _, ok, _ in checks) else 1)
