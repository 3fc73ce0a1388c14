#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The full check: formatting, clippy, plugins, then every test against a real
# PostgreSQL. CI runs this (through .ci/run); so can you:
#
#   scripts/test.sh [extra cargo test args, e.g. -- --nocapture]
#
# Database for the tests (an admin connection; the tests create and drop
# their own databases): AUTHGW_TEST_DATABASE_URL if set, else the server at
# postgresql://postgres@127.0.0.1:5432/postgres if it answers, else a private
# cluster under .data/ (started, and left running, by this script).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
# shellcheck source=lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"

step() { printf '\n==> %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
trap 'printf "error: scripts/test.sh failed at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (https://rustup.rs) and retry"

# --- toolchain components ----------------------------------------------------
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    step "rustup component add rustfmt clippy"
    command -v rustup >/dev/null 2>&1 || die "cargo fmt/clippy missing and rustup not found; install the rustfmt and clippy components"
    rustup component add rustfmt clippy || die "rustup component add rustfmt clippy failed"
fi

step "cargo fmt --all --check"
cargo fmt --all --check || die "formatting differs; run 'cargo fmt --all'"

# Plugins first: the Rust build may embed or test against plugins/dist/.
if [[ -f scripts/build-plugins.sh && -r scripts/build-plugins.sh ]]; then
    step "scripts/build-plugins.sh"
    bash scripts/build-plugins.sh || die "scripts/build-plugins.sh failed"
fi
if [[ -f plugins/Cargo.toml ]]; then
    step "plugins workspace: fmt, clippy (host and wasm32-wasip2), native tests"
    (cd plugins && cargo fmt --all --check && cargo clippy --workspace --all-targets -- -D warnings \
        && cargo clippy --workspace --target wasm32-wasip2 -- -D warnings && cargo test --workspace) \
        || die "plugins workspace checks failed (run them in plugins/)"
fi

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings || die "clippy reported problems"

# --- database for the tests --------------------------------------------------
step "test database"
DEFAULT_URL=postgresql://postgres@127.0.0.1:5432/postgres
if [[ -n ${AUTHGW_TEST_DATABASE_URL:-} ]]; then
    printf 'using AUTHGW_TEST_DATABASE_URL=%s\n' "$(authgw_pg_redact "$AUTHGW_TEST_DATABASE_URL")" >&2
elif authgw_pg_answers "$DEFAULT_URL" 3; then
    AUTHGW_TEST_DATABASE_URL=$DEFAULT_URL
    printf 'using the server at %s\n' "$AUTHGW_TEST_DATABASE_URL" >&2
else
    printf 'no server answers at %s; using a private cluster under .data/\n' "$DEFAULT_URL" >&2
    authgw_find_pg_bin || exit 1
    AUTHGW_TEST_DATABASE_URL=$(authgw_private_cluster "$ROOT/.data") \
        || die "could not start the private PostgreSQL cluster under $ROOT/.data"
    printf 'using %s\n' "$AUTHGW_TEST_DATABASE_URL" >&2
fi
export AUTHGW_TEST_DATABASE_URL

# --- the real proxies of the forward-auth tests -------------------------------
# gateway/tests/forward_auth_proxies.rs runs nginx (auth_request) and Caddy
# (forward_auth) from Debian in front of an echo app; it fails under CI when
# they are missing, so install them here (as root, with apt-get).
# gateway/tests/tls.rs and upstream_tls.rs need the TLS peers too: curl,
# openssl (s_client) and h2load (nghttp2-client), and nginx as an HTTPS
# upstream.
step "nginx, caddy, curl, openssl and h2load for the forward-auth and TLS tests"
proxies_missing=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || proxies_missing+=(nginx-light)
command -v caddy >/dev/null 2>&1 || proxies_missing+=(caddy)
command -v curl >/dev/null 2>&1 || proxies_missing+=(curl)
command -v openssl >/dev/null 2>&1 || proxies_missing+=(openssl)
command -v h2load >/dev/null 2>&1 || proxies_missing+=(nghttp2-client)
if ((${#proxies_missing[@]})); then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        printf 'installing %s with apt-get\n' "${proxies_missing[*]}" >&2
        apt-get -q update >&2 || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends "${proxies_missing[@]}" >&2 \
            || die "apt-get install ${proxies_missing[*]} failed"
        # The packages start their system services; the tests run their own.
        for svc in nginx caddy; do
            if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
        done
    else
        printf '\n!!!!!!!! %s missing and not installable here (not root or no apt-get):\n' "${proxies_missing[*]}" >&2
        printf '!!!!!!!! the forward-auth proxy and TLS tests will fail\n\n' >&2
    fi
fi

# --- Chromium and playwright-core for the browser tests -----------------------
# gateway/tests/browser.rs drives Debian's Chromium (headless) with
# playwright-core, pinned by gateway/tests/browser/package-lock.json; it fails
# when either is missing, so install Chromium here (as root, with apt-get) and
# the npm package whenever node_modules is missing or older than the lock.
step "chromium and playwright-core for the browser tests"
if [[ ! -x /usr/bin/chromium ]]; then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        printf 'installing chromium with apt-get\n' >&2
        apt-get -q update >&2 || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends chromium >&2 \
            || die "apt-get install chromium failed"
    else
        printf '\n!!!!!!!! chromium missing and not installable here (not root or no apt-get):\n' >&2
        printf '!!!!!!!! the browser tests (gateway/tests/browser.rs) will fail\n\n' >&2
    fi
fi
browser_dir=gateway/tests/browser
if [[ ! -f $browser_dir/node_modules/.package-lock.json || $browser_dir/package-lock.json -nt $browser_dir/node_modules/.package-lock.json ]]; then
    command -v npm >/dev/null 2>&1 || die "npm not found; install Node.js and npm (apt-get install nodejs npm)"
    (cd "$browser_dir" && npm ci --no-audit --no-fund >&2) || die "npm ci in $browser_dir failed"
fi

# --- aiosmtpd for the email tests ----------------------------------------------
# gateway/tests/email.rs delivers to a real SMTP server: gateway/tests/smtp/
# server.py on aiosmtpd (PyPI, pinned), run by the Python this step exports as
# AUTHGW_TEST_SMTP_PYTHON: the caller's if it is set (it must import aiosmtpd),
# else a venv of its own under the user's cache, installed the first time.
step "aiosmtpd for the email tests"
AIOSMTPD_VERSION=1.4.6
if [[ -n ${AUTHGW_TEST_SMTP_PYTHON:-} ]]; then
    "$AUTHGW_TEST_SMTP_PYTHON" -c 'import aiosmtpd' 2>/dev/null \
        || die "AUTHGW_TEST_SMTP_PYTHON=$AUTHGW_TEST_SMTP_PYTHON cannot import aiosmtpd (pip install aiosmtpd==$AIOSMTPD_VERSION), or unset it"
    printf 'using AUTHGW_TEST_SMTP_PYTHON=%s\n' "$AUTHGW_TEST_SMTP_PYTHON" >&2
else
    smtp_venv=${XDG_CACHE_HOME:-$HOME/.cache}/authgw/smtp-venv
    smtp_python=$smtp_venv/bin/python
    if ! "$smtp_python" -c "import sys, aiosmtpd; sys.exit(aiosmtpd.__version__ != '$AIOSMTPD_VERSION')" 2>/dev/null; then
        if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
            if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
                printf 'installing python3 and python3-venv with apt-get\n' >&2
                apt-get -q update >&2 || die "apt-get update failed"
                DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends python3 python3-venv >&2 \
                    || die "apt-get install python3 python3-venv failed"
            else
                die "python3 with venv and ensurepip not found; install them (Debian: apt-get install python3 python3-venv)"
            fi
        fi
        printf 'installing aiosmtpd %s into %s\n' "$AIOSMTPD_VERSION" "$smtp_venv" >&2
        # --clear: a venv left by another python3, or half made, is made anew.
        python3 -m venv --clear "$smtp_venv" || die "python3 -m venv $smtp_venv failed (Debian: apt-get install python3-venv)"
        "$smtp_python" -m pip install --quiet --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION" >&2 \
            || die "pip install aiosmtpd==$AIOSMTPD_VERSION into $smtp_venv failed"
        "$smtp_python" -c 'import aiosmtpd' || die "aiosmtpd installed into $smtp_venv but not importable"
    fi
    export AUTHGW_TEST_SMTP_PYTHON=$smtp_python
    printf 'using AUTHGW_TEST_SMTP_PYTHON=%s (aiosmtpd %s)\n' "$AUTHGW_TEST_SMTP_PYTHON" "$AIOSMTPD_VERSION" >&2
fi

# --- oidc-provider-mock for the social login tests -----------------------------
# gateway/tests/social_login.rs logs in through a real OpenID Connect provider:
# oidc-provider-mock (PyPI, pinned), its `__main__` run (tests/common/oidc.rs) by
# the Python this step exports as AUTHGW_TEST_OIDC_PYTHON: the caller's if it
# is set (it must import oidc_provider_mock), else a venv of its own under the
# user's cache, installed the first time and again when the version differs.
step "oidc-provider-mock for the social login tests"
OIDC_MOCK_VERSION=0.3.4
if [[ -n ${AUTHGW_TEST_OIDC_PYTHON:-} ]]; then
    "$AUTHGW_TEST_OIDC_PYTHON" -c 'import oidc_provider_mock' 2>/dev/null \
        || die "AUTHGW_TEST_OIDC_PYTHON=$AUTHGW_TEST_OIDC_PYTHON cannot import oidc_provider_mock (pip install oidc-provider-mock==$OIDC_MOCK_VERSION), or unset it"
    printf 'using AUTHGW_TEST_OIDC_PYTHON=%s\n' "$AUTHGW_TEST_OIDC_PYTHON" >&2
else
    oidc_venv=${XDG_CACHE_HOME:-$HOME/.cache}/authgw/oidc-venv
    oidc_python=$oidc_venv/bin/python
    oidc_installed() {
        "$oidc_python" -c "import sys, importlib.metadata as m, oidc_provider_mock; sys.exit(m.version('oidc-provider-mock') != '$OIDC_MOCK_VERSION')" 2>/dev/null
    }
    if ! oidc_installed; then
        if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
            if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
                printf 'installing python3 and python3-venv with apt-get\n' >&2
                apt-get -q update >&2 || die "apt-get update failed"
                DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends python3 python3-venv >&2 \
                    || die "apt-get install python3 python3-venv failed"
            else
                die "python3 with venv and ensurepip not found; install them (Debian: apt-get install python3 python3-venv)"
            fi
        fi
        printf 'installing oidc-provider-mock %s into %s\n' "$OIDC_MOCK_VERSION" "$oidc_venv" >&2
        # --clear: a venv left by another python3, or half made, is made anew.
        python3 -m venv --clear "$oidc_venv" || die "python3 -m venv $oidc_venv failed (Debian: apt-get install python3-venv)"
        "$oidc_python" -m pip install --quiet --disable-pip-version-check "oidc-provider-mock==$OIDC_MOCK_VERSION" >&2 \
            || die "pip install oidc-provider-mock==$OIDC_MOCK_VERSION into $oidc_venv failed"
        oidc_installed || die "oidc-provider-mock $OIDC_MOCK_VERSION installed into $oidc_venv but not importable"
    fi
    export AUTHGW_TEST_OIDC_PYTHON=$oidc_python
    printf 'using AUTHGW_TEST_OIDC_PYTHON=%s (oidc-provider-mock %s)\n' "$AUTHGW_TEST_OIDC_PYTHON" "$OIDC_MOCK_VERSION" >&2
fi

step "cargo test --workspace --all-targets --no-fail-fast $*"
cargo test --workspace --all-targets --no-fail-fast "$@" || die "tests failed"

# --- Schemathesis: docs/auth-openapi.yaml against the real binary ------------
# The binary `cargo test` built for the integration tests: the same code, and
# no second build with the features resolved without dev-dependencies.
step "scripts/schemathesis.sh"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
AUTHGW_QA_PREBUILT=1 AUTHGW_QA_BIN=$TARGET_DIR/debug/authgw bash scripts/schemathesis.sh \
    || die "scripts/schemathesis.sh failed"

step "all checks passed"
