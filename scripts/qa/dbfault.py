"""Database fault under load (scripts/soak.sh): PostgreSQL is stopped in the
middle of a mixed load and started again.

  dbfault.py BASE DB_URL --stop-cmd CMD --start-cmd CMD
             [--sessions 12] [--before 5] [--outage 8] [--after 10]
             [--timeout 5] [--proxy-prefix /echo --upstream-port PORT]
             [--proxy-threads 3]

Checks, each printed with its figures:
  * no 500 and no other 5xx than 503 at any time; every 503 is a
    problem+json body;
  * no request takes longer than --timeout (database.connect_timeout) plus
    one second: an outage is answered, not hung on;
  * recovery: after CMD-start returns, a database-backed request
    (GET /api/v1/users/me) answers 200 within 2 s;
  * readiness: at the end of the outage (past revocation.max_staleness),
    GET /readyz answers 200 within 1.5 s: with the default
    revocation.when_stale = "serve" a database outage alone does not take
    the instance out of the load balancer;
  * refresh rotations: each session is refreshed by one worker that keeps the
    token it last received; afterwards the refresh_tokens table must hold,
    per session, exactly 1 + (rotations the client saw succeed) tokens, all
    used but one, and that one is the client's current token (no rotation
    lost, none applied twice); and each client's current token still
    refreshes. A refresh answered 503 (or cut) during the outage may still
    have committed. Its client retries with the same token, as a real app
    would: within tokens.refresh_reuse_grace it gets the successor it missed
    (derived again, issue 19; reported as recovered). Only a retry later
    than the grace gets 409 or 401, and that client must log in again; such a
    session must show exactly one rotation more than its client saw, applied
    once (reported as an answer lost);
  * the edge proxy (with --proxy-prefix and --upstream-port: a route at
    PREFIX with auth = "required" to 127.0.0.1:PORT, where this driver runs
    an echo upstream in-process): it never touches the database, so while
    PostgreSQL is down every proxied request with a valid token taken before
    the outage is 200 from the upstream, with the user's identity headers;
    --proxy-threads workers use their tokens from the start (the
    verified-token cache knows them), and during the outage more tokens,
    logged in before it but never shown to the proxy until then, are
    verified cold (signature and claims, revocation set in memory).

Exit status 0 when every check passes, 1 otherwise."""

import argparse
import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter

from edge import from_echo, start_echo
from httpc import Client, claims

PASSWORD = "correct horse battery staple"


class Phase:
    def __init__(self):
        self.name = "before"
        self.lock = threading.Lock()
        self.stats = {p: Counter() for p in ("before", "outage", "after")}
        self.worst = {p: 0.0 for p in ("before", "outage", "after")}
        self.bad = []  # (phase, op, status, body)

    def record(self, op, status, body, took, headers_ok=True):
        with self.lock:
            p = self.name
            self.stats[p][status] += 1
            self.worst[p] = max(self.worst[p], took)
            problem = isinstance(body, dict) and body.get("status") == status
            if status >= 500 and (status != 503 or not problem):
                self.bad.append((p, op, status, body))


def worker(base, session, phase, stop, timeout, rng):
    """One session: refresh it, and between refreshes read /me, /check, history."""
    c = Client(base, timeout=timeout + 5)
    while not stop.is_set():
        op = rng.choice(["refresh", "refresh", "me", "check", "history", "sessions"])
        if op == "refresh" and not session["lost"]:
            s, body, took = c.call("POST", "/api/v1/auth/refresh", {"refresh_token": session["refresh"]})
            phase.record(op, s, body, took)
            if s == 200:
                session["refresh"] = body["refresh_token"]
                session["access"] = body["access_token"]
                session["rotations"] += 1
                if session["pending"]:
                    session["recovered"] += 1
                    session["pending"] = False
            elif s in (503, 0, -1):
                # Outcome unknown: the database may have committed the
                # rotation before the connection to it broke. The next
                # refresh retries with the same token.
                session["unknown"] += 1
                session["pending"] = True
            elif s in (401, 409) and session["unknown"]:
                # The token was rotated by a request whose answer was lost:
                # 409 within refresh_reuse_grace, 401 (reuse) after it. The
                # client cannot refresh any more; it logs in again.
                session["lost"] = True
            elif s != 429:
                session["errors"].append((s, body))
        elif op == "refresh":
            pass
        elif op == "check":
            s, body, took = c.call("GET", "/api/v1/auth/check", token=session["access"])
            phase.record(op, s, body, took)
        else:
            path = {"me": "/api/v1/users/me", "history": "/api/v1/users/me/history?limit=5",
                    "sessions": "/api/v1/users/me/sessions"}[op]
            s, body, took = c.call("GET", path, token=session["access"])
            phase.record(op, s, body, took)
        time.sleep(rng.uniform(0.005, 0.03))
    c.close()


