"""Plugin trap storm (scripts/soak.sh trapstorm): a route whose policy plugin
is the `flaky` fixture (plugins/fixtures/flaky: every instance allows its
1st, 3rd, 5th... decide and traps on the others) under a concurrent load.

  trapstorm.py BASE --admin ADMIN_BASE --pid PID --port UPSTREAM_PORT
               [--prefix /storm] [--plugin flaky] [--threads 8] [--secs 25]
               [--warmup 3] [--rss-factor 1.5] [--rss-slack-mib 16]
               [--pause 0.002]

The access token comes from the environment (SOAK_TOKEN), never from argv.
The route at PREFIX must send to 127.0.0.1:UPSTREAM_PORT, where this driver
runs an echo upstream in its own process, with plugins = [PLUGIN].

Checks, each printed with its figures:
  * every answer is 200 from the upstream or 503 application/problem+json
    (fail closed); never a 500, a cut connection or a hang; about half are
    503 (between 35 % and 65 %: a fresh instance allows its first call);
  * memory stays flat: authgw's VmRSS, sampled every second, ends at most
    --rss-factor x (its value after --warmup s) + --rss-slack-mib MiB;
  * instances are recycled: on the admin /metrics, the deltas of
    authgw_plugin_failures_total, authgw_plugin_instances_recycled_total
    (plugin=PLUGIN) match the 503s the clients saw, and
    authgw_plugin_calls_total the requests (within 1 % + 2);
  * after the storm the plugin still serves: sequential requests alternate
    200 and 503, no 500;
  * no leak: authgw's open fds back to the baseline + --fd-margin within
    --settle seconds (pooled upstream connections close after
    pool_idle_timeout).

Exit status 0 when every check passes, 1 otherwise."""

import argparse
import os
import sys
import threading
import time
from collections import Counter

from edge import (alive, by_label, fd_count, from_echo, is_problem, metric, metrics, rss_kib,
                  start_echo, thread_count)
from httpc import Client


def worker(base, prefix, token, stop, pause, timeout, out, lock):
    c = Client(base, timeout=timeout)
    counts = Counter()
    bad = []
    worst = 0.0
    n = 0
    while not stop.is_set():
        n += 1
        s, b, took = c.call("GET", f"{prefix}/film/{n}", token=token)
        worst = max(worst, took)
        if s == 200 and from_echo(b):
            counts["200"] += 1
        elif s == 503 and is_problem(c.headers, b, 503):
            counts["503"] += 1
        else:
            counts[str(s)] += 1
            if len(bad) < 5:
                bad.append((s, c.headers.get("content-type"), b))
        if pause:
            time.sleep(pause)
    c.close()
    with lock:
        out["counts"].update(counts)
        out["bad"].extend(bad)
        out["worst"] = max(out["worst"], worst)


def plugin_counters(admin, plugin):
    m = metrics(admin)
    return {
        "calls": metric(m, "authgw_plugin_calls_total", plugin=plugin) or 0.0,
        "denies": metric(m, "authgw_plugin_denies_total", plugin=plugin) or 0.0,
        "failures": metric(m, "authgw_plugin_failures_total", plugin=plugin) or 0.0,
        "by_kind": by_label(m, "authgw_plugin_failures_total", "kind", plugin=plugin),
        "recycled": metric(m, "authgw_plugin_instances_recycled_total", plugin=plugin),
        "inline": metric(m, "authgw_plugin_inline_instantiations_total", plugin=plugin) or 0.0,
    }


