"""Slow and abusive clients against a running authgw (scripts/soak.sh).

  abuse.py BASE DB_URL CHECK [options]

CHECK is one of:
  slowloris    --conns N --header-timeout S: N connections trickle header
               bytes (one every 0.5 s) and never finish; N more connect and
               send nothing. Every one must be cut by the server within
               S + 2 s, and a normal client is served meanwhile.
  connections  --conns N: N concurrent keep-alive connections each get
               GET /healthz answered twice while all are open; a fresh
               client is served meanwhile.
  oversize     oversized headers get 431, an oversized body 413 (declared or
               chunked), the connection is not left hanging.
  bruteforce   --burst B --threshold T: one IP guesses a password; 429
               too_many_attempts must come after T failures, 429
               rate_limited after the burst; the (account, that IP) pair must be
               locked after T failures (its row in login_failures says so,
               and the right password from that IP gets 429), while the
               right password from another IP logs in at once (a flood
               locks the attacker out, never the owner); once the lock
               expires the right password from the first IP works again.

Each prints its figures; exit status 0 when the check holds, 1 otherwise."""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse

from httpc import Client

PASSWORD = "correct horse battery staple"


def addr(base):
    u = urllib.parse.urlsplit(base)
    return u.hostname, u.port


def served(base):
    s, _, took = Client(base, timeout=5).call("GET", "/healthz")
    return s == 200, took


# --- slowloris -------------------------------------------------------------------
async def slow_conn(host, port, trickle, deadline):
    """Seconds until the server closes the connection (None if it never did)."""
    reader, writer = await asyncio.open_connection(host, port)
    start = time.monotonic()
    try:
        if trickle:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            await writer.drain()
        while time.monotonic() - start < deadline:
            if trickle:
                try:
                    writer.write(b"X")
                    await writer.drain()
                except (ConnectionError, OSError):
                    return time.monotonic() - start
            try:
                data = await asyncio.wait_for(reader.read(4096), 0.5)
                if not data:
                    return time.monotonic() - start
                # A response (408/400) then close also counts as cut: read on.
            except asyncio.TimeoutError:
                pass
            except (ConnectionError, OSError):
                return time.monotonic() - start
        return None
    finally:
        writer.close()


async def slowloris(base, conns, header_timeout):
    host, port = addr(base)
    deadline = header_timeout + 10
    tasks = [asyncio.create_task(slow_conn(host, port, i % 2 == 0, deadline)) for i in range(2 * conns)]
    await asyncio.sleep(1)
    ok_mid, took_mid = await asyncio.to_thread(served, base)
    cut = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [c for c in cut if isinstance(c, BaseException)]
    times = [c for c in cut if isinstance(c, float)]
    never = sum(1 for c in cut if c is None)
    limit = header_timeout + 2
    late = [t for t in times if t > limit]
    print(f"slowloris: {conns} trickling + {conns} silent connections; cut by the server: {len(times)} "
          f"(after {min(times, default=0):.1f}-{max(times, default=0):.1f} s; header_read_timeout {header_timeout:g} s), "
          f"never cut: {never}, connect errors: {len(errors)}")
    print(f"  a normal client during the attack: {'served' if ok_mid else 'NOT served'} in {took_mid * 1000:.0f} ms")
    ok = not never and not late and not errors and ok_mid
    print("slowloris: " + ("ok" if ok else "FAILED"))
    return ok


# --- many connections -------------------------------------------------------------
async def one_conn(host, port, opened, release):
    reader, writer = await asyncio.open_connection(host, port)
    req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    answered = 0
    try:
        for round_ in range(2):
            writer.write(req)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await asyncio.wait_for(reader.readexactly(length), 60)
            answered += head.startswith(b"HTTP/1.1 200")
            if round_ == 0:
                opened.append(1)
                await release.wait()
        return answered
    finally:
        writer.close()


