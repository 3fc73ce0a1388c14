"""Database fault under load (scripts/soak.sh): PostgreSQL is stopped in the
middle of a mixed load and started again.

  dbfault.py BASE DB_URL --stop-cmd CMD --start-cmd CMD
             [--sessions 12] [--before 5] [--outage 8] [--after 10]
             [--timeout 5]

Checks, each printed with its figures:
  * no 500 and no other 5xx than 503 at any time; every 503 is a
    problem+json body;
  * no request takes longer than --timeout (database.connect_timeout) plus
    one second: an outage is answered, not hung on;
  * recovery: after CMD-start returns, a database-backed request
    (GET /api/v1/users/me) answers 200 within 2 s;
  * refresh rotations: each session is refreshed by one worker that keeps the
    token it last received; afterwards the refresh_tokens table must hold,
    per session, exactly 1 + (rotations the client saw succeed) tokens, all
    used but one, and that one is the client's current token (no rotation
    lost, none applied twice); and each client's current token still
    refreshes.

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
        if op == "refresh":
            s, body, took = c.call("POST", "/api/v1/auth/refresh", {"refresh_token": session["refresh"]})
            phase.record(op, s, body, took)
            if s == 200:
                session["refresh"] = body["refresh_token"]
                session["access"] = body["access_token"]
                session["rotations"] += 1
            elif s not in (503, 429):
                session["errors"].append((s, body))
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
    args = ap.parse_args()
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
                         "sid": claims(body["access_token"])["sid"], "rotations": 0, "errors": []})

    phase = Phase()
    stop = threading.Event()
    threads = [threading.Thread(target=worker, args=(args.base, s, phase, stop, args.timeout,
                                                     random.Random(i)), daemon=True)
               for i, s in enumerate(sessions)]
    for t in threads:
        t.start()
    time.sleep(args.before)

    phase.name = "outage"
    t0 = time.monotonic()
    subprocess.run(["bash", "-c", args.stop_cmd], check=True)
    print(f"database stopped ({time.monotonic() - t0:.2f} s to stop)")
    time.sleep(args.outage)
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
    for s in sessions:
        r = table.get(s["sid"])
        want_hash = hashlib.sha256(s["refresh"].encode()).hexdigest()
        good = (r is not None and int(r[1]) == s["rotations"] + 1 and int(r[2]) == s["rotations"]
                and int(r[3]) == 1 and r[4] == want_hash)
        if not good or s["errors"]:
            mismatches += 1
            print(f"  FAIL session {s['sid']}: client saw {s['rotations']} rotations, "
                  f"table {r[1:4] if r else None}, errors {s['errors'][:3]}")
    # The current token of every client still refreshes (on a new
    # connection: the setup one has been idle past the server's timeout).
    dead = 0
    final = Client(args.base)
    for s in sessions:
        st, body, _ = final.call("POST", "/api/v1/auth/refresh", {"refresh_token": s["refresh"]})
        if st != 200:
            dead += 1
            print(f"  FAIL session {s['sid']}: current token refused: {st} {body}")
    print(f"refresh rotations: {rotations} acknowledged across {len(sessions)} sessions; "
          f"table mismatches: {mismatches}; current tokens refused: {dead}")
    ok &= mismatches == 0 and dead == 0
    print("db fault: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
