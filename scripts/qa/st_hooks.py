"""Schemathesis hooks for authgw (loaded through SCHEMATHESIS_HOOKS by
scripts/schemathesis.sh).

Authentication: every operation that declares `bearerAuth` gets a valid
access token. Admin operations (tags roles, users, audit) get an
administrator's token; the caller's own operations (tags auth, me) get an
ordinary user's, so that deleting "me" or changing "my" password is tested
as a user would. A fuzzed call may end the very session it used (logout,
logout-all, an admin's logout-all of a user, deleting the user): so before
each case the cached token is checked with GET /api/v1/auth/check (no
database, microseconds) and replaced by a fresh login when it is no longer
valid; a deleted user is signed up again.

Operations that declare `introspectionClient` (token introspection) get
HTTP Basic credentials of the configured introspection client.

Environment: AUTHGW_QA_BASE, AUTHGW_QA_ADMIN_LOGIN, AUTHGW_QA_ADMIN_PASSWORD,
AUTHGW_QA_USER_LOGIN, AUTHGW_QA_USER_PASSWORD, AUTHGW_QA_INTROSPECTION_ID,
AUTHGW_QA_INTROSPECTION_SECRET.
"""

import base64
import json
import os
import threading
import urllib.error
import urllib.request

import schemathesis

BASE = os.environ["AUTHGW_QA_BASE"]
ADMIN = (os.environ["AUTHGW_QA_ADMIN_LOGIN"], os.environ["AUTHGW_QA_ADMIN_PASSWORD"])
USER = (os.environ["AUTHGW_QA_USER_LOGIN"], os.environ["AUTHGW_QA_USER_PASSWORD"])
ADMIN_TAGS = {"roles", "users", "audit"}
INTROSPECTION = (
    os.environ.get("AUTHGW_QA_INTROSPECTION_ID", ""),
    os.environ.get("AUTHGW_QA_INTROSPECTION_SECRET", ""),
)

_lock = threading.Lock()
_tokens: dict[str, str] = {}
_logins = {"admin": 0, "user": 0}


def _call(method: str, path: str, body=None, token=None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw) if raw else {}
        except ValueError:
            return e.code, {}


def _login(who: str) -> str:
    login, password = ADMIN if who == "admin" else USER
    creds = {"login": login, "password": password}
    status, body = _call("POST", "/api/v1/auth/login", creds)
    if status == 401 and who == "user":
        # Deleted by a fuzzed DELETE /users/{id} or DELETE /users/me: sign up again.
        _call("POST", "/api/v1/auth/signup", creds)
        status, body = _call("POST", "/api/v1/auth/login", creds)
    if status != 200:
        raise RuntimeError(f"login as {login} failed: {status} {body}")
    _logins[who] += 1
    return body["access_token"]


def _valid_token(who: str) -> str:
    with _lock:
        token = _tokens.get(who)
        if token is None or _call("GET", "/api/v1/auth/check", token=token)[0] != 200:
            token = _tokens[who] = _login(who)
        return token


def _needs(case, scheme: str) -> bool:
    raw = case.operation.definition.raw
    return any(scheme in req for req in raw.get("security", []) or [])


@schemathesis.auth(refresh_interval=None, retry_on=[])
class AuthgwAuth:
    def get(self, case, ctx):
        if _needs(case, "introspectionClient"):
            pair = f"{INTROSPECTION[0]}:{INTROSPECTION[1]}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        if not _needs(case, "bearerAuth"):
            return None
        tags = set(case.operation.definition.raw.get("tags", []))
        return "Bearer " + _valid_token("admin" if tags & ADMIN_TAGS else "user")

    def set(self, case, data, ctx):
        if data is None:
            return
        case.headers = case.headers or {}
        case.headers["Authorization"] = data


def logins() -> dict:
    return dict(_logins)