async def connections(base, conns):
    host, port = addr(base)
    release = asyncio.Event()
    opened = []
    start = time.monotonic()
    sem = asyncio.Semaphore(500)  # connect in waves, not in one SYN flood

    async def guarded():
        async with sem:
            pass
        return await one_conn(host, port, opened, release)

    tasks = [asyncio.create_task(guarded()) for _ in range(conns)]
    while len(opened) < conns and time.monotonic() - start < 60:
        if all(t.done() for t in tasks):
            break
        await asyncio.sleep(0.1)
    all_open = time.monotonic() - start
    ok_mid, took_mid = await asyncio.to_thread(served, base)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    answered = sum(r for r in results if isinstance(r, int))
    errors = [r for r in results if isinstance(r, BaseException)]
    print(f"connections: {len(opened)} of {conns} open at once after {all_open:.1f} s; "
          f"requests answered 200: {answered} of {2 * conns}; errors: {len(errors)}"
          + (f" (first: {errors[0]!r})" if errors else ""))
    print(f"  a fresh client with {len(opened)} connections open: "
          f"{'served' if ok_mid else 'NOT served'} in {took_mid * 1000:.0f} ms")
    ok = answered == 2 * conns and ok_mid
    print("connections: " + ("ok" if ok else "FAILED"))
    return ok


# --- oversized requests -------------------------------------------------------------
def raw_exchange(base, payload, timeout=10):
    """Sends raw bytes from 127.0.0.3 (a rate-limit bucket of its own);
    returns (status or None, seconds until the status line)."""
    host, port = addr(base)
    s = socket.create_connection((host, port), timeout=timeout, source_address=("127.0.0.3", 0))
    start = time.monotonic()
    try:
        try:
            s.sendall(payload)
        except OSError:
            pass  # the server may answer and close before reading everything
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        line = data.split(b"\r\n", 1)[0].split()
        return (int(line[1]) if len(line) > 1 else None), time.monotonic() - start
    except socket.timeout:
        return None, time.monotonic() - start
    finally:
        s.close()


