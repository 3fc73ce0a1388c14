# shellcheck shell=bash
#
# Helpers for the scripts that test a running authgw binary from outside
# (schemathesis.sh, soak.sh). Source this file after lib/pg.sh; it defines
# functions only and changes no shell options. Every function reports failure
# through its return status and writes its messages to stderr.
#
#   authgw_qa_build ROOT           cargo build --bin authgw; sets AUTHGW_QA_BIN
#   authgw_qa_free_port            print a free TCP port on 127.0.0.1
#   authgw_qa_start DIR ADMIN_URL [TOML]
#                                  fresh database on ADMIN_URL's server, a key,
#                                  an admin, then `authgw serve` in the
#                                  background on a free port (extra config
#                                  TOML appended to DIR/gateway.toml), its
#                                  admin listener (/metrics, /reload) on
#                                  another free port unless
#                                  AUTHGW_QA_ADMIN_LISTEN is set; sets
#                                  AUTHGW_QA_{BASE,PID,DB,DB_URL,ADMIN_URL,
#                                  ADMIN_LOGIN,ADMIN_PASSWORD,CONFIG,LOG,
#                                  ADMIN_LISTEN,ADMIN_BASE}
#   authgw_qa_restart              start the server again (same DIR, port, db)
#   authgw_qa_stop                 SIGTERM the server (if running), wait
#   authgw_qa_drop_db              drop the database authgw_qa_start made
#   authgw_qa_wait_ready SECS      wait until GET /readyz answers 200
#   authgw_qa_cli ARGS...          run the binary with the same config and env
#   authgw_qa_json FIELD           read a JSON object on stdin, print FIELD
#   authgw_qa_token LOGIN PASSWORD print an access token (logs in)
#   authgw_qa_signup LOGIN PASSWORD print the new user (JSON)
#   authgw_qa_metrics              print the admin listener's /metrics text

AUTHGW_QA_BIN=${AUTHGW_QA_BIN:-}
AUTHGW_QA_PID=
AUTHGW_QA_BASE=
AUTHGW_QA_DB=
AUTHGW_QA_DB_URL=
AUTHGW_QA_ADMIN_URL=
AUTHGW_QA_ADMIN_LOGIN=qa-admin
AUTHGW_QA_ADMIN_PASSWORD=
AUTHGW_QA_CONFIG=
AUTHGW_QA_LOG=
AUTHGW_QA_DIR=
AUTHGW_QA_LISTEN=
# The admin listener: set AUTHGW_QA_ADMIN_LISTEN before authgw_qa_start to
# choose it; AUTHGW_QA_ADMIN_BASE is its http:// URL.
AUTHGW_QA_ADMIN_LISTEN=${AUTHGW_QA_ADMIN_LISTEN:-}
AUTHGW_QA_ADMIN_BASE=
_AUTHGW_QA_ADMIN_PICKED=

_authgw_qa_log() { printf '%s\n' "$*" >&2; }

