#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Quickstart: build authgw, give it a database, a signing key and a demo
# admin, then run the server in the foreground.
#
#   scripts/quickstart.sh          plain HTTP on 127.0.0.1:8080
#   scripts/quickstart.sh --tls    HTTPS on 127.0.0.1:8443 (h2 and HTTP/1.1) with
#                                  a CA and a certificate for localhost made
#                                  here (.data/tls/ca.pem for curl --cacert),
#                                  plus plain 127.0.0.1:8080 for health checks
#                                  and redirects to https
#
# Without AUTHGW_DATABASE_URL it runs a private PostgreSQL cluster under
# .data/ (unix socket only, nothing listens on TCP) and uses database
# `authgw` there. Running it again reuses the cluster, the keys and the admin.
#
# The demo: without AUTHGW_CONFIG it serves .data/demo.toml, gateway.toml's
# defaults plus one route, /films, to a demo upstream (python3 -m http.server
# on 127.0.0.1:${AUTHGW_DEMO_UPSTREAM_PORT:-8081} serving .data/demo-site/),
# protected by the role-rules plugin with the cinema rules
# (plugins/role-rules/examples/cinema.json): /films/premium needs
# `subscriber`, /films/18plus needs `adult`, trial users reach /films/trial.
#
# Environment: AUTHGW_DATABASE_URL, AUTHGW_KEYS_DIR (default .data/keys),
# AUTHGW_LISTEN, AUTHGW_CONFIG (default: the demo config),
# AUTHGW_DEMO_UPSTREAM_PORT (default 8081).
set -euo pipefail

TLS=
for arg in "$@"; do
    case $arg in
    --tls) TLS=1 ;;
    -h | --help)
        sed -n '3,30p' "$0"
        exit 0
        ;;
    *)
        printf 'error: unknown argument %s (try --help)\n' "$arg" >&2
        exit 2
        ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
# shellcheck source=lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
step() { printf '==> %s\n' "$*" >&2; }
trap 'printf "error: quickstart failed at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

BIN=$ROOT/target/release/authgw
DATA=$ROOT/.data
DEMO=
if [[ -n ${AUTHGW_CONFIG:-} ]]; then
    CONFIG=$AUTHGW_CONFIG
else
    CONFIG=$DATA/demo.toml
    DEMO=1
fi
DEMO_PORT=${AUTHGW_DEMO_UPSTREAM_PORT:-8081}

authgw() { "$BIN" --config "$CONFIG" "$@"; }