def oversize(base):
    results = []

    def expect(name, payload, want):
        got, took = raw_exchange(base, payload)
        results.append(got == want)
        print(f"  {name}: {got} in {took * 1000:.0f} ms (want {want})")

    head = "POST /api/v1/auth/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    print("oversize:")
    # Where the limit lies (hyper's read buffer, about 400 KiB, unless the
    # server sets one): figures only.
    for size in (16, 64, 256):
        got, _ = raw_exchange(base, (f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * size * 1024}\r\n\r\n").encode())
        print(f"  one header of {size} KiB: {got} (figure only)")
    for size in (512 * 1024, 1024 * 1024):
        expect(f"one header of {size // 1024} KiB", (f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * size}\r\n\r\n").encode(), 431)
    many = "".join(f"X-H{i}: v\r\n" for i in range(200))
    expect("200 headers", f"GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode(), 431)
    body = json.dumps({"login": "big", "password": "p" * (70 * 1024)}).encode()
    expect("70 KiB body (Content-Length)", (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body, 413)
    expect("1 GB declared, nothing sent", (head + "Content-Length: 1000000000\r\n\r\n").encode(), 413)
    chunk = b"a" * 8192
    chunked = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(12)) + b"0\r\n\r\n"
    expect("96 KiB chunked body", (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunked, 413)
    ok = all(results)
    print("oversize: " + ("ok" if ok else "FAILED"))
    return ok


# --- brute force -----------------------------------------------------------------
def psql(db_url, sql):
    return subprocess.run([os.environ.get("PSQL", "psql"), "-X", "-A", "-t", "-d", db_url, "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def bruteforce(base, db_url, burst, threshold):
    victim = "victim"
    other = Client(base, source_ip="127.0.0.2")  # another client IP, own bucket and pair
    s, body, _ = other.call("POST", "/api/v1/auth/signup", {"login": victim, "password": PASSWORD})
    if s != 201:
        print(f"error: signup: {s} {body}")
        return False
    statuses, codes = [], []
    for i in range(burst + 10):
        # A connection per guess, as a brute-force client would (and a POST
        # is never retried on a reused connection the server closed).
        attacker = Client(base)
        s, body, _ = attacker.call("POST", "/api/v1/auth/login", {"login": victim, "password": f"guess-{i:04d}"})
        attacker.close()
        statuses.append(s)
        codes.append(body.get("code", "") if isinstance(body, dict) else "")
    first_429 = statuses.index(429) + 1 if 429 in statuses else None
    first_lock = codes.index("too_many_attempts") + 1 if "too_many_attempts" in codes else None
    first_limit = codes.index("rate_limited") + 1 if "rate_limited" in codes else None
    unexpected = [s for s in statuses if s not in (401, 429)]
    pair = f"FROM login_failures WHERE login = '{victim}' AND client = '127.0.0.1'"
    row = psql(db_url, f"SELECT failures, locked_until > now() {pair}")
    print(f"bruteforce: {len(statuses)} wrong guesses from one IP: "
          f"{statuses.count(401)} x 401, {statuses.count(429)} x 429 "
          f"({codes.count('rate_limited')} rate_limited, {codes.count('too_many_attempts')} too_many_attempts), "
          f"first 429 at attempt {first_429}: the pair's lock at {first_lock} (limits.lockout_threshold "
          f"{threshold}), the rate limit at {first_limit} (limits.auth_burst {burst}); "
          f"other statuses: {unexpected or 'none'}")
    s_owner, body_owner, _ = other.call("POST", "/api/v1/auth/login", {"login": victim, "password": PASSWORD})
    attacker = Client(base)
    s_locked, body_locked, _ = attacker.call("POST", "/api/v1/auth/login", {"login": victim, "password": PASSWORD})
    attacker.close()
    code = (lambda b: b.get("code", "") if isinstance(b, dict) else "")
    print(f"  login_failures (attacker's IP): failures|locked = {row}; the right password from the attacker's IP "
          f"while locked: {s_locked} {code(body_locked)}; from the owner's IP: {s_owner} {code(body_owner)}")
    history = psql(db_url, "SELECT outcome || ':' || count(*) FROM login_history h JOIN users u ON u.id = h.user_id "
                           f"WHERE u.login = '{victim}' GROUP BY outcome ORDER BY outcome")
    print(f"  login history: {' '.join(history.split())}")
    # The lock lasts lockout_base doubled per further failure; wait it out.
    until = psql(db_url, f"SELECT extract(epoch FROM locked_until - now()) {pair}")
    wait = max(0.0, float(until or 0)) + 0.5
    time.sleep(wait)
    attacker = Client(base)
    s_after, _, _ = attacker.call("POST", "/api/v1/auth/login", {"login": victim, "password": PASSWORD})
    attacker.close()
    print(f"  after the lock expired ({wait:.1f} s later): right password from the attacker's IP {s_after}")
    failed, _, locked = row.partition("|")
    # The bucket refills while the guesses run (auth_per_minute): allow a few.
    ok = (first_lock == threshold + 1 and first_limit is not None and burst < first_limit <= burst + 3
          and not unexpected
          and int(failed or 0) >= threshold and locked == "t" and s_locked == 429
          and s_owner == 200 and s_after == 200)
    print("bruteforce: " + ("ok" if ok else "FAILED"))
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("db_url")
    ap.add_argument("check", choices=["slowloris", "connections", "oversize", "bruteforce"])
    ap.add_argument("--conns", type=int, default=200)
    ap.add_argument("--header-timeout", type=float, default=10)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--threshold", type=int, default=5)
    a = ap.parse_args()
    if a.check == "slowloris":
        ok = asyncio.run(slowloris(a.base, a.conns, a.header_timeout))
    elif a.check == "connections":
        ok = asyncio.run(connections(a.base, a.conns))
    elif a.check == "oversize":
        ok = oversize(a.base)
    else:
        ok = bruteforce(a.base, a.db_url, a.burst, a.threshold)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
