#!/usr/bin/env python3
"""Open N keep-alive connections to a server, send one request on each and
read its response, then keep them all open and idle until stdin closes (or
SIGTERM). Prints `ready <open> <ok>` once every connection has been served,
then `open <n>` every second with the connections still open (a server may
close idle ones).

    idle_conns.py HOST PORT N PATH [BEARER_TOKEN]

The caller raises `ulimit -n` (N + a few) before starting it.
"""
import os
import select
import signal
import socket
import sys
import time


def main():
    host, port, n, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    token = sys.argv[5] if len(sys.argv) > 5 else ""
    req = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if token:
        req += f"Authorization: Bearer {token}\r\n"
    req = (req + "\r\n").encode()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    socks, ok = [], 0
    for i in range(n):
        s = socket.create_connection((host, port), timeout=30)
        s.sendall(req)
        # Read one response: headers, then Content-Length bytes.
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        if head.startswith(b"HTTP/1.1 200"):
            ok += 1
        elif i == 0:
            print(f"first response: {head[:200]!r}", file=sys.stderr, flush=True)
        socks.append(s)
    print(f"ready {len(socks)} {ok}", flush=True)

    # Stay idle; count the connections the server has not closed.
    alive = set(socks)
    while True:
        r, _, _ = select.select([sys.stdin], [], [], 1.0)
        if r and not sys.stdin.readline():
            break
        closed = [s for s in alive if _closed(s)]
        for s in closed:
            alive.discard(s)
            s.close()
        print(f"open {len(alive)}", flush=True)


def _closed(s):
    try:
        s.setblocking(False)
        data = s.recv(1, socket.MSG_PEEK)
        return data == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


if __name__ == "__main__":
    main()
