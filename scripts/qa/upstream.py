"""Upstream fault under load (scripts/soak.sh upstream): authgw proxies to an
echo upstream that runs as its own process; the upstream is killed with
SIGKILL in the middle of a concurrent load, then started again on the same
port.

  upstream.py BASE --admin ADMIN_BASE --pid PID --port UPSTREAM_PORT
              [--prefix /up] [--threads 8] [--before 5] [--outage 6]
              [--after 8] [--limit 8] [--recovery-limit 2] [--fd-margin 4]
              [--settle 15] [--pause 0.005] [--tolerate-silent-close]

The access token comes from the environment (SOAK_TOKEN), never from argv.
The route at PREFIX must send to 127.0.0.1:UPSTREAM_PORT with
auth = "required"; the driver starts the upstream itself.

Checks, each printed with its figures:
  * before the kill every proxied request is 200 from the upstream;
  * a request that starts after the kill and ends before the restart is a
    502 application/problem+json, never a 500, never a hang: no request
    takes longer than --limit (the route's connect_timeout +
    response_timeout + 1 s); requests in flight at the moment of the kill
    may end either way (200, 502, or a cut connection), and are counted;
  * recovery: after the upstream listens again, a proxied GET answers 200
    within --recovery-limit seconds; from then on (1 s of grace) every
    request is 200 again;
  * no leaked connections or tasks: authgw's open file descriptors
    (/proc/PID/fd) go back to the baseline + --fd-margin within --settle
    seconds of the load stopping, and authgw_connections_open on the admin
    listener's /metrics (when exported) back to 0; the thread count is
    printed;
  * /metrics counts no 500 on the route;
  * keep-alive: a connection authgw closes after a response must say so
    (Connection: close). A request that fails on a kept-alive connection
    right after a 502 to a POST (authgw closed it without that header: the
    request body had not been read yet when the upstream refused) is
    counted as a "silent close" and fails the check, unless
    --tolerate-silent-close (then it is only reported). GETs are retried
    once by the client on a new connection; those retries are counted too.

Exit status 0 when every check passes, 1 otherwise."""

import argparse
import os
import random
import signal
import sys
import threading
import time
from collections import Counter

from edge import (alive, by_label, fd_count, from_echo, is_problem, metric, metrics, spawn_echo,
                  thread_count)
from httpc import Client


class Record:
    __slots__ = ("start", "end", "method", "status", "problem", "echo", "error", "retried", "prev")

    def __init__(self, start, end, method, status, problem, echo, error="", retried=False, prev=None):
        self.start, self.end, self.method = start, end, method
        self.status, self.problem, self.echo = status, problem, echo
        # The transport errors, whether the client sent the GET again, and
        # (method, status) of the request before on the same client.
        self.error, self.retried, self.prev = error, retried, prev

    def after_post_502(self):
        return self.prev is not None and self.prev == ("POST", 502) and "(reused)" in self.error

    def silent_close(self):
        """Failed on a kept-alive connection that authgw had closed after a
        502 to a POST, without Connection: close."""
        return self.status == 0 and self.after_post_502()


def worker(base, prefix, token, stop, pause, timeout, out, lock, rng):
    c = Client(base, timeout=timeout)
    mine = []
    n = 0
    while not stop.is_set():
        n += 1
        # Mostly GETs (retried once by authgw on a stale pooled connection),
        # some POSTs with a body (never retried).
        if rng.random() < 0.8:
            method, body = "GET", None
        else:
            method, body = "POST", {"n": n, "pad": "x" * rng.randrange(0, 512)}
        start = time.monotonic()
        s, b, _ = c.call(method, f"{prefix}/item/{n}", body=body, token=token)
        end = time.monotonic()
        prev = (mine[-1].method, mine[-1].status) if mine else None
        mine.append(Record(start, end, method, s, is_problem(c.headers, b, s), from_echo(b), c.error,
                           c.retried, prev))
        if pause:
            time.sleep(pause)
    c.close()
    with lock:
        out.extend(mine)


