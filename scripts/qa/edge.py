"""Helpers shared by the edge-proxy soak checks (dbfault.py, upstream.py,
trapstorm.py), standard library only:

  * an echo upstream: a threaded HTTP/1.1 server on 127.0.0.1 that answers
    every request 200 with a JSON body naming itself and the identity headers
    authgw sent; in this process (start_echo) or as its own process
    (`python3 edge.py echo PORT`, which prints "ready PORT" once listening, so
    it can be killed with SIGKILL and started again on the same port);
  * what the kernel says about a process: open file descriptors, threads,
    VmRSS (/proc/<pid>/...);
  * the Prometheus text of the admin listener's /metrics, parsed;
  * is_problem: a response is an application/problem+json body of a status.
"""

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

ECHO_MARK = "authgw-qa-echo"


class EchoHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: authgw pools its connections
    timeout = 30  # an idle keep-alive connection ends its thread after this

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        received = self.rfile.read(length) if length else b""
        body = json.dumps({
            "upstream": ECHO_MARK,
            "pid": os.getpid(),
            "method": self.command,
            "path": self.path,
            "user": self.headers.get("X-User-Id", ""),
            "login": self.headers.get("X-User-Login", ""),
            "received": len(received),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


class EchoServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # bind again right after a SIGKILL (TIME_WAIT)
    request_queue_size = 128


def start_echo(port: int) -> EchoServer:
    """An echo upstream on 127.0.0.1:PORT, served by a daemon thread of this
    process; stop it with .shutdown() and .server_close()."""
    server = EchoServer(("127.0.0.1", port), EchoHandler)
    threading.Thread(target=server.serve_forever, name="echo-upstream", daemon=True).start()
    return server


def spawn_echo(port: int, ready_within: float = 10.0) -> tuple[subprocess.Popen, float]:
    """Starts `edge.py echo PORT` as its own process and waits until it
    listens. Returns (the process, seconds until it listened)."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "echo", str(port)],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    line = ""
    # readline blocks; the child prints one line or dies (EOF).
    timer = threading.Timer(ready_within, proc.kill)
    timer.start()
    try:
        line = proc.stdout.readline() if proc.stdout else ""
    finally:
        timer.cancel()
    if not line.startswith("ready"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the echo upstream on port {port} did not start (exit {proc.returncode})")
    return proc, time.monotonic() - start


def from_echo(body) -> bool:
    return isinstance(body, dict) and body.get("upstream") == ECHO_MARK


def is_problem(headers: dict, body, status: int) -> bool:
    """An application/problem+json response whose body carries `status`."""
    ctype = headers.get("content-type", "")
    return (ctype.split(";")[0].strip() == "application/problem+json"
            and isinstance(body, dict) and body.get("status") == status)


# --- /proc ---------------------------------------------------------------------
def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


# --- /metrics ------------------------------------------------------------------
_SAMPLE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metrics(admin_base: str, timeout: float = 5.0) -> list[tuple[str, dict, float]]:
    """Every sample of GET ADMIN/metrics as (name, labels, value)."""
    with urllib.request.urlopen(f"{admin_base}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


def metric(samples, name: str, **labels) -> float | None:
    """The sum of the samples of NAME whose labels include LABELS; None when
    no sample matches (the metric is not exported, or not yet)."""
    values = [v for n, l, v in samples if n == name and all(l.get(k) == str(w) for k, w in labels.items())]
    return sum(values) if values else None


def by_label(samples, name: str, label: str, **labels) -> dict[str, float]:
    """{value of LABEL: sum} over the samples of NAME matching LABELS."""
    out: dict[str, float] = {}
    for n, l, v in samples:
        if n == name and all(l.get(k) == str(w) for k, w in labels.items()):
            out[l.get(label, "")] = out.get(l.get(label, ""), 0.0) + v
    return out


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "echo":
        port = int(sys.argv[2])
        server = EchoServer(("127.0.0.1", port), EchoHandler)
        print(f"ready {port}", flush=True)
        server.serve_forever()
        return 0
    print("usage: edge.py echo PORT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
