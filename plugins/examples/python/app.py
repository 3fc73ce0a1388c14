"""premium-gate: the example policy in Python (componentize-py).

Config (JSON): {"prefix": "/films/premium", "any_of": ["subscriber"],
"deny_status": 402}. A request under `prefix` (the path itself or below it,
by whole segments) needs a caller (401) holding one of the roles `any_of`
(`deny_status`, default 403); everything else is allowed. The same policy
as role-rules with plugins/examples/premium-gate-role-rules.json, and the
same cases (plugins/examples/premium-gate-cases.toml). Built by
scripts/build-plugins.sh into plugins/dist/premium-gate-py.wasm.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import (
    Allow,
    Decision_Allow,
    Decision_Deny,
    Deny,
    Needs,
)

_config = {"prefix": "/", "any_of": [], "deny_status": 403}


def _refuse(message):
    raise Err(message)


class Policy(exports.Policy):
    def configure(self, config):
        try:
            given = json.loads(config)
        except ValueError as e:
            _refuse(f"config: not JSON: {e}")
        if not isinstance(given, dict):
            _refuse("config: must be an object")
        unknown = set(given) - {"prefix", "any_of", "deny_status"}
        if unknown:
            _refuse(f"config: unknown key {sorted(unknown)[0]!r}")
        prefix = given.get("prefix", "/")
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            _refuse("prefix: must be a path starting with '/'")
        any_of = given.get("any_of", [])
        if not isinstance(any_of, list) or not all(isinstance(r, str) for r in any_of):
            _refuse("any_of: must be a list of role names")
        status = given.get("deny_status", 403)
        if not isinstance(status, int) or not 400 <= status <= 599:
            _refuse("deny_status: must be an HTTP status in 400..599")
        _config.update(prefix=prefix.rstrip("/") or "/", any_of=any_of, deny_status=status)
        return Needs(headers=[], query=False, host=False, route=False, user=False, client_cert=False,
                     amr=False)

    def decide(self, request, identity):
        prefix = _config["prefix"]
        path = request.path
        under = prefix == "/" or path == prefix or path.startswith(prefix + "/")
        if not under:
            return Decision_Allow(Allow(set_headers=[], remove_headers=[]))
        if identity is None:
            return Decision_Deny(Deny(status=401, reason="log in first", code=None))
        if _config["any_of"] and not set(identity.roles) & set(_config["any_of"]):
            roles = ", ".join(_config["any_of"])
            return Decision_Deny(
                Deny(
                    status=_config["deny_status"],
                    reason=f"requires one of the roles: {roles}",
                    code=None,
                )
            )
        return Decision_Allow(Allow(set_headers=[], remove_headers=[]))
