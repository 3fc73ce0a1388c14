"""Hostile requests against a running authgw (scripts/soak.sh hostile).

  hostile.py BASE [--count N] [--seed S] [--threads T]

Starts its own recording upstream on 127.0.0.1 (--upstream-port), which
authgw's config must route to:

  /films  auth = "optional", role-rules with the cinema rules
          (/films/premium needs subscriber, /films/18plus adult,
          /films/trial trial or subscriber, the rest of /films is public)
  /vault  auth = "required"
  /ws     auth = "optional", websocket = true

Then it replays N generated variants (paths with dot segments, encodings,
repeated slashes, path parameters, backslashes, control bytes, cross-route
climbs; spoofed identity and forwarding headers under many spellings;
upgrade tokens other than websocket) as raw bytes over TCP, anonymously or
with the token in SOAK_TOKEN (a user with no roles), and judges only what
the upstream received, as a lenient upstream would read it (one
percent-decode, backslash as a separator, dot segments resolved, path
parameters stripped):

  protected served  the upstream got a path the caller may not reach
                    (premium, 18plus, trial, or /vault anonymously, or
                    anything outside the routes)
  identity spoofed  a header that normalizes to x-user-* other than the
                    values authgw sets for the caller
  forwarding kept   Forwarded, X-Real-IP, X-Original-URL, X-Rewrite-URL, or
                    an X-Forwarded-For naming anyone but the peer
  tunnels opened    a 101 answered to anything but Upgrade: websocket
  smuggled          the upstream saw more requests than probes sent

Prints the figures; exit status 0 when all five are zero."""

import argparse
import base64
import json
import os
import posixpath
import random
import re
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

PROBE = "x-probe"

# --- the recording upstream ----------------------------------------------------


class Record:
    def __init__(self, target, headers):
        self.target = target
        self.headers = headers  # [(name as sent, value)]

    def get(self, name):
        return [v for n, v in self.headers if n.lower() == name]


RECORDS: list[Record] = []
RECORDS_LOCK = threading.Lock()


class Recorder(socketserver.BaseRequestHandler):
    """Reads HTTP/1.1 requests as bytes, records the request target and the
    header names exactly as received, answers 200 (or 101 echoing the
    Upgrade token it was asked for: the most permissive upstream)."""

    def handle(self):
        sock = self.request
        sock.settimeout(10)
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
            parts = lines[0].split(" ")
            target = parts[1] if len(parts) > 1 else ""
            headers = []
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers.append((name, value.strip()))
            rec = Record(target, headers)
            with RECORDS_LOCK:
                RECORDS.append(rec)
            length = int((rec.get("content-length") or ["0"])[0] or 0)
            while len(buf) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
            buf = buf[length:]
            upgrade = rec.get("upgrade")
            if upgrade:
                sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                             + b"Upgrade: " + upgrade[0].encode("latin-1") + b"\r\n\r\n")
                time.sleep(0.05)
                return
            body = b"served " + target.encode("latin-1", "replace")
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)


class RecorderServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


# --- what a lenient upstream makes of a path -----------------------------------


def upstream_view(target: str) -> str:
    """The path as the most lenient upstream resolves it: path parameters
    stripped (Tomcat, before decoding), one percent-decode, backslashes as
    separators (IIS), dot segments and repeated slashes resolved."""
    if target.startswith(("http://", "https://")):
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    path = target.split("?", 1)[0].split("#", 1)[0]
    path = "/".join(seg.split(";", 1)[0] for seg in path.split("/"))
    path = urllib.parse.unquote(path, errors="replace").replace("\\", "/")
    path = path.split("\x00", 1)[0]
    resolved = posixpath.normpath("/" + path)
    return "/" + resolved.lstrip("/")


def under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def allowed(path: str, authenticated: bool) -> bool:
    """What the cinema rules let a caller with no roles reach."""
    if under(path, "/films"):
        return not any(under(path, p) for p in ("/films/premium", "/films/18plus", "/films/trial"))
    if under(path, "/vault"):
        return authenticated
    return under(path, "/ws")


# --- generated variants --------------------------------------------------------

PROTECTED = ["/films/premium/", "/films/18plus/index.html", "/films/trial/", "/vault/x", "/etc/passwd"]
DOT = [".", "%2e", "%2E"]
SLASH_SUBS = ["/", "//", "///", "/./", "/%2e/", "/%2E/", "/x/../", "/x/%2e%2e/", "/x/%2E%2e/",
              "/x/.%2e/", "%2f", "%2F", "%5c", "%5C", "\\", "/x/..\\", "/;x/", "/x;y/../",
              "/x/..;/", "/%00/", "/%09/", "/x/%252e%252e/", "/%c0%ae%c0%ae/", "/%ef%bc%8e%ef%bc%8e/"]


def encode_some(seg: str, rng: random.Random) -> str:
    out = []
    for ch in seg:
        if ch.isalnum() and rng.random() < 0.4:
            hx = f"{ord(ch):02x}"
            out.append("%" + (hx.upper() if rng.random() < 0.5 else hx))
        else:
            out.append(ch)
    return "".join(out)


