#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Property-based API tests: Schemathesis (PyPI) against a real `authgw serve`
# with docs/auth-openapi.yaml. scripts/test.sh runs it after `cargo test`; so
# can you:
#
#   scripts/schemathesis.sh
#
# It builds the debug binary, creates a fresh database (on the server the
# tests use: AUTHGW_TEST_DATABASE_URL, else 127.0.0.1:5432, else a private
# cluster under .data/), migrates it, generates a key, creates an admin with
# `authgw admin create --password-stdin`, signs up an ordinary user and serves
# on a free port with rate limits raised (one client IP sends everything).
# Authenticated operations get a valid token through scripts/qa/st_hooks.py:
# the admin's for roles/users/audit, the user's for auth/me.
#
# Fails on any 5xx and any response the document does not allow (status,
# content type, headers, body schema), and on every other Schemathesis check.
#
# Environment:
#   SCHEMATHESIS_MAX_EXAMPLES  cases per operation and phase (default 50)
#   SCHEMATHESIS_WORKERS       concurrent workers (default 2; 1 before Python 3.13)
#   SCHEMATHESIS_SEED          random seed (default: random, printed)
#   AUTHGW_QA_PYTHON           interpreter for the venv (default: python3.13 if any)
#   AUTHGW_QA_VENV             Python venv for schemathesis
#                              (default ~/.cache/authgw/schemathesis-venv-<python version>)
#   AUTHGW_QA_KEEP=1           keep the work directory (logs, report)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
# shellcheck source=lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"
# shellcheck source=lib/serve.sh
source "$ROOT/scripts/lib/serve.sh"

