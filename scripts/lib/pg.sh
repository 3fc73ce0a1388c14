# shellcheck shell=bash
#
# PostgreSQL helpers for authgw's scripts (quickstart.sh, test.sh).
# Source this file; it defines functions only and changes no shell options.
# Every function is `set -euo pipefail` friendly: it reports failure through
# its return status and writes its messages to stderr. Only
# authgw_private_cluster, authgw_pg_url_for_db and authgw_test_admin_url
# write to stdout (a URL).
#
#   authgw_find_pg_bin             locate (or, as root with apt-get, install)
#                                  initdb, pg_ctl, pg_isready, psql, createdb
#   authgw_find_pg_client          locate psql / pg_isready only, never install
#   authgw_private_cluster DIR     create/start a private cluster under DIR,
#                                  print its URL (database `postgres`)
#   authgw_private_cluster_stop DIR
#   authgw_ensure_database URL DB  CREATE DATABASE DB unless it exists
#   authgw_pg_answers URL [SECS]   does a server answer at URL?
#   authgw_pg_url_for_db URL DB    URL with its database replaced by DB
#   authgw_pg_redact URL           URL with any password masked (for display)
#   authgw_test_admin_url ROOT     print the admin URL tests use: AUTHGW_TEST_DATABASE_URL,
#                                  else 127.0.0.1:5432 if it answers, else a
#                                  private cluster under ROOT/.data
#
# Tunables (environment): AUTHGW_PG_PORT (default 5439; with a unix-socket-only
# cluster it only names the socket file), AUTHGW_PG_USER (the unprivileged
# account that owns the cluster when running as root; default `postgres`).

# Set by authgw_find_pg_bin / authgw_find_pg_client.
AUTHGW_PG_BINDIR=${AUTHGW_PG_BINDIR:-}
AUTHGW_INITDB=${AUTHGW_INITDB:-}
AUTHGW_PG_CTL=${AUTHGW_PG_CTL:-}
AUTHGW_PG_ISREADY=${AUTHGW_PG_ISREADY:-}
AUTHGW_PSQL=${AUTHGW_PSQL:-}
AUTHGW_CREATEDB=${AUTHGW_CREATEDB:-}

_authgw_pg_log() { printf '%s\n' "$*" >&2; }