def path_variants(rng: random.Random, n: int) -> list[str]:
    out = [
        "/films/x/../premium/", "/films//premium/", "/films/%70remium/", "/films/./premium/",
        "/films/%2e%2e/films/18plus/", "/films/../vault/x", "/films/%2e%2e/vault/x",
        "/films/%2E%2E/vault/x", "/films/..%2fvault/x", "/films/..%5cvault/x", "/films\\..\\vault\\x",
        "/films/premium%2f", "/films;/premium/", "/films/premium;x/", "/films/..;/vault/x",
        "/films/../../vault/x", "/../films/premium/", "/films/%2e%2e/%2e%2e/etc/passwd",
        "/films/%00/../premium/", "/films/\tpremium/", "/films/premium%20/", "/films/PREMIUM/",
        "/films/%252e%252e/vault/x", "/ws/../vault/x", "/ws/%2e%2e/films/premium/",
        "http://localhost/films/premium/", "//films/premium/", "/films/premium#/",
    ]
    while len(out) < n:
        target = rng.choice(PROTECTED)
        segs = [s for s in target.split("/") if s]
        # Start inside a route the caller may reach, then walk to the target.
        start = rng.choice(["/films", "/films/free", "/ws", "/films/a/b"])
        depth = start.count("/")
        ups = rng.choice([depth, depth + 1, depth - 1 if depth > 1 else depth])
        dot2 = rng.choice(DOT) + rng.choice(DOT)
        sep = rng.choice(SLASH_SUBS)
        climb = (sep if sep.startswith("/") else "/").join([dot2] * ups)
        body = "/".join(encode_some(s, rng) if rng.random() < 0.5 else s for s in segs)
        kind = rng.random()
        if kind < 0.45:
            path = f"{start}/{climb}/{body}"
        elif kind < 0.8:
            # No climb: the target itself, mangled in place.
            path = "/" + body
            for _ in range(rng.randint(1, 3)):
                i = path.find("/", rng.randrange(len(path)))
                if i >= 0:
                    path = path[:i] + rng.choice(SLASH_SUBS) + path[i + 1:]
        else:
            path = f"{start}{sep}{dot2}{sep}{body}"
        if not path.startswith("/"):
            path = "/" + path
        if target.endswith("/") and rng.random() < 0.5:
            path += "/"
        if rng.random() < 0.15:
            path += "?" + rng.choice(["a=1", "x=/../vault", "%2e%2e", "a=1&a=2"])
        out.append(path)
    return out[:n]


IDENTITY_NAMES = ["X-User-Id", "x-user-id", "X_User_Id", "X_USER_ID", "x-USER_id", "X-User_Admin",
                  "X_USER_ADMIN", "x_user_roles", "X-User-Roles", "X-USER-LOGIN", "x-user-extra",
                  "X_User-Login"]
FORWARDING = [("Forwarded", "for=10.0.0.1;host=admin.internal;proto=https"),
              ("X-Real-IP", "10.0.0.1"), ("X-Original-URL", "/vault/x"),
              ("X-Rewrite-URL", "/films/premium/"), ("X-Forwarded-For", "10.0.0.1"),
              ("X-Forwarded-Host", "admin.internal"), ("X-Forwarded-Proto", "https"),
              ("x_forwarded_for", "10.0.0.2"), ("X-Forwarded-Prefix", "/vault"),
              ("X-Original-URI", "/vault/x")]
UPGRADES = ["h2c", "H2C", "h2c, websocket", "websocket, h2c", "HTTP/2.0", "TLS/1.2", "foo",
            "websocket/13 h2c", " h2c"]


class Probe:
    def __init__(self, pid, method, target, headers, token, route_kind):
        self.pid, self.method, self.target = pid, method, target
        self.headers, self.token, self.kind = headers, token, route_kind
        self.status = None

    def raw(self, host) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1", f"Host: {host}", f"{PROBE}: {self.pid}"]
        if self.token:
            lines.append(f"Authorization: Bearer {self.token}")
        lines += [f"{n}: {v}" for n, v in self.headers]
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def probes(rng, count, token):
    out = []
    n_paths = count * 6 // 10
    for path in path_variants(rng, n_paths):
        tok = token if rng.random() < 0.3 else None
        out.append(Probe(len(out), rng.choice(["GET", "GET", "HEAD", "POST"]), path, [], tok, "path"))
    while len(out) < count * 85 // 100:
        names = rng.sample(IDENTITY_NAMES, rng.randint(1, 3))
        hdrs = [(n, rng.choice(["00000000-0000-0000-0000-000000000001", "true", "subscriber,adult",
                                "admin"])) for n in names]
        hdrs += rng.sample(FORWARDING, rng.randint(0, 3))
        tok = token if rng.random() < 0.5 else None
        target = rng.choice(["/films/", "/films/free", "/vault/x" if tok else "/films/a"])
        out.append(Probe(len(out), "GET", target, hdrs, tok, "header"))
    while len(out) < count:
        up = rng.choice(UPGRADES)
        hdrs = [("Upgrade", up), ("Connection", rng.choice(["Upgrade", "upgrade, HTTP2-Settings"]))]
        if "h2c" in up.lower():
            hdrs.append(("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"))
        target = rng.choice(["/ws/chat", "/films/", "/ws/../films/premium/"])
        out.append(Probe(len(out), "GET", target, hdrs, token if rng.random() < 0.3 else None, "upgrade"))
    return out