# authgw_qa_build ROOT: build the debug binary (into CARGO_TARGET_DIR when
# set) and remember its path in AUTHGW_QA_BIN. With AUTHGW_QA_PREBUILT=1 and
# AUTHGW_QA_BIN already an executable, that binary is used as it is:
# scripts/test.sh passes the one `cargo test` just built, since a plain
# `cargo build` resolves the dependencies' features without the
# dev-dependencies and would rebuild much of the tree (about 5 minutes).
authgw_qa_build() {
    local root=${1:?usage: authgw_qa_build ROOT} target
    if [[ ${AUTHGW_QA_PREBUILT:-0} == 1 && -x ${AUTHGW_QA_BIN:-} ]]; then
        _authgw_qa_log "==> using the prebuilt $AUTHGW_QA_BIN"
        return 0
    fi
    target=${CARGO_TARGET_DIR:-$root/target}
    [[ $target == /* ]] || target=$root/$target
    _authgw_qa_log "==> cargo build --bin authgw"
    (cd "$root" && cargo build --quiet --bin authgw) || {
        _authgw_qa_log "error: cargo build --bin authgw failed"
        return 1
    }
    AUTHGW_QA_BIN=$target/debug/authgw
    [[ -x $AUTHGW_QA_BIN ]] || {
        _authgw_qa_log "error: the build succeeded but $AUTHGW_QA_BIN is missing"
        return 1
    }
}

authgw_qa_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

authgw_qa_cli() {
    AUTHGW_CONFIG=$AUTHGW_QA_CONFIG AUTHGW_DATABASE_URL=$AUTHGW_QA_DB_URL \
        AUTHGW_KEYS_DIR=$AUTHGW_QA_DIR/keys AUTHGW_LISTEN=$AUTHGW_QA_LISTEN \
        AUTHGW_ADMIN_LISTEN=${AUTHGW_QA_ADMIN_LISTEN:-127.0.0.1:0} \
        "$AUTHGW_QA_BIN" "$@"
}

# authgw_qa_json FIELD: the top-level FIELD of the JSON object on stdin
# (empty when absent or not JSON).
authgw_qa_json() {
    python3 -c '
import json, sys
try:
    v = json.load(sys.stdin).get(sys.argv[1], "")
except Exception:
    v = ""
print(v if isinstance(v, str) else json.dumps(v))' "$1"
}

_authgw_qa_post_json() {
    local path=$1 body=$2
    curl -sS --max-time 30 -X POST "$AUTHGW_QA_BASE$path" \
        -H 'Content-Type: application/json' --data-binary "$body"
}

_authgw_qa_credentials() {
    python3 -c 'import json, sys; print(json.dumps({"login": sys.argv[1], "password": sys.argv[2]}))' "$1" "$2"
}

# authgw_qa_signup LOGIN PASSWORD: prints the response (the user, as JSON).
authgw_qa_signup() {
    _authgw_qa_post_json /api/v1/auth/signup "$(_authgw_qa_credentials "$1" "$2")"
}

authgw_qa_token() {
    local token
    token=$(_authgw_qa_post_json /api/v1/auth/login "$(_authgw_qa_credentials "$1" "$2")" \
        | authgw_qa_json access_token) || token=
    [[ -n $token ]] || {
        _authgw_qa_log "error: could not log in as '$1' at $AUTHGW_QA_BASE"
        return 1
    }
    printf '%s\n' "$token"
}

authgw_qa_wait_ready() {
    local secs=${1:-30} deadline
    deadline=$((SECONDS + secs))
    while ((SECONDS < deadline)); do
        if [[ -n $AUTHGW_QA_PID ]] && ! kill -0 "$AUTHGW_QA_PID" 2>/dev/null; then
            _authgw_qa_log "error: authgw serve exited; last lines of $AUTHGW_QA_LOG:"
            tail -n 20 "$AUTHGW_QA_LOG" >&2 || true
            return 1
        fi
        if curl -fsS --max-time 2 "$AUTHGW_QA_BASE/readyz" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    _authgw_qa_log "error: authgw at $AUTHGW_QA_BASE not ready within ${secs}s; see $AUTHGW_QA_LOG"
    return 1
}

authgw_qa_restart() {
    _authgw_qa_log "==> authgw serve on $AUTHGW_QA_BASE (log $AUTHGW_QA_LOG)"
    # A plain command, not the function: $! must be the server itself, or
    # stopping it would leave the server running.
    env AUTHGW_CONFIG="$AUTHGW_QA_CONFIG" AUTHGW_DATABASE_URL="$AUTHGW_QA_DB_URL" \
        AUTHGW_KEYS_DIR="$AUTHGW_QA_DIR/keys" AUTHGW_LISTEN="$AUTHGW_QA_LISTEN" \
        AUTHGW_ADMIN_LISTEN="${AUTHGW_QA_ADMIN_LISTEN:-127.0.0.1:0}" \
        "$AUTHGW_QA_BIN" serve >>"$AUTHGW_QA_LOG" 2>&1 </dev/null &
    AUTHGW_QA_PID=$!
    authgw_qa_wait_ready 60
}

# authgw_qa_start DIR ADMIN_URL [TOML]
authgw_qa_start() {
    local dir=${1:?usage: authgw_qa_start DIR ADMIN_URL [TOML]} admin_url=${2:?usage: authgw_qa_start DIR ADMIN_URL [TOML]}
    local extra=${3:-} port
    [[ -n $AUTHGW_QA_BIN ]] || {
        _authgw_qa_log "error: authgw_qa_build first"
        return 1
    }
    mkdir -p "$dir" || return 1
    AUTHGW_QA_DIR=$(cd "$dir" && pwd -P) || return 1
    AUTHGW_QA_CONFIG=$AUTHGW_QA_DIR/gateway.toml
    AUTHGW_QA_LOG=$AUTHGW_QA_DIR/server.log
    AUTHGW_QA_ADMIN_URL=$admin_url
    printf '%s\n' "$extra" >"$AUTHGW_QA_CONFIG" || return 1
    port=$(authgw_qa_free_port) || return 1
    AUTHGW_QA_LISTEN=127.0.0.1:$port
    AUTHGW_QA_BASE=http://$AUTHGW_QA_LISTEN
    # A port picked here is picked again at the next start; one the caller
    # set is kept.
    if [[ -z $AUTHGW_QA_ADMIN_LISTEN || -n $_AUTHGW_QA_ADMIN_PICKED ]]; then
        local admin_port=$port
        while [[ $admin_port == "$port" ]]; do
            admin_port=$(authgw_qa_free_port) || return 1
        done
        AUTHGW_QA_ADMIN_LISTEN=127.0.0.1:$admin_port
        _AUTHGW_QA_ADMIN_PICKED=1
    fi
    AUTHGW_QA_ADMIN_BASE=http://$AUTHGW_QA_ADMIN_LISTEN

    AUTHGW_QA_DB=authgw_qa_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
    authgw_ensure_database "$admin_url" "$AUTHGW_QA_DB" || return 1
    AUTHGW_QA_DB_URL=$(authgw_pg_url_for_db "$admin_url" "$AUTHGW_QA_DB")
    authgw_qa_cli db upgrade >&2 || {
        _authgw_qa_log "error: 'authgw db upgrade' failed"
        return 1
    }
    authgw_qa_cli keys generate >&2 || {
        _authgw_qa_log "error: 'authgw keys generate' failed"
        return 1
    }
    AUTHGW_QA_ADMIN_PASSWORD=$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')
    printf '%s\n' "$AUTHGW_QA_ADMIN_PASSWORD" \
        | authgw_qa_cli admin create --login "$AUTHGW_QA_ADMIN_LOGIN" --password-stdin >&2 || {
        _authgw_qa_log "error: 'authgw admin create' failed"
        return 1
    }
    : >"$AUTHGW_QA_LOG"
    authgw_qa_restart
}

# authgw_qa_metrics: the Prometheus text of the admin listener's /metrics.
authgw_qa_metrics() {
    [[ -n $AUTHGW_QA_ADMIN_BASE ]] || {
        _authgw_qa_log "error: authgw_qa_start first (no admin listener)"
        return 1
    }
    curl -fsS --max-time 10 "$AUTHGW_QA_ADMIN_BASE/metrics"
}

authgw_qa_stop() {
    [[ -n $AUTHGW_QA_PID ]] || return 0
    if kill -0 "$AUTHGW_QA_PID" 2>/dev/null; then
        kill -TERM "$AUTHGW_QA_PID" 2>/dev/null || true
        wait "$AUTHGW_QA_PID" 2>/dev/null || true
    fi
    AUTHGW_QA_PID=
}

authgw_qa_drop_db() {
    [[ -n $AUTHGW_QA_DB && -n $AUTHGW_QA_ADMIN_URL ]] || return 0
    PGCONNECT_TIMEOUT=10 "$AUTHGW_PSQL" -X -w -q -d "$AUTHGW_QA_ADMIN_URL" \
        -c "DROP DATABASE IF EXISTS \"$AUTHGW_QA_DB\" WITH (FORCE)" >/dev/null 2>&1 || true
    AUTHGW_QA_DB=
}
