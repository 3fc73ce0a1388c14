#!/usr/bin/env python3
"""A real SMTP server for the email tests (gateway/tests/email.rs), on aiosmtpd.

Started by gateway/tests/common/smtp.rs with the Python that scripts/test.sh
exports as AUTHGW_TEST_SMTP_PYTHON (a venv with aiosmtpd==1.4.6).

It listens on 127.0.0.1 (port 0, a free one, unless --port), prints one line
`PORT <n>` on stdout, then one JSON line per accepted message:

    {"mail_from": "...", "rcpt_tos": ["..."], "data_b64": "<the raw message>"}

(data_b64: the message bytes as received after DATA, dot-unstuffed, CRLF line
ends, base64). Diagnostics go to stderr. It exits when its stdin closes, so
it dies with the test that started it.

Options:
  --starttls CERT KEY   offer STARTTLS with this certificate chain and key (PEM)
                        and require it before anything but EHLO/HELO/NOOP/QUIT
  --auth USER:PASSWORD  require AUTH (PLAIN or LOGIN) before MAIL; wrong
                        credentials answer 535. Offered only after STARTTLS
                        when --starttls is given, else on the plain connection.
  --fail-first N        answer the first N DATA commands with
                        `451 4.3.0 try again later` (the message is not kept)
  --reject-all          answer every RCPT with `550 5.1.1 no such user`
  --port N              listen on this port instead of a free one (to bring a
                        stopped server back on the port the gateway knows)
"""

import argparse
import asyncio
import base64
import json
import logging
import socket
import ssl
import sys
import threading
import warnings

try:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError as exc:  # the harness turns exit code 3 into an install hint
    print(f"aiosmtpd not importable by {sys.executable}: {exc}", file=sys.stderr, flush=True)
    sys.exit(3)


def parse_args():
    p = argparse.ArgumentParser(description="SMTP server for the authgw email tests")
    p.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--auth", metavar="USER:PASSWORD")
    p.add_argument("--fail-first", type=int, default=0, metavar="N")
    p.add_argument("--reject-all", action="store_true")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    if args.auth is not None and ":" not in args.auth:
        p.error("--auth wants USER:PASSWORD")
    if args.fail_first < 0:
        p.error("--fail-first wants N >= 0")
    return args


def emit(obj_line):
    sys.stdout.write(obj_line + "\n")
    sys.stdout.flush()


class Handler:
    def __init__(self, fail_first, reject_all):
        self.fail_left = fail_first
        self.reject_all = reject_all

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject_all:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.fail_left > 0:
            self.fail_left -= 1
            print(f"DATA from {envelope.mail_from} answered 451 ({self.fail_left} more to fail)",
                  file=sys.stderr, flush=True)
            return "451 4.3.0 try again later"
        raw = envelope.original_content or b""
        emit(json.dumps({
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data_b64": base64.b64encode(raw).decode("ascii"),
        }))
        return "250 2.0.0 OK: queued as authgw-test"


def authenticator_for(user, password):
    want = (user.encode(), password.encode())

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and (auth_data.login, auth_data.password) == want)
        if not ok:
            print(f"AUTH {mechanism} refused", file=sys.stderr, flush=True)
        # handled=False: aiosmtpd answers 235 on success, 535 5.7.8 otherwise.
        return AuthResult(success=ok, handled=False)

    return authenticate


def exit_on_stdin_eof(loop, stop):
    """Reads stdin until EOF in a thread, then sets `stop` on the loop."""
    def reader():
        try:
            while sys.stdin.buffer.read1(4096):
                pass
        except (OSError, ValueError):
            pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=reader, name="stdin-eof", daemon=True).start()


async def main():
    args = parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="smtp server.py: %(levelname)s %(name)s: %(message)s")
    # Noise about choices made on purpose (AUTH on a plain loopback connection)
    # and aiosmtpd's own use of its deprecated Session.login_data.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    logging.getLogger("mail.log").addFilter(
        lambda r: not any(s in r.getMessage() for s in ("login_data is deprecated", "auth_require_tls == False")))

    tls_context = None
    if args.starttls:
        cert, key = args.starttls
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(cert, key)

    kwargs = {
        "hostname": "localhost",
        "ident": "authgw-test-smtp",
        "enable_SMTPUTF8": True,
        "timeout": 60,
    }
    if tls_context is not None:
        kwargs.update(tls_context=tls_context, require_starttls=True)
    if args.auth is not None:
        user, password = args.auth.split(":", 1)
        kwargs.update(
            authenticator=authenticator_for(user, password),
            auth_required=True,
            # With STARTTLS, AUTH only over TLS (as a real submission server);
            # without, on the plain loopback connection.
            auth_require_tls=tls_context is not None,
        )

    handler = Handler(args.fail_first, args.reject_all)
    loop = asyncio.get_running_loop()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    server = await loop.create_server(lambda: SMTP(handler, loop=loop, **kwargs), sock=sock)

    stop = asyncio.Event()
    exit_on_stdin_eof(loop, stop)
    emit(f"PORT {sock.getsockname()[1]}")
    try:
        await stop.wait()
    finally:
        server.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
