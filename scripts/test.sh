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