# Newest PostgreSQL server bin directory (one holding initdb and pg_ctl):
# the one on PATH first, then /usr/lib/postgresql/*/bin (Debian/Ubuntu) and
# /usr/pgsql-*/bin (RHEL family), newest version.
_authgw_pg_server_bindir() {
    local p d
    if p=$(command -v initdb 2>/dev/null) && [[ -x ${p%/*}/pg_ctl ]]; then
        printf '%s\n' "${p%/*}"
        return 0
    fi
    d=$(for d in /usr/lib/postgresql/*/bin /usr/pgsql-*/bin; do
        if [[ -x $d/initdb && -x $d/pg_ctl ]]; then printf '%s\n' "$d"; fi
    done | sort -V | tail -n 1)
    [[ -n $d ]] || return 1
    printf '%s\n' "$d"
}

# _authgw_pg_tool NAME [BINDIR]: BINDIR/NAME, else NAME on PATH, else the
# newest /usr/lib/postgresql/*/bin/NAME.
_authgw_pg_tool() {
    local name=$1 bindir=${2:-} p
    if [[ -n $bindir && -x $bindir/$name ]]; then
        printf '%s\n' "$bindir/$name"
        return 0
    fi
    if p=$(command -v "$name" 2>/dev/null); then
        printf '%s\n' "$p"
        return 0
    fi
    p=$(for p in /usr/lib/postgresql/*/bin/"$name" /usr/pgsql-*/bin/"$name"; do
        if [[ -x $p ]]; then printf '%s\n' "$p"; fi
    done | sort -V | tail -n 1)
    [[ -n $p ]] || return 1
    printf '%s\n' "$p"
}

_authgw_pg_locate_all() {
    local bindir
    bindir=$(_authgw_pg_server_bindir) || return 1
    AUTHGW_PG_BINDIR=$bindir
    AUTHGW_INITDB=$bindir/initdb
    AUTHGW_PG_CTL=$bindir/pg_ctl
    AUTHGW_PSQL=$(_authgw_pg_tool psql "$bindir") || return 1
    AUTHGW_PG_ISREADY=$(_authgw_pg_tool pg_isready "$bindir") || AUTHGW_PG_ISREADY=
    AUTHGW_CREATEDB=$(_authgw_pg_tool createdb "$bindir") || AUTHGW_CREATEDB=
    return 0
}

# Locate the PostgreSQL server and client programs; install them with apt-get
# when missing and running as root. Returns 1 (one message on stderr) when
# they cannot be found.
authgw_find_pg_bin() {
    if [[ -n $AUTHGW_INITDB && -x $AUTHGW_INITDB && -n $AUTHGW_PG_CTL && -x $AUTHGW_PG_CTL \
        && -n $AUTHGW_PSQL && -x $AUTHGW_PSQL ]]; then
        return 0
    fi
    _authgw_pg_locate_all && return 0
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        _authgw_pg_log "==> PostgreSQL server not found; installing the 'postgresql' package with apt-get"
        if DEBIAN_FRONTEND=noninteractive apt-get -q update >&2 \
            && DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends postgresql >&2 \
            && _authgw_pg_locate_all; then
            return 0
        fi
        _authgw_pg_log "error: could not install PostgreSQL with apt-get; install the 'postgresql' package (server binaries initdb, pg_ctl, and psql) and retry"
        return 1
    fi
    _authgw_pg_log "error: PostgreSQL server binaries (initdb, pg_ctl) and psql not found; install the 'postgresql' package (Debian/Ubuntu: sudo apt-get install postgresql) and retry"
    return 1
}

# Locate psql (and pg_isready) without installing anything. Quiet; returns 1
# when there is no psql.
authgw_find_pg_client() {
    if [[ -n $AUTHGW_PSQL && -x $AUTHGW_PSQL ]]; then
        return 0
    fi
    local bindir
    bindir=$(_authgw_pg_server_bindir 2>/dev/null) || bindir=
    AUTHGW_PSQL=$(_authgw_pg_tool psql "$bindir") || { AUTHGW_PSQL=; return 1; }
    if [[ -z $AUTHGW_PG_ISREADY ]]; then
        AUTHGW_PG_ISREADY=$(_authgw_pg_tool pg_isready "$bindir") || AUTHGW_PG_ISREADY=
    fi
    return 0
}

# authgw_pg_answers URL [TIMEOUT_SECS]: 0 when a server answers at URL.
# With psql this runs `select 1`, so it also checks that we may log in.
authgw_pg_answers() {
    local url=$1 timeout=${2:-3}
    authgw_find_pg_client || true
    if [[ -n $AUTHGW_PSQL ]]; then
        PGCONNECT_TIMEOUT=$timeout "$AUTHGW_PSQL" -X -w -q -A -t -d "$url" -c 'select 1' >/dev/null 2>&1
        return
    fi
    if [[ -n $AUTHGW_PG_ISREADY ]]; then
        "$AUTHGW_PG_ISREADY" -q -t "$timeout" -d "$url" >/dev/null 2>&1
        return
    fi
    return 1
}

# authgw_pg_url_for_db URL DB: the same server, database DB.
authgw_pg_url_for_db() {
    local url=$1 db=$2 base query="" scheme rest authority
    if [[ $url == *\?* ]]; then
        query="?${url#*\?}"
        base=${url%%\?*}
    else
        base=$url
    fi
    scheme=${base%%://*}
    rest=${base#*://}
    authority=${rest%%/*}
    printf '%s://%s/%s%s\n' "$scheme" "$authority" "$db" "$query"
}

# authgw_pg_redact URL: mask a password, if any, for display.
authgw_pg_redact() {
    printf '%s\n' "$1" | sed -E 's#^([a-z]+://[^:/@?]*):[^@/?]*@#\1:***@#'
}

# Percent-encode a socket directory for use in a URL query value.
_authgw_urlencode() {
    local LC_ALL=C s=$1 out="" c hex i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
        [A-Za-z0-9/._~-]) out+=$c ;;
        *)
            printf -v hex '%%%02X' "'$c"
            out+=$hex
            ;;
        esac
    done
    printf '%s' "$out"
}

# Run a command as USER (when root) or as ourselves (USER empty), from /.
_authgw_pg_as() {
    local user=$1
    shift
    if [[ -z $user ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        (cd / && runuser -u "$user" -- "$@")
    else
        (cd / && su -s /bin/bash "$user" -c "$(printf '%q ' "$@")")
    fi
}

_authgw_pg_ensure_user() {
    local user=$1
    id -u "$user" >/dev/null 2>&1 && return 0
    _authgw_pg_log "==> creating system user '$user' to own the private PostgreSQL cluster"
    if command -v useradd >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$user" >&2 && return 0
    elif command -v adduser >/dev/null 2>&1; then
        adduser --system --group --no-create-home "$user" >&2 && return 0
    fi
    _authgw_pg_log "error: could not create system user '$user' (initdb/postgres refuse to run as root); create it or set AUTHGW_PG_USER to an existing unprivileged user"
    return 1
}

# Works out where the cluster for DIR lives and who runs it. Sets
# _AUTHGW_PG_{DATA,SOCK,LOG,USER}. DIR must be absolute and exist.
# Normally: DIR/pg, DIR/run, DIR/pg.log. When root and the unprivileged user
# cannot reach DIR (e.g. a checkout under /root), the cluster goes to
# /var/lib/authgw-dev/<hash of DIR>/ instead. A socket path too long for
# the OS (about 100 bytes) moves the socket to /tmp/authgw-pg-<hash>.
_authgw_pg_layout() {
    local dir=$1 create=${2:-create} hash base owner
    hash=$(printf '%s' "$dir" | cksum | cut -d ' ' -f 1)
    base=$dir
    _AUTHGW_PG_USER=
    if [[ $EUID -eq 0 ]]; then
        _AUTHGW_PG_USER=${AUTHGW_PG_USER:-postgres}
        local alt=/var/lib/authgw-dev/$hash
        if [[ -f $dir/pg/PG_VERSION ]]; then
            base=$dir
        elif [[ -f $alt/pg/PG_VERSION ]]; then
            base=$alt
        elif [[ $create == create ]]; then
            _authgw_pg_ensure_user "$_AUTHGW_PG_USER" || return 1
            # Can the unprivileged user reach DIR (every parent searchable)?
            if ! _authgw_pg_as "$_AUTHGW_PG_USER" test -x "$dir" 2>/dev/null; then
                base=$alt
                _authgw_pg_log "note: user '$_AUTHGW_PG_USER' cannot reach $dir; keeping the private cluster in $base instead"
                mkdir -p "$base" && chmod 755 /var/lib/authgw-dev "$base" || return 1
            fi
        fi
        if [[ -e $base/pg ]]; then
            owner=$(stat -c %U "$base/pg" 2>/dev/null) || owner=
            if [[ -n $owner && $owner != root && $owner != UNKNOWN ]]; then
                _AUTHGW_PG_USER=$owner
            fi
        fi
    fi
    _AUTHGW_PG_DATA=$base/pg
    _AUTHGW_PG_LOG=$base/pg.log
    _AUTHGW_PG_SOCK=$base/run
    if ((${#_AUTHGW_PG_SOCK} > 90)); then
        _AUTHGW_PG_SOCK=/tmp/authgw-pg-$hash
    fi
    return 0
}

_authgw_pg_sql_quote() { printf "'%s'" "${1//\'/\'\'}"; }

# The URL has an EMPTY host part on purpose: rust-postgres (tokio-postgres)
# treats `postgresql://postgres@localhost/db?host=/sock&port=N` as two
# candidate hosts, localhost:5432 first and the socket second, so it would
# silently reach a system server on 5432 instead. libpq (psql) and
# rust-postgres both read `postgresql://postgres@/db?host=/sock&port=N` as
# the socket only.
_authgw_pg_cluster_url() {
    printf 'postgresql://postgres@/postgres?host=%s&port=%s\n' \
        "$(_authgw_urlencode "$1")" "$2"
}

# authgw_private_cluster DIR: create (if absent) and start (if not running) a
# private cluster: data DIR/pg, unix socket in DIR/run (no TCP), log
# DIR/pg.log, superuser postgres, trust auth. Prints the URL of its
# `postgres` database on stdout.
authgw_private_cluster() {
    local dir=${1:?usage: authgw_private_cluster DIR}
    authgw_find_pg_bin || return 1
    mkdir -p "$dir" || {
        _authgw_pg_log "error: cannot create $dir"
        return 1
    }
    dir=$(cd "$dir" && pwd -P) || return 1

    # Serialise concurrent callers (initdb must run once). The lock fd is
    # closed for pg_ctl so the server does not inherit and hold it.
    local lockfd='' rc=0
    if command -v flock >/dev/null 2>&1; then
        exec {lockfd}>"$dir/.pg.lock" || lockfd=
        if [[ -n $lockfd ]] && ! flock -w 300 "$lockfd"; then
            _authgw_pg_log "error: timed out waiting for the lock $dir/.pg.lock"
            exec {lockfd}>&-
            return 1
        fi
    fi
    _authgw_private_cluster_locked "$dir" "$lockfd" || rc=$?
    if [[ -n $lockfd ]]; then exec {lockfd}>&-; fi
    return "$rc"
}

_authgw_private_cluster_locked() {
    local dir=$1 lockfd=$2 port=${AUTHGW_PG_PORT:-5439}
    _authgw_pg_layout "$dir" create || return 1
    local pgdata=$_AUTHGW_PG_DATA sock=$_AUTHGW_PG_SOCK log=$_AUTHGW_PG_LOG user=$_AUTHGW_PG_USER

    mkdir -p "$pgdata" "$sock" || {
        _authgw_pg_log "error: cannot create $pgdata or $sock"
        return 1
    }
    touch "$log" || {
        _authgw_pg_log "error: cannot write $log"
        return 1
    }
    if [[ -n $user ]]; then
        chown "$user:" "$sock" "$log" || return 1
        if [[ ! -f $pgdata/PG_VERSION ]]; then chown "$user:" "$pgdata" || return 1; fi
        if ! _authgw_pg_as "$user" test -w "$pgdata" -a -w "$sock" -a -w "$log"; then
            _authgw_pg_log "error: user '$user' cannot write $pgdata, $sock and $log (check the permissions of their parent directories)"
            return 1
        fi
    fi
    chmod 700 "$pgdata" 2>/dev/null || true

    if [[ ! -f $pgdata/PG_VERSION ]]; then
        _authgw_pg_log "==> creating a private PostgreSQL cluster in $pgdata"
        if ! _authgw_pg_as "$user" "$AUTHGW_INITDB" -D "$pgdata" -U postgres -A trust \
            -E UTF8 --no-locale >"$dir/initdb.log" 2>&1; then
            _authgw_pg_log "error: initdb failed for $pgdata; see $dir/initdb.log:"
            tail -n 20 "$dir/initdb.log" >&2 || true
            return 1
        fi
        printf '\n# authgw private cluster settings (rewritten at every start)\ninclude_if_exists = %s\n' \
            "'authgw.conf'" >>"$pgdata/postgresql.conf" || return 1
    fi

    # Settings that depend on where we are; rewritten at every start.
    local conf
    conf=$(
        printf '%s\n' "# written by scripts/lib/pg.sh"
        printf "listen_addresses = ''\n"
        printf 'port = %s\n' "$port"
        printf 'unix_socket_directories = %s\n' "$(_authgw_pg_sql_quote "$sock")"
        printf 'unix_socket_permissions = 0777\n'
        printf 'max_connections = 200\n'
    )
    if ! _authgw_pg_as "$user" "$AUTHGW_PG_CTL" -D "$pgdata" status >/dev/null 2>&1; then
        if ! printf '%s\n' "$conf" | _authgw_pg_as "$user" tee "$pgdata/authgw.conf" >/dev/null; then
            _authgw_pg_log "error: cannot write $pgdata/authgw.conf"
            return 1
        fi
        _authgw_pg_log "==> starting the private PostgreSQL cluster (socket $sock, log $log)"
        # The server must not inherit our lock fd or our stdout.
        if ! (
            if [[ -n $lockfd ]]; then eval "exec $lockfd>&-"; fi
            _authgw_pg_as "$user" "$AUTHGW_PG_CTL" -D "$pgdata" -l "$log" -w -t 60 -s start
        ) </dev/null >&2; then
            _authgw_pg_log "error: the private PostgreSQL cluster in $pgdata did not start; last lines of $log:"
            tail -n 20 "$log" >&2 || true
            return 1
        fi
    fi

    # Wait until it accepts connections.
    local url i
    url=$(_authgw_pg_cluster_url "$sock" "$port")
    for ((i = 0; i < 60; i++)); do
        if [[ -n $AUTHGW_PG_ISREADY ]]; then
            "$AUTHGW_PG_ISREADY" -q -h "$sock" -p "$port" -t 2 >/dev/null 2>&1 \
                && authgw_pg_answers "$url" 2 && break
        else
            authgw_pg_answers "$url" 2 && break
        fi
        sleep 0.5
    done
    if ((i >= 60)); then
        _authgw_pg_log "error: the private PostgreSQL cluster (socket $sock, port $port) does not accept connections; see $log"
        return 1
    fi
    printf '%s\n' "$url"
}

# authgw_private_cluster_stop DIR: stop the private cluster of DIR, if running.
authgw_private_cluster_stop() {
    local dir=${1:?usage: authgw_private_cluster_stop DIR}
    [[ -d $dir ]] || return 0
    dir=$(cd "$dir" && pwd -P) || return 1
    authgw_find_pg_bin || return 1
    _authgw_pg_layout "$dir" nocreate || return 1
    [[ -f $_AUTHGW_PG_DATA/PG_VERSION ]] || return 0
    if _authgw_pg_as "$_AUTHGW_PG_USER" "$AUTHGW_PG_CTL" -D "$_AUTHGW_PG_DATA" status >/dev/null 2>&1; then
        _authgw_pg_log "==> stopping the private PostgreSQL cluster in $_AUTHGW_PG_DATA"
        _authgw_pg_as "$_AUTHGW_PG_USER" "$AUTHGW_PG_CTL" -D "$_AUTHGW_PG_DATA" -m fast -w -t 60 -s stop >&2
    fi
}

# _authgw_db_exists URL DB: prints 1 when DB exists; fails if no connection.
_authgw_db_exists() {
    printf '%s\n' "SELECT 1 FROM pg_database WHERE datname = :'db';" \
        | PGCONNECT_TIMEOUT=10 "$AUTHGW_PSQL" -X -w -q -A -t -v ON_ERROR_STOP=1 -v db="$2" -d "$1"
}

# authgw_ensure_database URL DBNAME: create DBNAME on the server at URL
# (connecting to URL's database) unless it already exists.
authgw_ensure_database() {
    local url=${1:?usage: authgw_ensure_database URL DBNAME} db=${2:?usage: authgw_ensure_database URL DBNAME}
    local exists
    authgw_find_pg_client || authgw_find_pg_bin || return 1
    if ! exists=$(_authgw_db_exists "$url" "$db"); then
        _authgw_pg_log "error: cannot connect to PostgreSQL at $(authgw_pg_redact "$url")"
        return 1
    fi
    [[ $exists == 1 ]] && return 0
    _authgw_pg_log "==> creating database '$db'"
    if ! printf '%s\n' 'CREATE DATABASE :"db";' \
        | PGCONNECT_TIMEOUT=10 "$AUTHGW_PSQL" -X -w -q -v ON_ERROR_STOP=1 -v db="$db" -d "$url" >&2; then
        # Lost a race with a concurrent creator?
        exists=$(_authgw_db_exists "$url" "$db" 2>/dev/null) || exists=
        [[ $exists == 1 ]] && return 0
        _authgw_pg_log "error: could not create database '$db' at $(authgw_pg_redact "$url")"
        return 1
    fi
}

# authgw_test_admin_url ROOT: the server tests create their databases on
# (an admin connection): AUTHGW_TEST_DATABASE_URL if set, else
# postgresql://postgres@127.0.0.1:5432/postgres if it answers, else a private
# cluster under ROOT/.data (started, and left running). Prints the URL.
authgw_test_admin_url() {
    local root=${1:?usage: authgw_test_admin_url ROOT} default=postgresql://postgres@127.0.0.1:5432/postgres
    if [[ -n ${AUTHGW_TEST_DATABASE_URL:-} ]]; then
        printf '%s\n' "$AUTHGW_TEST_DATABASE_URL"
    elif authgw_pg_answers "$default" 3; then
        printf '%s\n' "$default"
    else
        _authgw_pg_log "no server answers at $default; using a private cluster under $root/.data"
        authgw_private_cluster "$root/.data"
    fi
}