def send(base_host, base_port, probe: Probe):
    try:
        with socket.create_connection((base_host, base_port), timeout=10) as s:
            s.sendall(probe.raw(f"{base_host}:{base_port}"))
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
            probe.status = int(m.group(1)) if m else 0
    except OSError:
        probe.status = -1


def jwt_sub(token):
    if not token:
        return None
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))["sub"]


def judge(all_probes, token):
    by_id = {str(p.pid): p for p in all_probes}
    sub = jwt_sub(token)
    breaches = Counter()
    examples = {}
    per_probe = Counter()
    for rec in RECORDS:
        ids = rec.get(PROBE)
        p = by_id.get(ids[0]) if ids else None
        if p is None:
            breaches["unknown request"] += 1
            examples.setdefault("unknown request", rec.target)
            continue
        per_probe[p.pid] += 1
        authenticated = p.token is not None
        view = upstream_view(rec.target)
        if not allowed(view, authenticated):
            breaches["protected served"] += 1
            examples.setdefault("protected served", f"sent {p.target!r} -> upstream got {rec.target!r} ({view})")
        # What authgw itself sets for a caller with no roles: each once,
        # in hyper's lower-case spelling.
        expected = {"x-user-id": sub, "x-user-admin": "false", "x-user-roles": "",
                    "x-user-login": None} if authenticated else {}
        seen = Counter()
        for name, value in rec.headers:
            norm = name.lower().replace("_", "-")
            if norm.startswith("x-user-"):
                seen[norm] += 1
                ok = (name == norm and norm in expected and seen[norm] == 1
                      and (expected[norm] is None or value == expected[norm]))
                if not ok:
                    breaches["identity spoofed"] += 1
                    examples.setdefault("identity spoofed", f"probe {p.pid}: {name}: {value}")
            spoofed_forwarding = (
                norm in ("forwarded", "x-real-ip", "x-original-url", "x-rewrite-url", "x-original-uri",
                         "x-forwarded-prefix")
                or (norm.startswith("x-forwarded-") and name != norm)
                or (name == "x-forwarded-for" and value.strip() not in ("127.0.0.1", "::1"))
                or (name == "x-forwarded-host" and "admin.internal" in value)
                or (name == "x-forwarded-proto" and value != "http"))
            if spoofed_forwarding:
                breaches["forwarding kept"] += 1
                examples.setdefault("forwarding kept", f"probe {p.pid}: {name}: {value}")
            if norm == "upgrade" and value.strip().lower() != "websocket":
                breaches["upgrade passed"] += 1
                examples.setdefault("upgrade passed", f"probe {p.pid}: Upgrade: {value}")
    for p in all_probes:
        if p.status == 101 and p.kind == "upgrade":
            breaches["tunnels opened"] += 1
            examples.setdefault("tunnels opened", f"{p.target} with {p.headers}")
    smuggled = sum(c - 1 for c in per_probe.values() if c > 1)
    if smuggled:
        breaches["smuggled"] += smuggled
    return breaches, examples


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--upstream-port", type=int, required=True)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    token = os.environ.get("SOAK_TOKEN") or None

    server = RecorderServer(("127.0.0.1", args.upstream_port), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    u = urllib.parse.urlsplit(args.base)
    rng = random.Random(args.seed)
    all_probes = probes(rng, args.count, token)
    started = time.monotonic()
    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(lambda p: send(u.hostname, u.port, p), all_probes))
    elapsed = time.monotonic() - started
    time.sleep(0.3)  # the last tunnels' upstream handlers record before closing
    server.shutdown()

    statuses = Counter(p.status for p in all_probes)
    kinds = Counter(p.kind for p in all_probes)
    breaches, examples = judge(all_probes, token)
    print(f"hostile: {len(all_probes)} probes in {elapsed:.1f} s "
          f"({kinds['path']} paths, {kinds['header']} header sets, {kinds['upgrade']} upgrades), seed {args.seed}")
    print("hostile statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items(), key=lambda x: str(x[0]))))
    print(f"hostile upstream received: {len(RECORDS)} requests")
    for what in ("protected served", "identity spoofed", "forwarding kept", "upgrade passed",
                 "tunnels opened", "smuggled", "unknown request"):
        line = f"hostile {what}: {breaches[what]}"
        if breaches[what]:
            line += f" (e.g. {examples.get(what, '')})"
        print(line)
    errors = statuses.get(500, 0) + statuses.get(-1, 0) + statuses.get(0, 0)
    print(f"hostile 500s or dropped: {errors}")
    return 1 if sum(breaches.values()) or statuses.get(500, 0) else 0


if __name__ == "__main__":
    sys.exit(main())
