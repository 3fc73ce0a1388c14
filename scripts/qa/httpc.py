"""A tiny HTTP/1.1 JSON client on the standard library, shared by the soak
checks (dbfault.py, abuse.py). One keep-alive connection per Client; every
call returns (status, body as JSON or text, seconds taken); a transport
failure or a timeout returns status 0 or -1 (timeout). The headers of the
last response are in Client.headers (lower-case names; empty after a
transport failure); Client.error names the transport failures of the last
call, if any ("(reused)": on a kept-alive connection), and Client.retried
says whether a GET was sent again after one."""

import base64
import http.client
import json
import socket
import time
import urllib.parse


class Client:
    def __init__(self, base: str, timeout: float = 30.0, source_ip: str | None = None):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.timeout = timeout
        self.source = (source_ip, 0) if source_ip else None
        self.conn = None
        self.headers: dict[str, str] = {}
        self.error = ""
        self.retried = False
        self.used = 0  # requests sent on the current connection

    def _connect(self):
        self.conn = http.client.HTTPConnection(
            self.host, self.port, timeout=self.timeout, source_address=self.source
        )
        self.used = 0

    def call(self, method: str, path: str, body=None, token: str | None = None, headers=None):
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        start = time.monotonic()
        self.headers = {}
        self.error = ""
        self.retried = False
        for attempt in (0, 1):
            if self.conn is None:
                self._connect()
            try:
                self.used += 1
                self.conn.request(method, path, body=data, headers=hdrs)
                resp = self.conn.getresponse()
                raw = resp.read()
                took = time.monotonic() - start
                self.headers = {k.lower(): v for k, v in resp.getheaders()}
                if resp.getheader("connection", "").lower() == "close":
                    self.close()
                try:
                    parsed = json.loads(raw) if raw else None
                except ValueError:
                    parsed = raw.decode("utf-8", "replace")
                return resp.status, parsed, took
            except socket.timeout:
                self.error = "timeout"
                self.close()
                return -1, None, time.monotonic() - start
            except (http.client.HTTPException, OSError) as e:
                err = f"{e!r}" + (" (reused)" if self.used > 1 else "")
                self.error = f"{self.error}; {err}" if self.error else err
                self.close()
                # A keep-alive connection the server closed: retry a GET once on
                # a new one (never a POST: it may have been applied).
                if attempt == 1 or method != "GET" or time.monotonic() - start > 1:
                    return 0, None, time.monotonic() - start
                self.retried = True
        return 0, None, time.monotonic() - start

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None


def claims(token: str) -> dict:
    """The (unverified) claims of a JWT."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