[[ -z $TLS || -n $DEMO ]] || die "--tls serves the demo config; with AUTHGW_CONFIG, set [server.tls] in it (docs/tls.md)"
[[ -f gateway.toml ]] || die "gateway.toml not found (run from a complete checkout)"
[[ -n $DEMO || -f $CONFIG ]] || die "config file '$CONFIG' (AUTHGW_CONFIG) not found"
command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (https://rustup.rs) and retry"

# --- build -------------------------------------------------------------------
step "cargo build --release --bin authgw"
cargo build --release --bin authgw || die "cargo build failed (see the compiler output above)"
[[ -x $BIN ]] || die "build succeeded but $BIN is missing"
step "scripts/build-plugins.sh"
bash "$ROOT/scripts/build-plugins.sh" || die "scripts/build-plugins.sh failed"

# --- demo config and upstream ------------------------------------------------
if [[ -n $DEMO ]]; then
    mkdir -p "$DATA/demo-site" || die "cannot create $DATA/demo-site"
    for page in films films/premium films/18plus films/trial; do
        mkdir -p "$DATA/demo-site/$page"
        printf '<h1>%s</h1>\n' "$page" >"$DATA/demo-site/$page/index.html"
    done
    # gateway.toml's defaults, then the demo route and plugin.
    {
        cat gateway.toml
        cat <<EOF

# --- added by scripts/quickstart.sh: the demo ---------------------------------
[[plugins]]
name = "cinema"
file = "$ROOT/plugins/dist/role-rules.wasm"
config = { default = "deny", rules = [
  { path = "/films/trial", any_of = ["trial", "subscriber"] },
  { path = "/films/premium", any_of = ["subscriber"], deny_status = 402 },
  { path = "/films/18plus", all_of = ["adult"] },
  { path = "/films", methods = ["GET", "HEAD"] },
] }

[[routes]]
name = "films"
prefix = "/films"
upstream = "http://127.0.0.1:$DEMO_PORT"
auth = "optional"
plugins = ["cinema"]
EOF
    } >"$CONFIG.tmp" && mv "$CONFIG.tmp" "$CONFIG" || die "cannot write $CONFIG"
    step "demo config: $CONFIG (route /films -> 127.0.0.1:$DEMO_PORT, role-rules)"
fi

# --- TLS (--tls): a CA and a certificate for localhost, made once -------------
if [[ -n $TLS ]]; then
    command -v openssl >/dev/null 2>&1 || die "openssl not found: --tls makes its certificates with it (apt-get install openssl)"
    TLS_DIR=$DATA/tls
    if [[ ! -f $TLS_DIR/gateway.pem ]]; then
        step "TLS: a demo CA and a certificate for localhost in $TLS_DIR"
        mkdir -p "$TLS_DIR" && chmod 700 "$TLS_DIR" || die "cannot create $TLS_DIR"
        (
            cd "$TLS_DIR"
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
                -subj "/CN=authgw quickstart CA" -keyout ca.key -out ca.pem \
                -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                -subj "/CN=localhost" -keyout gateway.key -out gateway.csr
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n' >gateway.ext
            openssl x509 -req -in gateway.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
                -extfile gateway.ext -out gateway.crt
            cat gateway.crt ca.pem >gateway.pem
            chmod 600 ./*.key
        ) >"$DATA/tls.log" 2>&1 || die "openssl failed making the demo certificates (see $DATA/tls.log)"
    fi
    export AUTHGW_LISTEN=${AUTHGW_LISTEN:-127.0.0.1:8443}
    {
        printf '\n# --- added by scripts/quickstart.sh --tls ---\n'
        printf '[server.tls]\ncert = "tls/gateway.pem"\nkey = "tls/gateway.key"\nhttp_listen = "127.0.0.1:8080"\n'
    } >>"$CONFIG" || die "cannot write $CONFIG"
    step "TLS: https://$AUTHGW_LISTEN (curl --cacert .data/tls/ca.pem), http://127.0.0.1:8080 redirects"
fi

# --- database ----------------------------------------------------------------
if [[ -n ${AUTHGW_DATABASE_URL:-} ]]; then
    step "database: AUTHGW_DATABASE_URL=$(authgw_pg_redact "$AUTHGW_DATABASE_URL")"
else
    step "database: private PostgreSQL cluster under .data/"
    authgw_find_pg_bin || exit 1
    PG_URL=$(authgw_private_cluster "$DATA") || die "could not start the private PostgreSQL cluster under $DATA"
    authgw_ensure_database "$PG_URL" authgw || die "could not create database 'authgw'"
    AUTHGW_DATABASE_URL=$(authgw_pg_url_for_db "$PG_URL" authgw)
    step "database: $AUTHGW_DATABASE_URL"
fi
export AUTHGW_DATABASE_URL

step "authgw db upgrade"
authgw db upgrade || die "'authgw db upgrade' failed (database $(authgw_pg_redact "$AUTHGW_DATABASE_URL"))"

# --- signing keys ------------------------------------------------------------
AUTHGW_KEYS_DIR=${AUTHGW_KEYS_DIR:-$DATA/keys}
export AUTHGW_KEYS_DIR
mkdir -p "$AUTHGW_KEYS_DIR" || die "cannot create keys directory $AUTHGW_KEYS_DIR"
chmod 700 "$AUTHGW_KEYS_DIR" 2>/dev/null || true
# A keys directory from before server secrets (issue 19) gets one once.
if compgen -G "$AUTHGW_KEYS_DIR/*.pem" >/dev/null && ! compgen -G "$AUTHGW_KEYS_DIR/*.secret" >/dev/null; then
    step "authgw keys generate --kind secret (keys dir $AUTHGW_KEYS_DIR has signing keys but no secret)"
    authgw keys generate --kind secret >&2 || die "'authgw keys generate --kind secret' failed (keys dir $AUTHGW_KEYS_DIR)"
fi
keys=$(authgw keys list) || die "'authgw keys list' failed (keys dir $AUTHGW_KEYS_DIR)"
if [[ -z ${keys//[[:space:]]/} ]]; then
    step "authgw keys generate (keys dir $AUTHGW_KEYS_DIR)"
    authgw keys generate >&2 || die "'authgw keys generate' failed (keys dir $AUTHGW_KEYS_DIR)"
else
    step "keys and secrets: $(printf '%s\n' "$keys" | grep -c .) in $AUTHGW_KEYS_DIR"
fi

# --- demo admin --------------------------------------------------------------
admins=$(authgw admin list) || die "'authgw admin list' failed"
if printf '%s\n' "$admins" | awk -F '\t' '$1 == "admin" { found = 1 } END { exit !found }'; then
    step "demo admin 'admin' already exists (its password was shown on the first run)"
else
    # 24 characters from [A-Za-z0-9]: nothing a shell or URL would mangle.
    password=$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9') || die "cannot generate a password"
    password=${password:0:24}
    ((${#password} >= 20)) || die "cannot generate a password"
    step "authgw admin create --login admin"
    printf '%s\n' "$password" | authgw admin create --login admin --password-stdin >&2 \
        || die "'authgw admin create --login admin' failed"
    cat <<EOF

==========================================================================
  demo admin:  login=admin  password=$password
  shown only once: it is not stored anywhere, copy it now
==========================================================================

EOF
    unset password
fi

# --- serve -------------------------------------------------------------------
listen=${AUTHGW_LISTEN:-}
if [[ -z $listen ]]; then
    # Best effort: [server] listen = "..." from the config file.
    listen=$(awk '
        /^[[:space:]]*\[/ { in_server = ($0 ~ /^[[:space:]]*\[server\][[:space:]]*(#.*)?$/) }
        in_server && /^[[:space:]]*listen[[:space:]]*=/ {
            if (match($0, /"[^"]*"/)) { print substr($0, RSTART + 1, RLENGTH - 2); exit }
        }' "$CONFIG" 2>/dev/null) || listen=
    listen=${listen:-127.0.0.1:8080}
fi
if [[ -n $TLS ]]; then
    step "authgw serve: listening on https://$listen (Ctrl-C to stop); try:"
    printf '        curl --cacert .data/tls/ca.pem https://%s/healthz\n' "${listen/127.0.0.1/localhost}" >&2
else
    step "authgw serve: listening on http://$listen (Ctrl-C to stop)"
fi
if [[ -n $DEMO ]]; then
    # gateway.toml's [email] has no smtp_url: mail is written as files, in
    # email.dir ("mail") next to the demo config.
    mkdir -p "$DATA/mail" || die "cannot create $DATA/mail"
    step "mail: no SMTP server configured; verification and reset messages are written to .data/mail/*.eml (docs/email.md)"
fi
if [[ -n ${PG_URL:-} ]]; then
    step "the private PostgreSQL cluster keeps running after the server stops; stop it with:"
    printf '        bash -c '"'"'source scripts/lib/pg.sh && authgw_private_cluster_stop .data'"'"'\n' >&2
fi
if [[ -n $DEMO ]]; then
    command -v python3 >/dev/null 2>&1 || die "python3 not found: the demo upstream needs it (or set AUTHGW_CONFIG)"
    python3 -m http.server "$DEMO_PORT" --bind 127.0.0.1 --directory "$DATA/demo-site" \
        >"$DATA/demo-upstream.log" 2>&1 &
    demo_pid=$!
    trap 'kill "$demo_pid" 2>/dev/null || true' EXIT
    step "demo upstream: http://127.0.0.1:$DEMO_PORT (pid $demo_pid, log .data/demo-upstream.log)"
    "$BIN" --config "$CONFIG" serve
else
    exec "$BIN" --config "$CONFIG" serve
fi
