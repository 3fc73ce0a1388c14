// premium-gate: the example policy in JavaScript (componentize-js).
// Config (JSON): {"prefix": "/films/premium", "any_of": ["subscriber"],
// "deny_status": 402}. A request under `prefix` (the path itself or below
// it, by whole segments) needs a caller (401) holding one of the roles
// `any_of` (`deny_status`, default 403); everything else is allowed. The
// same policy as role-rules with plugins/examples/premium-gate-role-rules.json
// and the Python example, and the same cases.

let settings = { prefix: "/", anyOf: [], denyStatus: 403 };

const ALLOW = { tag: "allow", val: { setHeaders: [], removeHeaders: [] } };

function deny(status, reason) {
  // code: the problem code the client gets; undefined: policy_denied.
  return { tag: "deny", val: { status, reason, code: undefined } };
}

export const policy = {
  configure(config) {
    let given;
    try {
      given = JSON.parse(config);
    } catch (e) {
      throw `config: not JSON: ${e}`;
    }
    if (given === null || typeof given !== "object" || Array.isArray(given)) {
      throw "config: must be an object";
    }
    for (const key of Object.keys(given)) {
      if (!["prefix", "any_of", "deny_status"].includes(key)) {
        throw `config: unknown key '${key}'`;
      }
    }
    const prefix = given.prefix ?? "/";
    if (typeof prefix !== "string" || !prefix.startsWith("/")) {
      throw "prefix: must be a path starting with '/'";
    }
    const anyOf = given.any_of ?? [];
    if (!Array.isArray(anyOf) || !anyOf.every((r) => typeof r === "string")) {
      throw "any_of: must be a list of role names";
    }
    const status = given.deny_status ?? 403;
    if (!Number.isInteger(status) || status < 400 || status > 599) {
      throw "deny_status: must be an HTTP status in 400..599";
    }
    settings = { prefix: prefix.replace(/\/+$/, "") || "/", anyOf, denyStatus: status };
    return { headers: [], query: false, host: false, route: false, user: false, clientCert: false,
      amr: false };
  },

  decide(request, identity) {
    const { prefix, anyOf, denyStatus } = settings;
    const path = request.path;
    const under = prefix === "/" || path === prefix || path.startsWith(prefix + "/");
    if (!under) {
      return ALLOW;
    }
    if (identity === undefined) {
      return deny(401, "log in first");
    }
    if (anyOf.length > 0 && !identity.roles.some((r) => anyOf.includes(r))) {
      return deny(denyStatus, `requires one of the roles: ${anyOf.join(", ")}`);
    }
    return ALLOW;
  },
};