class ProxyStats:
    """Proxied requests by phase: ok (200 from the echo upstream, for the
    token's user) or the status; the slowest."""

    def __init__(self, phase):
        self.phase = phase
        self.lock = threading.Lock()
        self.stats = {p: Counter() for p in ("before", "outage", "after")}
        self.cold = Counter()  # outage requests with tokens first shown then
        self.worst = {p: 0.0 for p in ("before", "outage", "after")}
        self.bad = []  # (phase, status, body)

    def record(self, status, body, took, sub, cold=False):
        good = status == 200 and from_echo(body) and body.get("user") == sub
        with self.lock:
            p = self.phase.name
            key = "ok" if good else status
            self.stats[p][key] += 1
            if cold and p == "outage":
                self.cold[key] += 1
            self.worst[p] = max(self.worst[p], took)
            if not good and len(self.bad) < 10:
                self.bad.append((p, status, body))


def proxy_worker(base, prefix, user, stats, stop, timeout, rng):
    """Proxied GETs with one token, taken before the outage, all along."""
    c = Client(base, timeout=timeout + 5)
    n = 0
    while not stop.is_set():
        n += 1
        s, body, took = c.call("GET", f"{prefix}/film/{n}", token=user["access"])
        stats.record(s, body, took, user["sub"])
        time.sleep(rng.uniform(0.005, 0.03))
    c.close()