class Sampler:
    """Samples authgw's open fds and threads every `every` seconds."""

    def __init__(self, pid, every=0.25):
        self.pid, self.every = pid, every
        self.samples = []  # (t, fds, threads)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            try:
                self.samples.append((time.monotonic(), fd_count(self.pid), thread_count(self.pid)))
            except OSError:
                return
            self.stop.wait(self.every)

    def peak(self, t0=None, t1=None):
        xs = [(f, th) for t, f, th in self.samples if (t0 is None or t >= t0) and (t1 is None or t <= t1)]
        return (max(f for f, _ in xs), max(th for _, th in xs)) if xs else (0, 0)


def scrape(admin):
    try:
        return metrics(admin)
    except OSError as e:
        print(f"  (could not read {admin}/metrics: {e})")
        return []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--admin", required=True, help="the admin listener, e.g. http://127.0.0.1:9090")
    ap.add_argument("--pid", type=int, required=True, help="authgw's pid")
    ap.add_argument("--port", type=int, required=True, help="the upstream's port on 127.0.0.1")
    ap.add_argument("--prefix", default="/up")
    ap.add_argument("--route", default="up", help="the route's name (metrics label)")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--before", type=float, default=5)
    ap.add_argument("--outage", type=float, default=6)
    ap.add_argument("--after", type=float, default=8)
    ap.add_argument("--limit", type=float, default=8, help="longest acceptable response, seconds")
    ap.add_argument("--recovery-limit", type=float, default=2)
    ap.add_argument("--fd-margin", type=int, default=4)
    ap.add_argument("--settle", type=float, default=15, help="seconds allowed for fds to return")
    ap.add_argument("--pause", type=float, default=0.005, help="pause between a worker's requests")
    ap.add_argument("--tolerate-silent-close", action="store_true",
                    help="report, but do not fail on, connections closed without Connection: close")
    a = ap.parse_args()
    token = os.environ.get("SOAK_TOKEN", "")
    if not token:
        print("error: SOAK_TOKEN (an access token) is not set", file=sys.stderr)
        return 2
    threads = max(1, min(a.threads, 64))  # bounded load
    ok = True
    upstream = None
    try:
        upstream, took = spawn_echo(a.port)
        print(f"upstream: pid {upstream.pid} on 127.0.0.1:{a.port} (listening after {took:.2f} s)")

        # Baseline: authgw idle, before any proxied request.
        fds_before, threads_before = fd_count(a.pid), thread_count(a.pid)
        m_before = scrape(a.admin)
        conns_before = metric(m_before, "authgw_connections_open")
        probe = Client(a.base, timeout=a.limit + 5)
        s, body, _ = probe.call("GET", f"{a.prefix}/warmup", token=token)
        if s != 200 or not from_echo(body):
            print(f"error: the route {a.prefix} does not reach the upstream: {s} {body}")
            return 1
        probe.close()

        sampler = Sampler(a.pid)
        sampler.thread.start()
        stop = threading.Event()
        records: list[Record] = []
        lock = threading.Lock()
        workers = [threading.Thread(target=worker, daemon=True,
                                    args=(a.base, a.prefix, token, stop, a.pause, a.limit + 5,
                                          records, lock, random.Random(i)))
                   for i in range(threads)]
        t_load = time.monotonic()
        for w in workers:
            w.start()
        time.sleep(a.before)
        fds_load, _ = sampler.peak(t_load)

        t_kill = time.monotonic()
        os.kill(upstream.pid, signal.SIGKILL)
        upstream.wait()
        print(f"upstream killed (SIGKILL) after {t_kill - t_load:.1f} s of load")
        time.sleep(a.outage / 2)
        fds_mid = fd_count(a.pid)
        conns_mid = metric(scrape(a.admin), "authgw_connections_open")
        time.sleep(a.outage / 2)

        t_restart = time.monotonic()
        upstream, took = spawn_echo(a.port)
        t_listen = time.monotonic()
        print(f"upstream started again on the same port: pid {upstream.pid}, listening after {took:.2f} s")
        recovered = None
        while time.monotonic() - t_listen < 30:
            s, body, _ = probe.call("GET", f"{a.prefix}/recovery", token=token)
            if s == 200 and from_echo(body):
                recovered = time.monotonic()
                break
            time.sleep(0.02)
        probe.close()
        time.sleep(a.after)
        stop.set()
        t_stop = time.monotonic()
        for w in workers:
            w.join(timeout=a.limit + 10)
        hung_workers = sum(w.is_alive() for w in workers)

        # After the load: fds back to the baseline (pooled upstream
        # connections close after pool_idle_timeout).
        fds_after = fd_count(a.pid)
        settled = None
        while time.monotonic() - t_stop < a.settle:
            fds_after = fd_count(a.pid)
            if fds_after <= fds_before + a.fd_margin:
                settled = time.monotonic() - t_stop
                break
            time.sleep(0.25)
        time.sleep(0.5)  # let the last closed client connections be counted out
        m_after = scrape(a.admin)
        conns_after = metric(m_after, "authgw_connections_open")
        threads_after = thread_count(a.pid)
        sampler.stop.set()
        fds_peak, threads_peak = sampler.peak()
        fds_outage_peak, _ = sampler.peak(t_kill, t_restart)

        # --- classify ---------------------------------------------------------
        before = [r for r in records if r.end < t_kill]
        at_kill = [r for r in records if r.start < t_kill <= r.end]
        outage = [r for r in records if r.start >= t_kill and r.end < t_restart]
        restart = [r for r in records if r.start < t_restart <= r.end
                   or (t_restart <= r.start and (recovered is None or r.start < recovered + 1))]
        after = [r for r in records if recovered is not None and r.start >= recovered + 1]
        status_all = Counter(r.status for r in records)
        n200, n502 = status_all[200], status_all[502]
        others = {k: v for k, v in status_all.items() if k not in (200, 502)}
        worst = max((r.end - r.start for r in records), default=0.0)
        worst_outage = max((r.end - r.start for r in outage), default=0.0)

        print(f"\nload: {threads} threads for {t_stop - t_load:.1f} s: {len(records)} requests, "
              f"{n200} x 200, {n502} x 502, other statuses: {others or 'none'} (0 = cut connection, -1 = timeout)")
        for name, rs in (("before kill", before), ("in flight at kill", at_kill), ("outage", outage),
                         ("restart/recovery", restart), ("after recovery", after)):
            c = Counter(r.status for r in rs)
            print(f"  {name:18} {len(rs):6} requests  " + ", ".join(f"{k}: {v}" for k, v in sorted(c.items())))

        bad_before = [r for r in before if r.status != 200 or not r.echo]
        print(f"before the kill: {len(before) - len(bad_before)}/{len(before)} proxied requests 200 from the upstream")
        ok &= not bad_before and len(before) > 0

        good_outage = [r for r in outage if r.status == 502 and r.problem]
        print(f"outage: {len(good_outage)}/{len(outage)} requests answered 502 application/problem+json "
              f"(slowest {worst_outage * 1000:.0f} ms)")
        if len(outage) < 10:
            ok = False
            print("  FAIL: too few requests during the outage to judge")
        tolerated = (lambda r: r.silent_close()) if a.tolerate_silent_close else (lambda r: False)
        other_outage = [r for r in outage if not (r.status == 502 and r.problem) and not tolerated(r)]
        if other_outage:
            ok = False
            print(f"  FAIL: other answers during the outage: {Counter(r.status for r in other_outage)}")
        bad_problem = [r for r in records if r.status == 502 and not r.problem]
        if bad_problem:
            ok = False
            print(f"  FAIL: {len(bad_problem)} 502s without an application/problem+json body")

        odd_at_kill = [r for r in at_kill if r.status not in (200, 502, 0)]
        cut = sum(1 for r in at_kill if r.status == 0)
        print(f"in flight at the kill: {len(at_kill)} requests ({cut} cut connections, allowed: "
              f"the upstream died mid-response); unexpected statuses: {len(odd_at_kill)}")
        ok &= not odd_at_kill
        n500 = status_all[500]
        timeouts = status_all[-1]
        print(f"500s: {n500}; timeouts (> {a.limit + 5:.0f} s): {timeouts}; workers hung: {hung_workers}; "
              f"max latency {worst * 1000:.0f} ms (limit {a.limit:.1f} s)")
        silent = [r for r in records if r.silent_close()]
        hidden = [r for r in records if r.retried and r.after_post_502()]
        retried = sum(1 for r in records if r.retried)
        print(f"keep-alive: {len(silent)} requests failed on a kept-alive connection that authgw closed after "
              f"a 502 to a POST without Connection: close (+{len(hidden)} GETs the client sent again; "
              f"{retried} GET retries in all): "
              + ("ok" if not silent and not hidden else "tolerated (--tolerate-silent-close)"
                 if a.tolerate_silent_close else "FAIL"))
        if silent:
            print(f"  errors: {Counter(r.error for r in silent).most_common(3)}")
        if (silent or hidden) and not a.tolerate_silent_close:
            ok = False
        cut = [r for r in records if r.status == 0 and not r.silent_close()]
        if cut:
            print(f"other cut connections: {len(cut)}, by method: {Counter(r.method for r in cut)}; "
                  f"the request before on the same client: {Counter(r.prev for r in cut)}; "
                  f"errors: {Counter(r.error for r in cut).most_common(3)}")
        in_flight = {id(r) for r in at_kill}
        stray = [r for r in records
                 if id(r) not in in_flight and r.status not in (200, 502) and not tolerated(r)]
        if n500 or timeouts or hung_workers or worst > a.limit or stray:
            ok = False
            print(f"  FAIL: a 500, a hang, or another status outside the kill moment: "
                  f"{Counter(r.status for r in stray)}")

        if recovered is None:
            ok = False
            print("recovery: FAIL: no proxied 200 within 30 s of the upstream listening again")
        else:
            rec = recovered - t_listen
            verdict = "ok" if rec <= a.recovery_limit else f"FAIL (limit {a.recovery_limit:g} s)"
            ok &= rec <= a.recovery_limit
            print(f"recovery: first proxied 200 {rec:.2f} s after the upstream listened again "
                  f"({recovered - t_restart:.2f} s after it was started): {verdict}")
        bad_after = [r for r in after if r.status != 200 or not r.echo]
        print(f"after recovery (+1 s): {len(after) - len(bad_after)}/{len(after)} requests 200 from the upstream")
        ok &= not bad_after and len(after) > 0

        fd_ok = settled is not None
        print(f"fds: {fds_before} before, {fds_load} peak under load, {fds_mid} mid-outage "
              f"(peak {fds_outage_peak}), {fds_after} after "
              + (f"(back within +{a.fd_margin} {settled:.1f} s after the load stopped)" if fd_ok
                 else f"(FAIL: not back within +{a.fd_margin} after {a.settle:g} s)")
              + f"; overall peak {fds_peak}")
        ok &= fd_ok
        print(f"threads: {threads_before} before, {threads_peak} peak, {threads_after} after")
        if conns_after is None:
            print("connections_open: authgw_connections_open is not exported by this build")
        else:
            def n(v):
                return "?" if v is None else f"{v:.0f}"
            print(f"connections_open (authgw_connections_open): {n(conns_before)} before, "
                  f"{n(conns_mid)} mid-outage, {n(conns_after)} after")
            if conns_after != 0:
                ok = False
                print("  FAIL: client connections still open after every client closed")
        per_status = by_label(m_after, "authgw_proxy_requests_total", "status", route=a.route)
        print("metrics authgw_proxy_requests_total{route=\"%s\"}: %s" % (
            a.route, ", ".join(f"{k}: {v:.0f}" for k, v in sorted(per_status.items())) or "none"))
        if per_status.get("500"):
            ok = False
            print("  FAIL: the server counted 500s on the route")
    finally:
        if upstream is not None and upstream.poll() is None:
            upstream.kill()
            upstream.wait()
    if not alive(a.pid):
        ok = False
        print("FAIL: authgw is no longer running")
    print("upstream fault: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
