#!/usr/bin/env python3
"""The password-reset part of a scripts/bench.sh run (issue 15): medians over
the rounds of req/s, p50 and p99 for each kind of request, and each kind's
ratio to the unknown login's. Equal figures say the answer's time does not
tell whether an account exists.

    reset.py OUT [--append]   prints it and writes (or appends to) OUT/summary.md
"""
import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines() if l.strip()]
rows = [r for r in rows if r.get("test") == "reset"]
kinds = [("with-email", "a known login with an address (a message is queued)"),
         ("no-email", "a known login without an address"),
         ("unknown", "an unknown login")]


def med(kind, key):
    vals = [r[key] for r in rows if r.get("kind") == kind and r.get(key) is not None]
    return statistics.median(vals) if vals else None


base = {k: med("unknown", k) for k in ("rps", "p50_us", "p99_us")}
lines = ["", "## Password reset: the same answer whether or not the account exists", "",
         "| request | req/s | p50 | p99 | req/s ÷ unknown | p50 ÷ unknown | non-2xx or errors |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
for kind, what in kinds:
    rps, p50, p99 = med(kind, "rps"), med(kind, "p50_us"), med(kind, "p99_us")
    bad = sum(r.get("non2xx", 0) + r.get("connect_errors", 0) + r.get("read_errors", 0)
              + r.get("write_errors", 0) + r.get("timeouts", 0)
              for r in rows if r.get("kind") == kind)
    # 202 is 2xx: any non-2xx is a refusal (429 would mean the limits were hit).
    f = lambda v, d: "-" if v is None else d(v)
    lines.append(
        f"| {what} | {f(rps, lambda v: f'{v:,.0f}')} | {f(p50, lambda v: f'{v / 1000:.3f} ms')} "
        f"| {f(p99, lambda v: f'{v / 1000:.3f} ms')} "
        f"| {f(rps and base['rps'] and rps / base['rps'], lambda v: f'{v:.3f}')} "
        f"| {f(p50 and base['p50_us'] and p50 / base['p50_us'], lambda v: f'{v:.3f}')} | {bad} |")
text = "\n".join(lines) + "\n"
print(text)
mode = "a" if "--append" in sys.argv else "w"
with open(out / "summary.md", mode) as fh:
    fh.write(text)