def psql(db_url, sql):
    out = subprocess.run([os.environ.get("PSQL", "psql"), "-X", "-A", "-t", "-F", "\t", "-d", db_url, "-c", sql],
                         check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("db_url")
    ap.add_argument("--stop-cmd", required=True)
    ap.add_argument("--start-cmd", required=True)
    ap.add_argument("--sessions", type=int, default=12)
    ap.add_argument("--before", type=float, default=5)
    ap.add_argument("--outage", type=float, default=8)
    ap.add_argument("--after", type=float, default=10)
    ap.add_argument("--timeout", type=float, default=5)
    ap.add_argument("--proxy-prefix", help="a proxy route to the echo upstream (auth = required)")
    ap.add_argument("--upstream-port", type=int, help="the echo upstream's port on 127.0.0.1")
    ap.add_argument("--proxy-threads", type=int, default=3)
    args = ap.parse_args()
    proxying = bool(args.proxy_prefix and args.upstream_port)
    rng = random.Random(7)
    ok = True

    # Users and sessions.
    setup = Client(args.base)
    sessions = []
    for i in range(args.sessions):
        login = f"fault-{i}"
        setup.call("POST", "/api/v1/auth/signup", {"login": login, "password": PASSWORD})
        s, body, _ = setup.call("POST", "/api/v1/auth/login", {"login": login, "password": PASSWORD})
        if s != 200:
            print(f"error: login {login}: {s} {body}", file=sys.stderr)
            return 1
        sessions.append({"login": login, "access": body["access_token"], "refresh": body["refresh_token"],
                         "sid": claims(body["access_token"])["sid"], "rotations": 0, "errors": [],
                         "unknown": 0, "lost": False, "pending": False, "recovered": 0})

    # Proxy users: tokens taken now, before the outage. The first
    # --proxy-threads are used all along; the rest only during the outage.
    proxy_users = []
    echo = None
    if proxying:
        echo = start_echo(args.upstream_port)
        for i in range(max(1, args.proxy_threads) + 4):
            login = f"proxy-{i}"
            setup.call("POST", "/api/v1/auth/signup", {"login": login, "password": PASSWORD})
            s, body, _ = setup.call("POST", "/api/v1/auth/login", {"login": login, "password": PASSWORD})
            if s != 200:
                print(f"error: login {login}: {s} {body}", file=sys.stderr)
                return 1
            proxy_users.append({"access": body["access_token"], "sub": claims(body["access_token"])["sub"]})
        s, body, _ = setup.call("GET", f"{args.proxy_prefix}/warmup", token=proxy_users[0]["access"])
        if s != 200 or not from_echo(body):
            print(f"error: the route {args.proxy_prefix} does not reach the echo upstream: {s} {body}",
                  file=sys.stderr)
            return 1
    hot_users = proxy_users[:max(1, args.proxy_threads)]
    cold_users = proxy_users[len(hot_users):]

    phase = Phase()
    pstats = ProxyStats(phase)
    stop = threading.Event()
    threads = [threading.Thread(target=worker, args=(args.base, s, phase, stop, args.timeout,
                                                     random.Random(i)), daemon=True)
               for i, s in enumerate(sessions)]
    threads += [threading.Thread(target=proxy_worker, args=(args.base, args.proxy_prefix, u, pstats, stop,
                                                            args.timeout, random.Random(100 + i)), daemon=True)
                for i, u in enumerate(hot_users)]
    for t in threads:
        t.start()
    time.sleep(args.before)

    phase.name = "outage"
    t0 = time.monotonic()
    subprocess.run(["bash", "-c", args.stop_cmd], check=True)
    print(f"database stopped ({time.monotonic() - t0:.2f} s to stop)")
    stopped = time.monotonic()
    if cold_users:
        # Tokens the proxy has not seen yet, verified while the database is down.
        cold = Client(args.base, timeout=args.timeout + 5)
        i = 0
        while time.monotonic() - stopped < args.outage:
            u = cold_users[i % len(cold_users)]
            s, body, took = cold.call("GET", f"{args.proxy_prefix}/cold/{i}", token=u["access"])
            pstats.record(s, body, took, u["sub"], cold=True)
            i += 1
            time.sleep(0.05)
        cold.close()
    else:
        time.sleep(args.outage)
    # Readiness at the end of the outage (longer than revocation.max_staleness,
    # 5 s): with the default when_stale = "serve" the outage alone must not
    # take the instance out of the load balancer, and the answer must be quick.
    ready = Client(args.base, timeout=args.timeout + 5)
    ready_status, ready_body, ready_took = ready.call("GET", "/readyz")
    ready.close()
    ready_at = time.monotonic() - stopped
    subprocess.run(["bash", "-c", args.start_cmd], check=True, stdout=subprocess.DEVNULL)
    restarted = time.monotonic()
    phase.name = "after"

    # Recovery: a database-backed request answers 200.
    probe = Client(args.base, timeout=args.timeout + 5)
    recovered = None
    while time.monotonic() - restarted < 30:
        s, _, _ = probe.call("GET", "/api/v1/users/me", token=sessions[0]["access"])
        if s == 200:
            recovered = time.monotonic() - restarted
            break
        time.sleep(0.02)
    time.sleep(args.after)
    stop.set()
    for t in threads:
        t.join(timeout=args.timeout + 10)

    print("\nresponses by phase (status: count), slowest response:")
    for p in ("before", "outage", "after"):
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(phase.stats[p].items()))
        print(f"  {p:7} {counts}  (slowest {phase.worst[p]:.2f} s)")
    total = sum(phase.stats["outage"].values())
    n503 = phase.stats["outage"][503]
    print(f"outage: {n503} of {total} requests answered 503 "
          f"(the rest needed no database: /check) ")
    n500 = sum(phase.stats[p][500] for p in phase.stats)
    hangs = sum(phase.stats[p][-1] for p in phase.stats)
    print(f"500s: {n500}; other 5xx or non-problem 503: {len(phase.bad)}; timeouts (> {args.timeout + 5:.0f} s): {hangs}")
    if phase.bad:
        ok = False
        for b in phase.bad[:5]:
            print(f"  FAIL {b}")
    if hangs:
        ok = False
    slowest = max(phase.worst.values())
    limit = args.timeout + 1
    print(f"slowest response: {slowest:.2f} s (limit {limit:.1f} s = database.connect_timeout + 1 s)")
    if slowest > limit:
        ok = False
        print("  FAIL: a request hung past the database timeout")
    if recovered is None:
        ok = False
        print("FAIL: no recovery within 30 s of the restart")
    else:
        verdict = "ok" if recovered <= 2 else "FAIL (limit 2 s)"
        ok &= recovered <= 2
        print(f"recovery: GET /users/me answered 200 {recovered:.2f} s after the restart: {verdict}")

    # Rotation bookkeeping against the table.
    rows = psql(args.db_url, "SELECT session_id, count(*), count(used_at), "
                             "count(*) FILTER (WHERE used_at IS NULL AND revoked_at IS NULL), "
                             "string_agg(encode(token_hash, 'hex'), ',') FILTER (WHERE used_at IS NULL AND revoked_at IS NULL) "
                             "FROM refresh_tokens GROUP BY session_id")
    table = {r[0]: r for r in rows}
    rotations = sum(s["rotations"] for s in sessions)
    mismatches = 0
    lost = 0
    for s in sessions:
        r = table.get(s["sid"])
        want_hash = hashlib.sha256(s["refresh"].encode()).hexdigest()
        if s["lost"]:
            # Exactly one rotation more than the client saw (the one whose
            # answer was lost), applied once: every token used but the lost
            # successor, which is live (409 within the grace) or revoked
            # with its session (reuse after the grace).
            lost += 1
            good = (r is not None and int(r[1]) == s["rotations"] + 2
                    and int(r[2]) == s["rotations"] + 1 and int(r[3]) <= 1 and r[4] != want_hash)
        else:
            good = (r is not None and int(r[1]) == s["rotations"] + 1 and int(r[2]) == s["rotations"]
                    and int(r[3]) == 1 and r[4] == want_hash)
        if not good or s["errors"]:
            mismatches += 1
            print(f"  FAIL session {s['sid']}: client saw {s['rotations']} rotations"
                  f"{' and lost one answer' if s['lost'] else ''}, "
                  f"table {r[1:4] if r else None}, errors {s['errors'][:3]}")
    # The current token of every client still refreshes (on a new
    # connection: the setup one has been idle past the server's timeout).
    dead = 0
    final = Client(args.base)
    for s in sessions:
        if s["lost"]:
            continue
        st, body, _ = final.call("POST", "/api/v1/auth/refresh", {"refresh_token": s["refresh"]})
        if st != 200:
            dead += 1
            print(f"  FAIL session {s['sid']}: current token refused: {st} {body}")
    print(f"refresh rotations: {rotations} acknowledged across {len(sessions)} sessions; "
          f"table mismatches: {mismatches}; current tokens refused: {dead}; "
          f"answers lost in the outage (committed, client got 503, must log in again): {lost}")
    recovered = sum(s["recovered"] for s in sessions)
    print(f"refreshes answered 503 and retried with the same token: {recovered} answered 200 "
          f"(the successor derived again, or the rotation done by the retry); {lost} too late for the grace")
    ok &= mismatches == 0 and dead == 0

    if proxying:
        echo.shutdown()
        echo.server_close()
        print("\nproxied requests by phase (ok = 200 from the upstream for the token's user):")
        for p in ("before", "outage", "after"):
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(pstats.stats[p].items(), key=str))
            print(f"  {p:7} {counts}  (slowest {pstats.worst[p]:.3f} s)")
        out_total = sum(pstats.stats["outage"].values())
        out_ok = pstats.stats["outage"]["ok"]
        cold_total, cold_ok = sum(pstats.cold.values()), pstats.cold["ok"]
        all_total = sum(sum(c.values()) for c in pstats.stats.values())
        all_ok = sum(c["ok"] for c in pstats.stats.values())
        proxy_ok = out_total >= 20 and out_ok == out_total and all_ok == all_total
        print(f"proxy: {out_ok}/{out_total} proxied requests 200 while PostgreSQL was down "
              f"({cold_ok}/{cold_total} with tokens first shown during the outage); "
              f"{all_ok}/{all_total} over the whole run; slowest {max(pstats.worst.values()) * 1000:.0f} ms: "
              + ("ok" if proxy_ok else "FAIL"))
        for b in pstats.bad[:5]:
            print(f"  FAIL {b}")
        if out_total < 20:
            print("  FAIL: too few proxied requests during the outage to judge")
        ok &= proxy_ok
    ready_ok = ready_status == 200 and ready_took < 1.5
    print(f"readiness: /readyz answered {ready_status} in {ready_took:.2f} s, "
          f"{ready_at:.1f} s into the outage (limit: 200 within 1.5 s): "
          + ("ok" if ready_ok else f"FAIL {ready_body}"))
    ok &= ready_ok
    print("db fault: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