SCHEMATHESIS_VERSION='4.32.*'
step() { printf '\n==> %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
trap 'printf "error: scripts/schemathesis.sh failed at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (https://rustup.rs) and retry"
command -v python3 >/dev/null 2>&1 || die "python3 not found; install Python 3.10+ (Debian: apt-get install python3 python3-venv)"
command -v curl >/dev/null 2>&1 || die "curl not found (Debian: apt-get install curl)"

# --- schemathesis in a venv ----------------------------------------------------
# Python 3.13+ when there is one: on older ones, hypothesis's ast.parse in
# several worker threads at once can fail with "SystemError: AST constructor
# recursion depth mismatch" (CPython gh-106905), so they get one worker.
PYTHON=${AUTHGW_QA_PYTHON:-}
if [[ -z $PYTHON ]]; then
    for candidate in python3.14 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import venv' 2>/dev/null; then
            PYTHON=$candidate
            break
        fi
    done
fi
[[ -n $PYTHON ]] || die "no usable python3 (Debian: apt-get install python3 python3-venv)"
if "$PYTHON" -c 'import sys; sys.exit(sys.version_info >= (3, 13))'; then
    DEFAULT_WORKERS=1
else
    DEFAULT_WORKERS=2
fi
VENV=${AUTHGW_QA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/authgw/schemathesis-venv-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}
ST=$VENV/bin/schemathesis
if ! "$ST" --version 2>/dev/null | grep -q "version ${SCHEMATHESIS_VERSION%.\*}"; then
    step "installing schemathesis $SCHEMATHESIS_VERSION into $VENV ($("$PYTHON" --version))"
    "$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv $VENV failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
        || die "pip install schemathesis failed"
fi
printf '%s\n' "$("$ST" --version)" >&2

# --- the server ----------------------------------------------------------------
authgw_qa_build "$ROOT" || exit 1
ADMIN_URL=$(authgw_test_admin_url "$ROOT") || die "no PostgreSQL for the test database"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/authgw-schemathesis.XXXXXX")
cleanup() {
    authgw_qa_stop
    authgw_qa_drop_db
    if [[ ${AUTHGW_QA_KEEP:-} == 1 ]]; then
        printf 'kept %s\n' "$WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# One client IP sends every request: raise the per-IP limits and the lockout
# thresholds. Cheap argon2 parameters: the hashing cost is not under test here.
# Introspection gets a client of its own (st_hooks.py sends its credentials).
INTROSPECTION_ID=qa-introspection
INTROSPECTION_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
INTROSPECTION_SHA256=$(printf '%s' "$INTROSPECTION_SECRET" | sha256sum | cut -d' ' -f1)
step "authgw on a fresh database (limits raised for one client IP)"
authgw_qa_start "$WORK" "$ADMIN_URL" "
[limits]
auth_per_minute = 1000000
auth_burst = 1000000
lockout_threshold = 1000000
account_threshold = 1000000

[passwords]
memory_kib = 1024
iterations = 1

[[introspection.clients]]
id = \"$INTROSPECTION_ID\"
secret_sha256 = \"$INTROSPECTION_SHA256\"
" || die "could not start authgw"

USER_LOGIN=qa-user
USER_PASSWORD=$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')
USER_ID=$(authgw_qa_signup "$USER_LOGIN" "$USER_PASSWORD" | authgw_qa_json id)
[[ -n $USER_ID ]] || die "could not sign up $USER_LOGIN"
ADMIN_TOKEN=$(authgw_qa_token "$AUTHGW_QA_ADMIN_LOGIN" "$AUTHGW_QA_ADMIN_PASSWORD") || exit 1
authgw_qa_token "$USER_LOGIN" "$USER_PASSWORD" >/dev/null || exit 1
ROLE=qa-role
curl -fsS --max-time 30 -X POST "$AUTHGW_QA_BASE/api/v1/roles" -H "Authorization: Bearer $ADMIN_TOKEN" \
    -H 'Content-Type: application/json' --data-binary "{\"name\": \"$ROLE\"}" >/dev/null \
    || die "could not create role $ROLE"

# The cursor of the paginated listings is opaque: only a next_cursor the API
# returned is a cursor, which no schema can say, so a generated "valid" one
# is a wrong one and gets the documented 422. Grant and revoke get a real
# user and role, or every case would be a 404.
cat >"$WORK/schemathesis.toml" <<EOF
[[operations]]
include-operation-id-regex = "^(getMyHistory|listUsers|listAudit)\$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

# A mailed token cannot be generated: a schema-valid one is an unknown one
# (400). An address the schema's outline admits may still be one no mail
# can go to (422), and an address change needs the password (422 without).
[[operations]]
include-operation-id-regex = "^(verifyEmail|confirmPasswordReset)\$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]

[[operations]]
include-operation-id-regex = "^(signup|updateMe)\$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429", "5xx"]

[[operations]]
include-operation-id-regex = "^(grantRole|revokeRole)\$"
parameters = { id = "$USER_ID", name = "$ROLE" }

# A second factor's and a social login's credentials cannot be generated
# either: a schema-valid challenge, exchange code, TOTP or recovery code is
# an unknown one (400, 401), the test user has no factor (409), and a
# generated provider name is not a configured one (404).
[[operations]]
include-operation-id-regex = "^(loginMfa|enrolTotp|disableTotp|confirmTotp|regenerateRecoveryCodes|exchangeOauthCode|startOauthLogin|oauthCallback|startIdentityLink|unlinkMyIdentity|resetUserMfa|getUserIdentities|unlinkUserIdentity)\$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]
EOF

# --- schemathesis --------------------------------------------------------------
SEED=${SCHEMATHESIS_SEED:-$((RANDOM * 32768 + RANDOM))}
EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-50}
WORKERS=${SCHEMATHESIS_WORKERS:-$DEFAULT_WORKERS}
step "schemathesis run docs/auth-openapi.yaml --url $AUTHGW_QA_BASE (seed $SEED, $EXAMPLES examples, $WORKERS workers)"
status=0
(
    cd "$WORK"
    export AUTHGW_QA_BASE AUTHGW_QA_ADMIN_LOGIN AUTHGW_QA_ADMIN_PASSWORD
    export AUTHGW_QA_USER_LOGIN=$USER_LOGIN AUTHGW_QA_USER_PASSWORD=$USER_PASSWORD
    export AUTHGW_QA_INTROSPECTION_ID=$INTROSPECTION_ID AUTHGW_QA_INTROSPECTION_SECRET=$INTROSPECTION_SECRET
    export SCHEMATHESIS_HOOKS=st_hooks PYTHONPATH=$ROOT/scripts/qa
    "$ST" --config-file "$WORK/schemathesis.toml" run "$ROOT/docs/auth-openapi.yaml" \
        --url "$AUTHGW_QA_BASE" \
        --checks all \
        --workers "$WORKERS" \
        --max-examples "$EXAMPLES" \
        --seed "$SEED" \
        --request-timeout 30 \
        --generation-database none \
        --suppress-health-check too_slow,filter_too_much \
        --report junit,ndjson --report-dir "$WORK/report" \
        --output-sanitize false \
        --no-color
) 2>&1 | tee "$WORK/schemathesis.log" || status=$?

# --- figures -------------------------------------------------------------------
python3 "$ROOT/scripts/qa/st_figures.py" "$WORK/report" "$AUTHGW_QA_LOG" "$WORK/schemathesis.log" >&2 || status=1
if [[ $status -ne 0 ]]; then
    AUTHGW_QA_KEEP=1
    die "schemathesis found problems (seed $SEED; report and server log kept in $WORK)"
fi
step "schemathesis: no failures"