def close_enough(a, b):
    return abs(a - b) <= 0.01 * max(a, b) + 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--admin", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--prefix", default="/storm")
    ap.add_argument("--plugin", default="flaky")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--secs", type=float, default=25)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--rss-factor", type=float, default=1.5)
    ap.add_argument("--rss-slack-mib", type=float, default=16)
    ap.add_argument("--pause", type=float, default=0.002)
    ap.add_argument("--timeout", type=float, default=10, help="a request slower than this is a hang")
    ap.add_argument("--fd-margin", type=int, default=4)
    ap.add_argument("--settle", type=float, default=15)
    a = ap.parse_args()
    token = os.environ.get("SOAK_TOKEN", "")
    if not token:
        print("error: SOAK_TOKEN (an access token) is not set", file=sys.stderr)
        return 2
    threads = max(1, min(a.threads, 64))
    secs = max(a.warmup + 2, min(a.secs, 120))
    ok = True
    echo = start_echo(a.port)
    try:
        before = plugin_counters(a.admin, a.plugin)
        if before["recycled"] is None:
            print(f"error: no authgw_plugin_instances_recycled_total{{plugin=\"{a.plugin}\"}} on {a.admin}/metrics "
                  "(is the plugin loaded?)")
            return 1
        rss_start = rss_kib(a.pid)
        fds_start, threads_start = fd_count(a.pid), thread_count(a.pid)

        stop = threading.Event()
        lock = threading.Lock()
        out = {"counts": Counter(), "bad": [], "worst": 0.0}
        workers = [threading.Thread(target=worker, daemon=True,
                                    args=(a.base, a.prefix, token, stop, a.pause, a.timeout, out, lock))
                   for _ in range(threads)]
        t0 = time.monotonic()
        for w in workers:
            w.start()
        rss = []  # (seconds since start, KiB)
        threads_peak = threads_start
        while time.monotonic() - t0 < secs:
            time.sleep(1 - (time.monotonic() - t0) % 1)
            rss.append((time.monotonic() - t0, rss_kib(a.pid)))
            threads_peak = max(threads_peak, thread_count(a.pid))
        stop.set()
        for w in workers:
            w.join(timeout=a.timeout + 10)
        hung = sum(w.is_alive() for w in workers)
        elapsed = time.monotonic() - t0
        rss_end = rss_kib(a.pid)
        time.sleep(1)  # let the refill thread pay its last debts
        after = plugin_counters(a.admin, a.plugin)

        counts = out["counts"]
        total = sum(counts.values())
        n200, n503 = counts["200"], counts["503"]
        others = {k: v for k, v in counts.items() if k not in ("200", "503")}
        share = n503 / total if total else 0.0
        print(f"trap storm: {threads} threads for {elapsed:.1f} s: {total} requests ({total / elapsed:.0f}/s), "
              f"{n200} x 200 from the upstream, {n503} x 503 problem+json ({share:.1%}), "
              f"other: {others or 'none'}; slowest {out['worst'] * 1000:.0f} ms")
        for b in out["bad"]:
            print(f"  FAIL answer: {b}")
        if others or hung or total == 0:
            ok = False
            print(f"  FAIL: unexpected answers or hung workers ({hung})")
        if not 0.35 <= share <= 0.65:
            ok = False
            print("  FAIL: the 503 share is not about half")

        warm = next((kib for t, kib in rss if t >= a.warmup), rss_start)
        peak = max([kib for _, kib in rss] + [rss_start])
        limit = a.rss_factor * warm + a.rss_slack_mib * 1024
        rss_ok = rss_end <= limit
        print(f"rss: start {rss_start / 1024:.1f} MiB, after {a.warmup:g} s {warm / 1024:.1f} MiB, "
              f"max {peak / 1024:.1f} MiB, end {rss_end / 1024:.1f} MiB "
              f"(limit {limit / 1024:.1f} MiB = {a.rss_factor:g} x warm + {a.rss_slack_mib:g} MiB): "
              + ("ok" if rss_ok else "FAIL"))
        print("  rss by second (MiB): " + " ".join(f"{kib / 1024:.0f}" for _, kib in rss))
        ok &= rss_ok

        d = {k: after[k] - before[k] for k in ("calls", "denies", "failures", "recycled", "inline")}
        kinds = {k: v - before["by_kind"].get(k, 0.0) for k, v in after["by_kind"].items()}
        kinds = {k: int(v) for k, v in kinds.items() if v}
        print(f"plugin '{a.plugin}' metrics (deltas): calls {d['calls']:.0f}, failures {d['failures']:.0f} "
              f"{kinds or ''}, instances recycled {d['recycled']:.0f}, inline instantiations {d['inline']:.0f}, "
              f"denies {d['denies']:.0f}")
        match = close_enough(d["failures"], n503) and close_enough(d["recycled"], n503) \
            and close_enough(d["calls"], total)
        print(f"recycling: failures {d['failures']:.0f} / recycled {d['recycled']:.0f} vs 503s seen {n503}; "
              f"calls {d['calls']:.0f} vs requests {total}: " + ("match" if match else "FAIL (mismatch)"))
        ok &= match
        if set(kinds) - {"trap"}:
            print(f"  note: failures other than traps: {kinds}")

        # The plugin still serves after the storm, one request at a time.
        c = Client(a.base, timeout=a.timeout)
        seq = []
        for i in range(8):
            s, b, _ = c.call("GET", f"{a.prefix}/after/{i}", token=token)
            seq.append(s if s != 200 or from_echo(b) else -200)
        c.close()
        seq_ok = set(seq) <= {200, 503} and 200 in seq
        print(f"after the storm, 8 sequential requests: {seq}: " + ("ok" if seq_ok else "FAIL"))
        ok &= seq_ok
        t_end = time.monotonic()
        fds_end = fd_count(a.pid)
        while fds_end > fds_start + a.fd_margin and time.monotonic() - t_end < a.settle:
            time.sleep(0.25)
            fds_end = fd_count(a.pid)
        fds_ok = fds_end <= fds_start + a.fd_margin
        print(f"fds: {fds_start} before, {fds_end} after "
              + (f"(back within +{a.fd_margin} in {time.monotonic() - t_end:.1f} s)" if fds_ok
                 else f"(FAIL: not back within +{a.fd_margin} after {a.settle:g} s)")
              + f"; threads: {threads_start} before, {threads_peak} peak, {thread_count(a.pid)} after")
        ok &= fds_ok
    finally:
        echo.shutdown()
        echo.server_close()
    if not alive(a.pid):
        ok = False
        print("FAIL: authgw is no longer running")
    print("trap storm: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
