#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Benchmarks of authgw (docs/benchmarks.md has the figures and how to read them).
#
#   scripts/bench.sh [system]          the system benchmark (default), below,
#                                      the TLS part included
#   scripts/bench.sh tls               the TLS part alone (= BENCH_ONLY=tls)
#   scripts/bench.sh reset             the password-reset part alone (= BENCH_ONLY=reset)
#   scripts/bench.sh criterion [ARGS]  the criterion micro-benchmarks
#                                      (gateway/benches/hot_path.rs and plugins.rs);
#                                      ARGS go to criterion, e.g. a filter: verify
#
# The system benchmark: one run on this machine, each system in turn (A B A B),
# the same upstream and the same load generator (wrk):
#   a. an upstream nginx answering 200 "ok", hit directly (the limit);
#   b. nginx as a plain reverse proxy in front of it (no auth);
#   c. HAProxy checking an ES256 JWT (jwt_verify, iss, aud, exp) and a role
#      claim before proxying;
#   d. authgw proxying with an ES256 token, the role-rules plugin (the cinema
#      rules) and the revocation check;
#   e. nginx with auth_request to authgw (docs/forward-auth/nginx.conf, a
#      keep-alive upstream to authgw): the same decision as d, made for
#      nginx; its req/s are decisions/s;
#   f. bare-hyper: gateway/examples/bare_proxy.rs, a hyper 1 server and
#      hyper-util's legacy pooled client and nothing else (no auth, plugins
#      or metrics): authgw's own transport's limit (issue 18);
#   d0. authgw-base (with BENCH_BASE_BIN): another authgw binary (the one
#      before a change) with d's config on other ports, alternated with d in
#      the same rounds, measured, straced and profiled as d is: the A/B row
#      each change of issue 18 lands with.
# With every proxy run, the CPU time (user + system, /proc/PID/stat) the
# system under test used, ÷ the requests wrk completed: CPU µs per request.
# After the rounds, a separate short run per proxy (nginx, bare-hyper,
# HAProxy, authgw) under strace -c -f: BENCH_STRACE_REQUESTS requests on
# BENCH_STRACE_CONNS connections (wrk stops there), the syscalls the system
# under test made ÷ the requests: syscalls per request, and which ones.
# Then: /api/v1/auth/check req/s; login/s against cores ÷ argon2id verify
# time; refresh/s against pgbench running the same SQL transaction; the proxy
# p99 during a login flood against its baseline; authgw's RSS with 10 000 idle
# keep-alive connections. Prints a summary (also OUT/summary.md) with the
# ratios and the issue 7 targets; raw outputs stay in OUT.
#
# The TLS part (issue 22): one certificate made here with openssl (an EC P-256
# CA and a server certificate for 127.0.0.1 and localhost), served by
#   nginx-tls       nginx terminating TLS (TLS 1.2/1.3, ALPN h2 + http/1.1),
#                   a plain reverse proxy to the same upstream, no auth;
#   authgw-tls      a second authgw with [server.tls] on the same database and
#                   keys: the route of d. (ES256 + role-rules plugin +
#                   revocation), and a route "pub" (auth = "public", no
#                   plugin) to the same upstream: the TLS + proxy cost alone.
# Measured, alternated in each round: HTTP/1.1 keep-alive over TLS (wrk, the
# token sent to every system; plain nginx and authgw in the same rounds for
# the TLS cost), h2 (h2load -m BENCH_H2_STREAMS, the same connections),
# new connections per second with one request each: full handshakes
# (openssl s_time -new: a new session every time, never resumed) and resumed
# ones (h2load --h1 with Connection: close, which reconnects on the same
# SSL object and resumes). With every run, the CPU time the system under test
# used (SUT CPU), since one load CPU may be what bounds a handshake rate.
# The TLS summary follows the other one (OUT/summary.md).
#
# Needs: a release build (built here), plugins/dist/role-rules.wasm (built
# here when missing), target/release/examples/bare_proxy (built here with
# the proxy part), PostgreSQL at BENCH_PG_URL (a database BENCH_DB is
# dropped and created), nginx, haproxy, wrk, strace, pgbench, psql, openssl,
# curl, jq, python3, taskset, and for the TLS part h2load (nginx, haproxy,
# wrk, strace and h2load (nghttp2-client) are installed with apt-get when
# missing and running as root; HAProxy, strace and the bare proxy are needed
# by the proxy part only). nginx and HAProxy run as
# our own processes with our own config files on free ports, never as the
# system services.
#
# Environment (defaults in brackets):
#   BENCH_QUICK=1          short runs: 3 s, 2 rounds, 2 000 idle connections
#   BENCH_DURATION [10s]   each wrk / pgbench run
#   BENCH_ROUNDS [3]       rounds of the alternated proxy runs (at least 2)
#   BENCH_CONNS [64]       wrk connections for the proxy and check runs
#   BENCH_THREADS [1]      wrk threads
#   BENCH_SUT_CPUS [0]     CPUs of the system under test (taskset -c list)
#   BENCH_LOAD_CPUS [1]    CPUs of wrk, pgbench and the upstream nginx
#   BENCH_IDLE_CONNS [10000]
#   BENCH_PG_URL [postgresql://postgres@127.0.0.1:5432/postgres]  admin connection
#   BENCH_DB [authgw_bench]
#   BENCH_ARGON2_MS        argon2id verify time for the login/s bound; else
#                          taken from target/criterion (scripts/bench.sh
#                          criterion argon2), else the documented 14.0 ms
#   BENCH_OUT [target/bench/<date>]   raw outputs and the summary
#   BENCH_BUILD [1]        0: use target/release/authgw and
#                          target/release/examples/bare_proxy as they are
#                          (the bare proxy is still built when missing)
#   BENCH_BIN              another authgw binary to measure (implies
#                          BENCH_BUILD=0), e.g. an older build for an A/B run
#   BENCH_BASE_BIN         a second authgw binary (the previous build) run
#                          beside d as system d0 "authgw-base" in the proxy
#                          part: the same-run A/B (authgw/authgw-base)
#   BENCH_AUTHGW_TOML      TOML appended to authgw's config (both d and
#                          d0), e.g. '[passwords]\npriority = "normal"' to
#                          measure a setting against its default
#   BENCH_RUNTIME [auto]   authgw's server.runtime
#   BENCH_BASE_RUNTIME     d0's server.runtime, when other than d's: with
#                          BENCH_BASE_BIN the same binary, one runtime
#                          against another in one run
#   BENCH_KEEP_DB [0]      1: keep the database afterwards
#   BENCH_PERF [0]         1: perf record authgw during its last proxy run
#                          (OUT/perf.data, top symbols in OUT/perf.txt; with
#                          BENCH_BASE_BIN also OUT/perf-base.txt)
#   BENCH_STRACE [1]       0: no syscall count (strace) after the proxy rounds
#   BENCH_STRACE_REQUESTS [10000]  requests of each syscall-count run
#   BENCH_STRACE_CONNS [16]        wrk connections of each syscall-count run
#   BENCH_ONLY             comma-separated parts to run, of: proxy tls check
#                          reset login refresh flood rss (default: all)
#   BENCH_H2_STREAMS [1]   h2load -m: streams in flight per h2 connection (1:
#                          the same concurrency as wrk's HTTP/1.1 runs)
#   BENCH_HS_CLIENTS [16]  concurrent clients of the new-connection runs
#                          (openssl s_time processes; h2load -c)
#   BENCH_HS_RESUMED [DURATION in s × 1000]  connections of each resumed run
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
BENCH=$ROOT/scripts/bench

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
step() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# --- criterion ---------------------------------------------------------------
criterion() {
    mkdir -p target
    [[ -f plugins/dist/role-rules.wasm && -f plugins/dist/allow-all.wasm ]] \
        || bash scripts/build-plugins.sh || die "scripts/build-plugins.sh failed"
    cargo bench -p gateway --bench hot_path --bench plugins -- --noplot "$@" 2>&1 | tee target/bench.txt \
        || die "cargo bench failed (see the output above)"
    echo
    echo "==> summary (median times; see target/criterion for the full reports)"
    python3 - <<'PY'
import json, glob, os
rows = {}
for path in glob.glob("target/criterion/**/new/estimates.json", recursive=True):
    bench = os.path.relpath(os.path.dirname(os.path.dirname(path)), "target/criterion")
    with open(path) as f:
        rows[bench] = json.load(f)["median"]["point_estimate"]
def fmt(ns):
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= div:
            return f"{ns/div:.2f} {unit}"
    return f"{ns:.0f} ns"
groups = {}
for bench, ns in sorted(rows.items()):
    group, _, name = bench.partition("/")
    groups.setdefault(group, []).append((name, ns))
peers = ("GET _healthz", "EdDSA", "verify only", "verify", "cold (signature + claims)",
         "allow-all", "empty set")
for group, items in groups.items():
    base_name, base = next((i for p in peers for i in items if i[0] == p), items[0])
    print(f"{group}:")
    for name, ns in items:
        print(f"  {name:45s} {fmt(ns):>10s}   x{ns/base:.2f} vs {base_name}")
PY
}

case ${1:-system} in
criterion)
    shift
    criterion "$@"
    exit 0
    ;;
system) ;;
tls) BENCH_ONLY=tls ;;
reset) BENCH_ONLY=reset ;;
-h | --help | help)
    usage
    exit 0
    ;;
*) die "unknown command '$1' (try: scripts/bench.sh [system] | scripts/bench.sh tls | scripts/bench.sh reset | scripts/bench.sh criterion [filter])" ;;
esac

# --- settings ----------------------------------------------------------------
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    DURATION=${BENCH_DURATION:-3s}
    ROUNDS=${BENCH_ROUNDS:-2}
    IDLE_CONNS=${BENCH_IDLE_CONNS:-2000}
else
    DURATION=${BENCH_DURATION:-10s}
    ROUNDS=${BENCH_ROUNDS:-3}
    IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
fi
CONNS=${BENCH_CONNS:-64}
THREADS=${BENCH_THREADS:-1}
SUT_CPUS=${BENCH_SUT_CPUS:-0}
LOAD_CPUS=${BENCH_LOAD_CPUS:-1}
PG_ADMIN_URL=${BENCH_PG_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
DB=${BENCH_DB:-authgw_bench}
OUT=${BENCH_OUT:-$ROOT/target/bench/$(date +%Y%m%d-%H%M%S)}
POOL_SIZE=16
LOGIN_CONNS=8
REFRESH_CONNS=32
FLOOD_CONNS=16
BIN=${BENCH_BIN:-$ROOT/target/release/authgw}
[[ -z ${BENCH_BIN:-} ]] || BENCH_BUILD=0
ONLY=${BENCH_ONLY:-proxy,tls,check,reset,login,refresh,flood,rss}
want() { [[ ,$ONLY, == *,$1,* ]]; }
H2_STREAMS=${BENCH_H2_STREAMS:-1}
BARE_BIN=$ROOT/target/release/examples/bare_proxy
BASE_BIN=${BENCH_BASE_BIN:-}
[[ -z $BASE_BIN || -x $BASE_BIN ]] || die "BENCH_BASE_BIN='$BASE_BIN' is not an executable"
STRACE=${BENCH_STRACE:-1}
STRACE_REQUESTS=${BENCH_STRACE_REQUESTS:-10000}
STRACE_CONNS=${BENCH_STRACE_CONNS:-16}
want proxy || STRACE=0
HS_CLIENTS=${BENCH_HS_CLIENTS:-16}
WASM=$ROOT/plugins/dist/role-rules.wasm
USER_LOGIN=viewer
USER_PASSWORD=bench-viewer-password-1
ADMIN_LOGIN=benchadmin
ADMIN_PASSWORD=bench-admin-password-1

[[ $DURATION =~ ^[0-9]+s$ ]] || die "BENCH_DURATION must be whole seconds like 10s (got '$DURATION')"
DURATION_S=${DURATION%s}
if ! [[ $ROUNDS =~ ^[0-9]+$ ]] || ((ROUNDS < 2)); then
    die "BENCH_ROUNDS must be a number ≥ 2 (got '$ROUNDS')"
fi
[[ $CONNS =~ ^[0-9]+$ && $THREADS =~ ^[0-9]+$ && $IDLE_CONNS =~ ^[0-9]+$ ]] \
    || die "BENCH_CONNS, BENCH_THREADS and BENCH_IDLE_CONNS must be numbers"
HS_RESUMED=${BENCH_HS_RESUMED:-$((DURATION_S * 1000))}
[[ $H2_STREAMS =~ ^[1-9][0-9]*$ && $HS_CLIENTS =~ ^[1-9][0-9]*$ && $HS_RESUMED =~ ^[1-9][0-9]*$ ]] \
    || die "BENCH_H2_STREAMS, BENCH_HS_CLIENTS and BENCH_HS_RESUMED must be positive numbers"
[[ $STRACE == [01] && $STRACE_REQUESTS =~ ^[1-9][0-9]*$ && $STRACE_CONNS =~ ^[1-9][0-9]*$ ]] \
    || die "BENCH_STRACE must be 0 or 1, BENCH_STRACE_REQUESTS and BENCH_STRACE_CONNS positive numbers"

# --- prerequisites -----------------------------------------------------------
declare -A PACKAGE_OF=([nginx]=nginx [haproxy]=haproxy [wrk]=wrk [h2load]=nghttp2-client [strace]=strace)
tools=(nginx wrk)
want proxy && tools+=(haproxy)
[[ $STRACE == 1 ]] && tools+=(strace)
want tls && tools+=(h2load)
missing=()
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGE_OF[$tool]}")
done
if ((${#missing[@]})); then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        step "installing ${missing[*]} with apt-get"
        # A fresh machine may have no package lists yet.
        apt-get -q update >&2 || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends "${missing[@]}" >&2 \
            || die "apt-get install ${missing[*]} failed"
    else
        die "${missing[*]} not found; install them (Debian/Ubuntu: sudo apt-get install ${missing[*]})"
    fi
fi
for tool in pgbench psql openssl curl jq python3 taskset; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (pgbench/psql: postgresql-client; taskset: util-linux)"
done
SUT_CORES=$(taskset -c "$SUT_CPUS" nproc) || die "BENCH_SUT_CPUS='$SUT_CPUS' is not a usable CPU list"
LOAD_CORES=$(taskset -c "$LOAD_CPUS" nproc) || die "BENCH_LOAD_CPUS='$LOAD_CPUS' is not a usable CPU list"
psql -X -w -q -At -d "$PG_ADMIN_URL" -c 'select 1' >/dev/null 2>&1 \
    || die "no PostgreSQL answers at $PG_ADMIN_URL (set BENCH_PG_URL)"

# Every process here (and authgw, nginx, HAProxy started below) may hold
# 10 000+ sockets.
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && ((hard < IDLE_CONNS + 256)); then
    die "ulimit -Hn is $hard, too low for $IDLE_CONNS idle connections (raise it, or set BENCH_IDLE_CONNS)"
fi
ulimit -n "$hard" 2>/dev/null || ulimit -n $((IDLE_CONNS + 256)) || die "cannot raise ulimit -n"
NOFILE=$(ulimit -n)
[[ $NOFILE == unlimited ]] && NOFILE=1048576

if [[ ${BENCH_BUILD:-1} == 1 ]]; then
    step "cargo build --release -p gateway"
    cargo build --release -p gateway >&2 || die "cargo build --release -p gateway failed"
fi
[[ -x $BIN ]] || die "$BIN missing (build it: cargo build --release -p gateway)"
if want proxy && [[ ${BENCH_BUILD:-1} == 1 || ! -x $BARE_BIN ]]; then
    step "cargo build --release -p gateway --example bare_proxy"
    cargo build --release -p gateway --example bare_proxy >&2 \
        || die "cargo build --release -p gateway --example bare_proxy failed"
fi
if [[ ! -f $WASM ]]; then
    step "building the plugins (scripts/build-plugins.sh)"
    bash scripts/build-plugins.sh >&2 || die "scripts/build-plugins.sh failed"
fi
[[ -f $WASM ]] || die "$WASM missing after scripts/build-plugins.sh"

mkdir -p "$OUT"/{conf,raw,keys,nginx-up,nginx-proxy,nginx-authz} || die "cannot create $OUT"
chmod 700 "$OUT/keys"
: >"$OUT/results.jsonl"
step "results in $OUT"

# --- process bookkeeping -----------------------------------------------------
PIDS=()
declare -A PID_OF=()
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${BENCH_KEEP_DB:-0} != 1 && -n ${DB_CREATED:-} ]]; then
        psql -X -w -q -d "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    if ((rc != 0)); then
        printf 'error: the benchmark failed (exit %s); logs and raw outputs in %s\n' "$rc" "$OUT" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'printf "error: bench.sh failed at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CPUS COMMAND...: run in the background, pinned, logging to OUT/NAME.log.
start() {
    local name=$1 cpus=$2
    shift 2
    taskset -c "$cpus" "$@" >"$OUT/$name.log" 2>&1 &
    PIDS+=("$!")
    PID_OF[$name]=$!
}

# stop NAME: TERM the process started as NAME and wait for it.
stop() {
    local pid=${PID_OF[$1]:-}
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PID_OF[$1]"
    forget "$pid"
}

# forget PID: no longer ours to clean up (it has exited).
forget() {
    local kept=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || kept+=("$p"); done
    PIDS=("${kept[@]}")
}

# wait_http NAME URL [CURL ARGS...]: until URL answers (any status) or NAME exits.
wait_http() {
    local name=$1 url=$2 i
    shift 2
    for ((i = 0; i < 150; i++)); do
        curl -s -o /dev/null --max-time 1 "$@" "$url" && return 0
        kill -0 "${PID_OF[$name]}" 2>/dev/null || {
            tail -n 20 "$OUT/$name.log" >&2
            die "$name exited during start-up (log: $OUT/$name.log)"
        }
        sleep 0.2
    done
    tail -n 20 "$OUT/$name.log" >&2
    die "$name does not answer at $url (log: $OUT/$name.log)"
}

free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

read -r P_UP P_NGX P_HAP P_AUTH P_ADMIN P_NGXA P_BARE P_BASE P_BASE_ADMIN < <(free_ports 9)
UPSTREAM=http://127.0.0.1:$P_UP
declare -A URL=(
    [direct]=http://127.0.0.1:$P_UP/films/premium/1
    [nginx]=http://127.0.0.1:$P_NGX/films/premium/1
    [haproxy]=http://127.0.0.1:$P_HAP/films/premium/1
    [authgw]=http://127.0.0.1:$P_AUTH/films/premium/1
    [nginx-authz]=http://127.0.0.1:$P_NGXA/films/premium/1
    [bare-hyper]=http://127.0.0.1:$P_BARE/films/premium/1
    [authgw-base]=http://127.0.0.1:$P_BASE/films/premium/1
)
# HAProxy, nginx auth_request and the bare hyper proxy are measured by the
# proxy part only.
if want proxy; then
    SYSTEMS=(direct nginx bare-hyper haproxy authgw nginx-authz)
    [[ -z $BASE_BIN ]] || SYSTEMS=(direct nginx bare-hyper haproxy authgw-base authgw nginx-authz)
else
    SYSTEMS=(direct nginx authgw)
fi
has_system() { [[ " ${SYSTEMS[*]} " == *" $1 "* ]]; }
API=http://127.0.0.1:$P_AUTH
WRK_ARGS="wrk -t$THREADS -c$CONNS -d$DURATION --latency (taskset -c $LOAD_CPUS)"

# --- record ------------------------------------------------------------------
# record JSON_FRAGMENT RAW_FILE: the BENCH_JSON line of a wrk output, with the
# labels, appended to results.jsonl.
record() {
    local labels=$1 raw=$2 line
    line=$(grep -m1 '^BENCH_JSON ' "$raw") || {
        tail -n 20 "$raw" >&2
        die "no figures in $raw (wrk failed?)"
    }
    line=${line#BENCH_JSON }
    printf '%s\n' "$line" | jq -c --argjson l "$labels" '$l + .' >>"$OUT/results.jsonl"
    printf '%s\n' "$line" | jq -r --arg l "$labels" --argjson lj "$labels" \
        '"    \($l): \(.rps|floor) req/s, p50 \(.p50_us/1000) ms, p99 \(.p99_us/1000) ms" +
         (if $lj.sut_user_s != null and .requests > 0
          then ", SUT CPU \(($lj.sut_user_s + $lj.sut_sys_s) * 1e7 / .requests | floor / 10) µs/request"
          else "" end) +
         (if (.non2xx + .connect_errors + .read_errors + .write_errors + .timeouts) > 0
          then ", non-2xx \(.non2xx), errors \(.connect_errors + .read_errors + .write_errors + .timeouts)" else "" end)' >&2
}

# wrk_exec NAME SCRIPT URL [wrk args...]: one wrk run, its output in OUT/raw/NAME.txt.
wrk_exec() {
    local name=$1 script=$2 url=$3
    shift 3
    BENCH_LUA_DIR=$BENCH taskset -c "$LOAD_CPUS" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency \
        -s "$BENCH/$script" "$@" "$url" >"$OUT/raw/$name.txt" 2>&1 \
        || { tail -n 20 "$OUT/raw/$name.txt" >&2; die "wrk failed on $url (see $OUT/raw/$name.txt)"; }
}

# wrk_run NAME LABELS SCRIPT URL [wrk args...]: one measured wrk run.
wrk_run() {
    local name=$1 labels=$2
    shift 2
    wrk_exec "$name" "$@"
    record "$labels" "$OUT/raw/$name.txt"
}

# --- CPU time of the system under test ---------------------------------------
# The processes whose CPU time is a system's (the proxy part; nginx-authz
# makes authgw work too). sut_pids adds their children (nginx's worker).
declare -A SUT_PROCS=([direct]=nginx-upstream [nginx]=nginx-proxy [bare-hyper]=bare-hyper [haproxy]=haproxy
    [authgw]=authgw [authgw-base]=authgw-base [nginx-authz]="nginx-authz authgw")
CLK_TCK=$(getconf CLK_TCK)
# sut_pids NAME...: the pids of the processes started as NAME... and of their children.
sut_pids() {
    local name pid
    for name in "$@"; do
        pid=${PID_OF[$name]:-}
        [[ -n $pid ]] || { warn "no process started as '$name'"; continue; }
        echo "$pid"
        pgrep -P "$pid" || true
    done
}
# sut_ticks_split NAME...: "USER SYSTEM", the CPU clock ticks used so far by
# the processes started as NAME... and their children (/proc/PID/stat
# utime, stime: all of a process's threads, exited ones included).
sut_ticks_split() {
    local p stat user=0 sys=0
    local -a f
    for p in $(sut_pids "$@"); do
        stat=$(<"/proc/$p/stat") || continue
        stat=${stat##*) }
        read -r -a f <<<"$stat"
        user=$((user + f[11]))
        sys=$((sys + f[12]))
    done
    echo "$user $sys"
}
# sut_ticks NAME...: user + system ticks.
sut_ticks() {
    local user sys
    read -r user sys < <(sut_ticks_split "$@")
    echo $((user + sys))
}
now_s() { date +%s.%N; }

# --- machine -----------------------------------------------------------------
LOAD_BEFORE=$(cut -d ' ' -f 1-3 /proc/loadavg)
STARTED=$(date -u +%Y-%m-%dT%H:%MZ)
step "load average: $LOAD_BEFORE"
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
MACHINE="$(nproc) CPU ${cpu:-?}, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z ${BENCH_BIN:-} ]] || COMMIT="$COMMIT (binary $BENCH_BIN)"
if ! git diff --quiet HEAD -- gateway/src 2>/dev/null; then COMMIT="$COMMIT+dirty(gateway/src)"; fi

# --- database, keys, administrator -------------------------------------------
DB_URL=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$PG_ADMIN_URL" "$DB")
step "database $DB (dropped and created)"
PGOPTIONS='-c client_min_messages=warning' psql -X -w -q -v ON_ERROR_STOP=1 -d "$PG_ADMIN_URL" \
    -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" -c "CREATE DATABASE \"$DB\"" >/dev/null \
    || die "cannot create database $DB"
DB_CREATED=1

# The cinema rules as an inline TOML table.
CINEMA_TOML=$(python3 - "$ROOT/plugins/role-rules/examples/cinema.json" <<'PY'
import json, re, sys
def t(v):
    if isinstance(v, bool): return "true" if v else "false"
    if isinstance(v, (int, float)): return json.dumps(v)
    if isinstance(v, str): return json.dumps(v)
    if isinstance(v, list): return "[" + ", ".join(t(x) for x in v) + "]"
    if isinstance(v, dict):
        key = lambda k: k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)
        return "{ " + ", ".join(f"{key(k)} = {t(x)}" for k, x in v.items()) + " }"
    raise SystemExit(f"cannot write {v!r} as TOML")
print(t(json.load(open(sys.argv[1]))))
PY
) || die "cannot convert plugins/role-rules/examples/cinema.json to TOML"

CONFIG=$OUT/conf/gateway.toml
cat >"$CONFIG" <<EOF
# Written by scripts/bench.sh.
[server]
listen = "127.0.0.1:$P_AUTH"
# The default (10s) also closes keep-alive connections idle for 10 s, which
# would empty the 10 000 idle connections of the RSS measurement while they
# are being opened. No other measurement leaves a connection idle.
header_read_timeout = "120s"
runtime = "${BENCH_RUNTIME:-auto}"
# nginx (e.) asks for forward-auth decisions from here.
trusted_proxies = ["127.0.0.1"]

[database]
url = "$DB_URL"
pool_size = $POOL_SIZE

[tokens]
algorithm = "ES256"
keys_dir = "$OUT/keys"
access_ttl = "4h"

[limits]
# Every request of the benchmark comes from 127.0.0.1.
auth_per_minute = 100000000
auth_burst = 100000000
# The login and flood parts check one login's password from 8 and 16
# connections at once. A check in progress counts as a failure until it
# succeeds (so parallel guesses cannot outrun the count), so with the
# default 5 the pair locks whenever more than 5 wait for the hasher, and
# the part measures 429s (2026-12-05: 353 of 1,547 logins on a slow host).
lockout_threshold = 1000000

[log]
level = "warn"

[admin]
enabled = true
listen = "127.0.0.1:$P_ADMIN"

[[routes]]
name = "films"
prefix = "/films"
upstream = "$UPSTREAM"
auth = "required"
plugins = ["cinema"]

[[plugins]]
name = "cinema"
file = "$WASM"
config = $CINEMA_TOML
EOF
if [[ -n ${BENCH_AUTHGW_TOML:-} ]]; then
    printf '\n# BENCH_AUTHGW_TOML:\n%b\n' "$BENCH_AUTHGW_TOML" >>"$CONFIG"
fi
BASE_CONFIG=$CONFIG
if [[ -n ${BENCH_BASE_RUNTIME:-} ]]; then
    BASE_CONFIG=$OUT/conf/gateway-base.toml
    sed "s/^runtime = \".*\"$/runtime = \"$BENCH_BASE_RUNTIME\"/" "$CONFIG" >"$BASE_CONFIG"
fi

export AUTHGW_CONFIG=$CONFIG AUTHGW_DATABASE_URL=$DB_URL AUTHGW_KEYS_DIR=$OUT/keys AUTHGW_LOG=warn
unset AUTHGW_LISTEN AUTHGW_ADMIN_LISTEN
step "authgw db upgrade; keys generate --alg ES256; admin create"
"$BIN" db upgrade >"$OUT/setup.log" 2>&1 || { cat "$OUT/setup.log" >&2; die "authgw db upgrade failed"; }
"$BIN" keys generate --alg ES256 >>"$OUT/setup.log" 2>&1 || { cat "$OUT/setup.log" >&2; die "authgw keys generate failed"; }
printf '%s\n' "$ADMIN_PASSWORD" | "$BIN" admin create --login "$ADMIN_LOGIN" --password-stdin >>"$OUT/setup.log" 2>&1 \
    || { cat "$OUT/setup.log" >&2; die "authgw admin create failed"; }
KEY_FILE=$(find "$OUT/keys" -maxdepth 1 -type f -name '*.pem' | head -n 1)
[[ -n $KEY_FILE ]] || die "no key file in $OUT/keys after authgw keys generate"
PUB=$OUT/conf/es256-public.pem
openssl pkey -in "$KEY_FILE" -pubout -out "$PUB" 2>>"$OUT/setup.log" || die "openssl pkey -pubout failed on $KEY_FILE"

# --- configs of nginx and HAProxy --------------------------------------------
# nginx_common DIR WORKERS: one worker per CPU it is pinned to, as HAProxy's
# nbthread and authgw's thread-per-core workers.
nginx_common() {
    local dir=$1 workers=$2
    cat <<EOF
worker_processes $workers;
worker_rlimit_nofile $NOFILE;
pid $dir/nginx.pid;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
EOF
}
{
    nginx_common "$OUT/nginx-up" "$LOAD_CORES"
    cat <<EOF
    server {
        listen 127.0.0.1:$P_UP;
        location / { default_type text/plain; return 200 "ok"; }
    }
}
EOF
} >"$OUT/conf/nginx-upstream.conf"
{
    nginx_common "$OUT/nginx-proxy" "$SUT_CORES"
    cat <<EOF
    upstream up {
        server 127.0.0.1:$P_UP;
        keepalive 256;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$P_NGX;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$OUT/conf/nginx-proxy.conf"
# e: the server block of docs/forward-auth/nginx.conf, as the tests run it.
{
    nginx_common "$OUT/nginx-authz" "$SUT_CORES"
    sed -e "s/@LISTEN@/127.0.0.1:$P_NGXA/" -e "s/@AUTHGW@/127.0.0.1:$P_AUTH/" -e "s/@APP@/127.0.0.1:$P_UP/" \
        "$ROOT/docs/forward-auth/nginx.conf"
    echo "}"
} >"$OUT/conf/nginx-authz.conf"

# HAProxy: what authgw checks, as far as HAProxy can: the signature with the
# algorithm pinned to ES256, iss, aud, exp, and for /films/premium the role
# "subscriber" in the roles claim. HAProxy 2.6's json_query cannot return an
# array ('$.roles' yields nothing, only '$.roles[0]' works), so the role is
# matched in the decoded payload text. 403 for a missing role: HAProxy has no
# default error page for authgw's 402.
cat >"$OUT/conf/haproxy.cfg" <<EOF
global
    nbthread $SUT_CORES
    maxconn $(((NOFILE - 64) / 2))

defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s

frontend fe
    bind 127.0.0.1:$P_HAP
    http-request set-var(txn.bearer) http_auth_bearer
    http-request deny deny_status 401 unless { var(txn.bearer) -m found }
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
    http-request deny deny_status 401 unless { var(txn.alg) -m str ES256 }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$PUB") -m int 1 }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.iss') -m str authgw }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.aud') -m str cinema }
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
    http-request set-var(txn.now) date
    http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
    http-request deny deny_status 403 if { path_beg /films/premium } !{ var(txn.bearer),word(2,.),ub64dec -m reg '"roles":\[[^]]*"subscriber"' }
    default_backend upstream

backend upstream
    server up 127.0.0.1:$P_UP
EOF

# --- start everything --------------------------------------------------------
if has_system haproxy; then
    step "starting the upstream nginx (:$P_UP), nginx proxy (:$P_NGX), bare hyper proxy (:$P_BARE), HAProxy (:$P_HAP), authgw (:$P_AUTH), nginx auth_request (:$P_NGXA)"
    haproxy -c -f "$OUT/conf/haproxy.cfg" >"$OUT/haproxy-check.log" 2>&1 \
        || { cat "$OUT/haproxy-check.log" >&2; die "HAProxy refuses $OUT/conf/haproxy.cfg"; }
else
    step "starting the upstream nginx (:$P_UP), nginx proxy (:$P_NGX), authgw (:$P_AUTH)"
fi
start nginx-upstream "$LOAD_CPUS" nginx -p "$OUT/nginx-up" -c "$OUT/conf/nginx-upstream.conf" \
    -e "$OUT/nginx-upstream.error.log" -g 'daemon off;'
start nginx-proxy "$SUT_CPUS" nginx -p "$OUT/nginx-proxy" -c "$OUT/conf/nginx-proxy.conf" \
    -e "$OUT/nginx-proxy.error.log" -g 'daemon off;'
has_system haproxy && start haproxy "$SUT_CPUS" haproxy -db -f "$OUT/conf/haproxy.cfg"
has_system bare-hyper && start bare-hyper "$SUT_CPUS" "$BARE_BIN" "127.0.0.1:$P_BARE" "$UPSTREAM"
start authgw "$SUT_CPUS" "$BIN" serve
has_system authgw-base && start authgw-base "$SUT_CPUS" env AUTHGW_LISTEN="127.0.0.1:$P_BASE" \
    AUTHGW_ADMIN_LISTEN="127.0.0.1:$P_BASE_ADMIN" AUTHGW_CONFIG="$BASE_CONFIG" "$BASE_BIN" serve
if has_system nginx-authz; then
    start nginx-authz "$SUT_CPUS" nginx -p "$OUT/nginx-authz" -c "$OUT/conf/nginx-authz.conf" \
        -e "$OUT/nginx-authz.error.log" -g 'daemon off;'
fi
wait_http nginx-upstream "$UPSTREAM/"
wait_http nginx-proxy "http://127.0.0.1:$P_NGX/"
has_system haproxy && wait_http haproxy "http://127.0.0.1:$P_HAP/"
has_system bare-hyper && wait_http bare-hyper "http://127.0.0.1:$P_BARE/"
wait_http authgw "$API/healthz"
has_system authgw-base && wait_http authgw-base "http://127.0.0.1:$P_BASE/healthz"
has_system nginx-authz && wait_http nginx-authz "http://127.0.0.1:$P_NGXA/"

# --- users and tokens --------------------------------------------------------
# post PATH JSON [TOKEN]: the body of a successful POST, else die.
api() {
    local method=$1 path=$2 body=${3:-} token=${4:-} out code
    local args=(-s -X "$method" -w '\n%{http_code}' "$API$path")
    [[ -n $body ]] && args+=(-H 'Content-Type: application/json' -d "$body")
    [[ -n $token ]] && args+=(-H "Authorization: Bearer $token")
    out=$(curl "${args[@]}") || die "$method $path: curl failed"
    code=${out##*$'\n'}
    [[ $code == 2* ]] || die "$method $path answered $code: ${out%$'\n'*}"
    printf '%s\n' "${out%$'\n'*}"
}
login() { api POST /api/v1/auth/login "{\"login\":\"$1\",\"password\":\"$2\"}"; }

step "user '$USER_LOGIN' with role subscriber (signup, admin grants the role, login)"
api POST /api/v1/auth/signup "{\"login\":\"$USER_LOGIN\",\"password\":\"$USER_PASSWORD\",\"email\":\"viewer@example.org\"}" >/dev/null
ADMIN_TOKEN=$(login "$ADMIN_LOGIN" "$ADMIN_PASSWORD" | jq -r .access_token)
api POST /api/v1/roles '{"name":"subscriber","description":"paid plan"}' "$ADMIN_TOKEN" >/dev/null
first=$(login "$USER_LOGIN" "$USER_PASSWORD" | jq -r .access_token)
USER_ID=$(api GET /api/v1/users/me "" "$first" | jq -r .id)
api PUT "/api/v1/users/$USER_ID/roles/subscriber" "" "$ADMIN_TOKEN" >/dev/null
TOKEN=$(login "$USER_LOGIN" "$USER_PASSWORD" | jq -r .access_token)
[[ -n $TOKEN && $TOKEN != null ]] || die "no access token for $USER_LOGIN"
payload=$(cut -d . -f 2 <<<"$TOKEN" | tr '_-' '/+')
while ((${#payload} % 4)); do payload+='='; done
base64 -d <<<"$payload" | jq -e '.roles | index("subscriber")' >/dev/null \
    || die "the access token of $USER_LOGIN carries no 'subscriber' role"
LOGIN_BODY="{\"login\":\"$USER_LOGIN\",\"password\":\"$USER_PASSWORD\"}"

# --- sanity: every system answers 200 "ok", and the two checking ones refuse --
# a missing token, a forged signature and a token without the role.
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
sig=${TOKEN##*.}
if [[ ${sig:5:1} == A ]]; then flip=B; else flip=A; fi
FORGED=${TOKEN%.*}.${sig:0:5}$flip${sig:6}
for sys_ in "${SYSTEMS[@]}"; do
    body=$(curl -s -H "Authorization: Bearer $TOKEN" "${URL[$sys_]}") || die "$sys_: no answer at ${URL[$sys_]}"
    [[ $body == ok ]] || die "$sys_ answered '$body' instead of 'ok' at ${URL[$sys_]}"
done
for sys_ in haproxy authgw-base authgw nginx-authz; do
    has_system "$sys_" || continue
    s=$(status "${URL[$sys_]}")
    [[ $s == 401 ]] || die "$sys_ let a request without a token through ($s)"
    s=$(status -H "Authorization: Bearer $FORGED" "${URL[$sys_]}")
    [[ $s == 401 ]] || die "$sys_ let a forged signature through ($s)"
    s=$(status -H "Authorization: Bearer $ADMIN_TOKEN" "${URL[$sys_]}")
    [[ $s == 40[23] ]] || die "$sys_ let a token without the subscriber role through ($s)"
done
step "sanity checks passed: 200 with the token; 401 without one or forged; 402/403 without the role"

# --- argon2id verify time ----------------------------------------------------
ARGON2_MS=${BENCH_ARGON2_MS:-}
ARGON2_SOURCE="BENCH_ARGON2_MS"
if [[ -z $ARGON2_MS ]]; then
    est=$(find target/criterion -path '*argon2id*/verify/new/estimates.json' 2>/dev/null | head -n 1) || est=
    if [[ -n $est ]]; then
        ARGON2_MS=$(jq '.median.point_estimate / 1e6' "$est")
        ARGON2_SOURCE="criterion ($est)"
    else
        ARGON2_MS=14.0
        ARGON2_SOURCE="docs/benchmarks.md (no criterion estimate in target/criterion)"
    fi
fi

if want proxy; then
# --- a-d: the proxies, alternated --------------------------------------------
step "warm-up: 2 s of wrk on each system"
for sys_ in "${SYSTEMS[@]}"; do
    BENCH_LUA_DIR=$BENCH taskset -c "$LOAD_CPUS" wrk -t"$THREADS" -c"$CONNS" -d2s -s "$BENCH/get.lua" \
        -H "Authorization: Bearer $TOKEN" "${URL[$sys_]}" >"$OUT/raw/warmup-$sys_.txt" 2>&1 \
        || die "wrk warm-up failed on $sys_ (see $OUT/raw/warmup-$sys_.txt)"
done
for ((r = 1; r <= ROUNDS; r++)); do
    step "proxy round $r/$ROUNDS: ${SYSTEMS[*]} ($DURATION each)"
    for sys_ in "${SYSTEMS[@]}"; do
        perf_pid=
        if [[ ${BENCH_PERF:-0} == 1 && $sys_ == authgw* && $r == "$ROUNDS" ]]; then
            perf_name=${sys_/authgw/perf}
            perf record -F 499 -g -o "$OUT/$perf_name.data" -p "${PID_OF[$sys_]}" -- sleep "$DURATION_S" \
                >"$OUT/raw/$perf_name-record.txt" 2>&1 &
            perf_pid=$!
            PIDS+=("$perf_pid")
        fi
        # shellcheck disable=SC2086 # SUT_PROCS holds a list of names
        read -r u0 s0 < <(sut_ticks_split ${SUT_PROCS[$sys_]})
        t0=$(now_s)
        wrk_exec "proxy-$sys_-$r" get.lua "${URL[$sys_]}" -H "Authorization: Bearer $TOKEN"
        t1=$(now_s)
        # shellcheck disable=SC2086
        read -r u1 s1 < <(sut_ticks_split ${SUT_PROCS[$sys_]})
        record "$(jq -cn --arg s "$sys_" --argjson r "$r" --argjson w "$(jq -n "$t1 - $t0")" \
            --argjson u "$(jq -n "($u1 - $u0) / $CLK_TCK")" --argjson k "$(jq -n "($s1 - $s0) / $CLK_TCK")" \
            '{test: "proxy", system: $s, round: $r, wall_s: $w, sut_user_s: $u, sut_sys_s: $k}')" \
            "$OUT/raw/proxy-$sys_-$r.txt"
        if [[ -n $perf_pid ]]; then
            wait "$perf_pid" || warn "perf record failed (see $OUT/raw/$perf_name-record.txt)"
            forget "$perf_pid"
            perf report -i "$OUT/$perf_name.data" --no-children --sort dso,symbol --percent-limit 0.7 --stdio \
                >"$OUT/$perf_name.txt" 2>/dev/null || warn "perf report failed"
            step "perf profile of $sys_: $OUT/$perf_name.txt"
        fi
    done
done

# --- syscalls per proxied request (issue 18) ---------------------------------
# strace -c -f attached to every process (and thread) of the system, then one
# wrk run (-t1, STRACE_CONNS connections) that stops after STRACE_REQUESTS
# responses (count.lua); strace detaches right after. strace slows the
# system down a lot, so this is a run of its own, never a throughput run;
# what a process does per second rather than per request (timers, authgw's
# plugin epoch ticker while plugin calls run) weighs more here than at full
# speed, so the table lists every syscall.
strace_run() {
    local sys_=$1 spid wpid expected i n figures line
    local raw=$OUT/raw/syscalls-$1.txt trace=$OUT/raw/strace-$1.txt done_file=$OUT/raw/syscalls-$1.done
    local err=$OUT/raw/strace-$1.err
    local -a pids attach=()
    # shellcheck disable=SC2086 # SUT_PROCS holds a list of names
    mapfile -t pids < <(sut_pids ${SUT_PROCS[$sys_]})
    for i in "${pids[@]}"; do attach+=(-p "$i"); done
    expected=${#pids[@]}
    rm -f "$done_file"
    : >"$err"
    taskset -c "$LOAD_CPUS" strace -c -f -o "$trace" "${attach[@]}" 2>>"$err" &
    spid=$!
    PIDS+=("$spid")
    # "Process N attached" (with -f: "attached with M threads") once per -p.
    for ((i = 0; i < 200; i++)); do
        n=$(grep -c ' attached' "$err") || n=0
        ((n >= expected)) && break
        kill -0 "$spid" 2>/dev/null || { cat "$err" >&2; die "strace could not attach to $sys_"; }
        sleep 0.05
    done
    ((i < 200)) || die "strace did not attach to every process of $sys_ in 10 s (see $err)"
    BENCH_LUA_DIR=$BENCH BENCH_MAX_REQUESTS=$STRACE_REQUESTS BENCH_DONE_FILE=$done_file \
        taskset -c "$LOAD_CPUS" wrk -t1 -c"$STRACE_CONNS" -d300s --latency -s "$BENCH/count.lua" \
        -H "Authorization: Bearer $TOKEN" "${URL[$sys_]}" >"$raw" 2>&1 &
    wpid=$!
    PIDS+=("$wpid")
    while kill -0 "$wpid" 2>/dev/null && [[ ! -e $done_file ]]; do sleep 0.02; done
    # wrk reports when interrupted (its SIGINT handler ends the run).
    kill -INT "$wpid" 2>/dev/null || true
    wait "$wpid" || { tail -n 20 "$raw" >&2; die "wrk failed on $sys_ under strace (see $raw)"; }
    forget "$wpid"
    kill -INT "$spid" 2>/dev/null || true
    wait "$spid" || true # strace ends on the signal
    forget "$spid"
    [[ -e $done_file ]] || warn "$sys_: wrk ended before $STRACE_REQUESTS responses under strace (see $raw)"
    figures=$(python3 "$BENCH/syscalls.py" "$trace") || die "no strace -c summary in $trace"
    line=$(grep -m1 '^BENCH_JSON ' "$raw") || { tail -n 20 "$raw" >&2; die "no figures in $raw (wrk failed?)"; }
    line=${line#BENCH_JSON }
    jq -cn --arg s "$sys_" --argjson c "$STRACE_CONNS" --argjson w "$line" --argjson f "$figures" \
        '{test: "syscalls", system: $s, conns: $c, requests: $w.requests, rps: $w.rps,
          non2xx: $w.non2xx, connect_errors: $w.connect_errors, read_errors: $w.read_errors,
          write_errors: $w.write_errors, timeouts: $w.timeouts} + $f' >>"$OUT/results.jsonl"
    jq -rn --arg s "$sys_" --argjson w "$line" --argjson f "$figures" \
        '"    \($s): \($f.total / $w.requests * 100 | round / 100) syscalls/request (\($f.total) over \($w.requests) requests, \($w.rps | floor) req/s under strace); " +
         ([$f.calls | to_entries[] | select(.value / $w.requests >= 0.05)
           | "\(.key) \(.value / $w.requests * 100 | round / 100)"] | join(", "))' >&2
    rm -f "$done_file"
}
if [[ $STRACE == 1 ]]; then
    STRACE_SYSTEMS=()
    for sys_ in nginx bare-hyper haproxy authgw-base authgw; do has_system "$sys_" && STRACE_SYSTEMS+=("$sys_"); done
    for sys_ in "${STRACE_SYSTEMS[@]}"; do
        step "syscalls per request: $sys_ under strace -c -f, $STRACE_REQUESTS requests on $STRACE_CONNS connections"
        strace_run "$sys_"
    done
fi

fi

if want tls; then
# --- TLS at the edge (issue 22) ----------------------------------------------
# nginx terminating TLS against authgw terminating TLS: the same upstream, the
# same certificate, the same token; HTTP/1.1 keep-alive, h2, new connections.
TLS_DIR=$OUT/tls
mkdir -p "$TLS_DIR" "$OUT/nginx-tls"
chmod 700 "$TLS_DIR"
step "TLS: an EC P-256 CA and a server certificate for 127.0.0.1 and localhost (openssl)"
{
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 -subj /CN=authgw-bench-ca \
        -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" \
        && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
            -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" \
        && printf '%s\n' 'basicConstraints = critical, CA:FALSE' 'keyUsage = critical, digitalSignature' \
            'extendedKeyUsage = serverAuth' 'subjectAltName = IP:127.0.0.1, DNS:localhost' >"$TLS_DIR/server.ext" \
        && openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" \
            -CAcreateserial -days 7 -extfile "$TLS_DIR/server.ext" -out "$TLS_DIR/server.pem"
} >>"$OUT/setup.log" 2>&1 || { tail -n 20 "$OUT/setup.log" >&2; die "openssl could not make the TLS certificates"; }
CACERT=(--cacert "$TLS_DIR/ca.pem")

read -r P_NGXS P_AUTHS P_ADMINS < <(free_ports 3)
# nginx 1.25.1 made "http2" a directive of its own; older ones take it on listen.
ngx_version=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
if [[ $(printf '%s\n' "$ngx_version" 1.25.1 | sort -V | head -n 1) == 1.25.1 ]]; then
    ngx_listen_h2='' ngx_http2="http2 on;"
else
    ngx_listen_h2=" http2" ngx_http2=''
fi
{
    nginx_common "$OUT/nginx-tls" "$SUT_CORES"
    cat <<EOF
    upstream up {
        server 127.0.0.1:$P_UP;
        keepalive 256;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$P_NGXS ssl$ngx_listen_h2;
        $ngx_http2
        ssl_certificate $TLS_DIR/server.pem;
        ssl_certificate_key $TLS_DIR/server.key;
        # What authgw accepts by default (min_version = "1.2"); nginx's
        # defaults otherwise (session tickets on, no session cache).
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$OUT/conf/nginx-tls.conf"

# authgw-tls: the config of d. on other ports, with [server.tls] and the
# public route "pub" (no token, no plugin) to the same upstream.
TLS_CONFIG=$OUT/conf/gateway-tls.toml
{
    sed -e "s/^listen = \"127.0.0.1:$P_AUTH\"$/listen = \"127.0.0.1:$P_AUTHS\"/" \
        -e "s/^listen = \"127.0.0.1:$P_ADMIN\"$/listen = \"127.0.0.1:$P_ADMINS\"/" "$CONFIG"
    cat <<EOF

[server.tls]
cert = "$TLS_DIR/server.pem"
key = "$TLS_DIR/server.key"

[[routes]]
name = "pub"
prefix = "/pub"
upstream = "$UPSTREAM"
auth = "public"
EOF
} >"$TLS_CONFIG"
grep -q "^listen = \"127.0.0.1:$P_AUTHS\"$" "$TLS_CONFIG" || die "cannot write $TLS_CONFIG"

step "starting nginx TLS (:$P_NGXS) and authgw TLS (:$P_AUTHS)"
start nginx-tls "$SUT_CPUS" nginx -p "$OUT/nginx-tls" -c "$OUT/conf/nginx-tls.conf" \
    -e "$OUT/nginx-tls.error.log" -g 'daemon off;'
start authgw-tls "$SUT_CPUS" env AUTHGW_CONFIG="$TLS_CONFIG" "$BIN" serve
wait_http nginx-tls "https://localhost:$P_NGXS/" "${CACERT[@]}"
wait_http authgw-tls "https://localhost:$P_AUTHS/healthz" "${CACERT[@]}"

declare -A TLS_URL=(
    [nginx]=${URL[nginx]}
    [authgw]=${URL[authgw]}
    [nginx-tls]=https://127.0.0.1:$P_NGXS/films/premium/1
    [authgw-tls]=https://127.0.0.1:$P_AUTHS/films/premium/1
    [authgw-tls-pub]=https://127.0.0.1:$P_AUTHS/pub/films/premium/1
)
# The processes whose CPU time is the system's.
declare -A PROC_OF=([nginx]=nginx-proxy [authgw]=authgw [nginx-tls]=nginx-tls [authgw-tls]=authgw-tls
    [authgw-tls-pub]=authgw-tls)
TLS_SYSTEMS=(nginx-tls authgw-tls authgw-tls-pub)
H1_SYSTEMS=(nginx authgw "${TLS_SYSTEMS[@]}")
# New connections: no token (openssl s_time sends a bare GET), so the two
# systems that proxy without auth.
HS_SYSTEMS=(nginx-tls authgw-tls-pub)

# Sanity: the certificate verifies, 200 "ok" with the token over HTTP/1.1 and
# h2, 401 without a token on the full path, 200 without one on "pub", and an
# HTTP/1.0 request without Host (what s_time sends) is proxied.
for sys_ in "${TLS_SYSTEMS[@]}"; do
    for v in --http1.1 --http2; do
        out=$(curl -s "${CACERT[@]}" "$v" -w '\n%{http_version}' -H "Authorization: Bearer $TOKEN" "${TLS_URL[$sys_]}") \
            || die "$sys_: no TLS answer at ${TLS_URL[$sys_]} (curl $v)"
        [[ ${out%$'\n'*} == ok ]] || die "$sys_ answered '${out%$'\n'*}' instead of 'ok' at ${TLS_URL[$sys_]} ($v)"
        want_v=1.1
        [[ $v == --http2 ]] && want_v=2
        [[ ${out##*$'\n'} == "$want_v" ]] || die "$sys_ spoke HTTP/${out##*$'\n'} to curl $v"
    done
done
s=$(status "${CACERT[@]}" "${TLS_URL[authgw-tls]}")
[[ $s == 401 ]] || die "authgw-tls let a request without a token through ($s)"
s=$(status "${CACERT[@]}" "${TLS_URL[authgw-tls-pub]}")
[[ $s == 200 ]] || die "authgw-tls answered $s on the public route without a token"
for sys_ in "${HS_SYSTEMS[@]}"; do
    hostport=${TLS_URL[$sys_]#https://}
    path=/${hostport#*/}
    hostport=${hostport%%/*}
    out=$(printf 'GET %s HTTP/1.0\r\n\r\n' "$path" | openssl s_client -quiet -connect "$hostport" 2>/dev/null) || true
    [[ $out == *$'\r\n\r\nok' ]] || die "$sys_ did not answer 'ok' to an HTTP/1.0 GET without Host (what s_time sends): ${out:0:200}"
done
step "TLS sanity checks passed: 200 over HTTP/1.1 and h2, 401 without a token, the public route open"

# resumes HOSTPORT PATH: "yes" when openssl s_client, given the session of a
# first connection, resumes it on a second one (what the resumed runs rely on).
resumes() {
    local sess=$TLS_DIR/session.pem out
    rm -f "$sess"
    printf 'GET %s HTTP/1.0\r\n\r\n' "$2" | openssl s_client -connect "$1" -ign_eof -sess_out "$sess" >/dev/null 2>&1 || true
    [[ -s $sess ]] || { echo no; return 0; }
    out=$(printf 'GET %s HTTP/1.0\r\n\r\n' "$2" | openssl s_client -connect "$1" -ign_eof -sess_in "$sess" 2>/dev/null) || true
    if [[ $out == *$'\nReused, '* ]]; then echo yes; else echo no; fi
}
RESUMES='{}'
for sys_ in "${HS_SYSTEMS[@]}"; do
    hostport=${TLS_URL[$sys_]#https://}
    path=/${hostport#*/}
    hostport=${hostport%%/*}
    RESUMES=$(jq -c --arg s "$sys_" --arg v "$(resumes "$hostport" "$path")" '. + {($s): $v}' <<<"$RESUMES")
done
step "TLS session resumption offered (s_client -sess_out, then -sess_in): $RESUMES"

# tls_record LABELS FIGURES_JSON: one line of results.jsonl, and a line on stderr.
tls_record() {
    printf '%s\n' "$2" | jq -c --argjson l "$1" '$l + .' >>"$OUT/results.jsonl"
    printf '%s\n' "$2" | jq -r --argjson l "$1" \
        '"    \($l.test) \($l.system): \(.rps|floor) req/s" +
         (if .p50_us then ", p50 \(.p50_us/1000) ms, p99 \(.p99_us/1000) ms" else "" end) +
         (if .mean_us then ", mean \(.mean_us/1000|.*100|floor/100) ms" else "" end) +
         ", SUT CPU \($l.sut_cpu_s / $l.wall_s * 100 | floor) %" +
         (if ((.non2xx // 0) + (.failed // 0) + (.errored // 0) + (.timeouts // 0) + (.connect_errors // 0)
              + (.read_errors // 0) + (.write_errors // 0)) > 0
          then ", ERRORS/non-2xx \((.non2xx // 0) + (.failed // 0) + (.errored // 0) + (.timeouts // 0) + (.connect_errors // 0) + (.read_errors // 0) + (.write_errors // 0))"
          else "" end)' >&2
}
# tls_run TEST SYSTEM ROUND COMMAND...: run COMMAND (output in OUT/raw/TEST-SYSTEM-ROUND.txt)
# measuring the wall time and the system's CPU time; sets RAW, WALL_S, LABELS.
tls_run() {
    local test=$1 sys_=$2 r=$3 t0 t1 c0 c1
    shift 3
    RAW=$OUT/raw/$test-$sys_-$r.txt
    c0=$(sut_ticks "${PROC_OF[$sys_]}")
    t0=$(now_s)
    "$@" >"$RAW" 2>&1 || { tail -n 20 "$RAW" >&2; die "$test on $sys_ failed (see $RAW)"; }
    t1=$(now_s)
    c1=$(sut_ticks "${PROC_OF[$sys_]}")
    WALL_S=$(jq -n "$t1 - $t0")
    LABELS=$(jq -cn --arg t "$test" --arg s "$sys_" --argjson r "$r" --argjson w "$WALL_S" \
        --argjson c "$(jq -n "($c1 - $c0) / $CLK_TCK")" '{test: $t, system: $s, round: $r, wall_s: $w, sut_cpu_s: $c}')
}
tls_wrk() {
    local sys_=$1 r=$2 line
    tls_run tls_h1 "$sys_" "$r" env BENCH_LUA_DIR="$BENCH" taskset -c "$LOAD_CPUS" wrk -t"$THREADS" -c"$CONNS" \
        -d"$DURATION" --latency -s "$BENCH/get.lua" -H "Authorization: Bearer $TOKEN" "${TLS_URL[$sys_]}"
    line=$(grep -m1 '^BENCH_JSON ' "$RAW") || { tail -n 20 "$RAW" >&2; die "no figures in $RAW (wrk failed?)"; }
    tls_record "$LABELS" "${line#BENCH_JSON }"
}
tls_h2() {
    local sys_=$1 r=$2 figures
    tls_run tls_h2 "$sys_" "$r" taskset -c "$LOAD_CPUS" h2load -t"$THREADS" -c"$CONNS" -m"$H2_STREAMS" \
        -D"$DURATION_S" -H "Authorization: Bearer $TOKEN" "${TLS_URL[$sys_]}"
    figures=$(python3 "$BENCH/tls.py" h2load "$RAW") || die "cannot read $RAW"
    [[ $(jq -r .alpn <<<"$figures") == h2 ]] || die "h2load did not speak h2 to $sys_ (see $RAW)"
    tls_record "$LABELS" "$figures"
}
# Full handshakes: HS_CLIENTS openssl s_time -new processes, each one
# connection at a time: connect, a full handshake (a new session each time,
# never a resumption), GET PATH HTTP/1.0, read the answer, close.
stime_all() {
    local hostport=$1 path=$2 raw=$3 i pids=() rc=0
    for ((i = 1; i <= HS_CLIENTS; i++)); do
        taskset -c "$LOAD_CPUS" openssl s_time -connect "$hostport" -new -time "$DURATION_S" -www "$path" \
            >"$raw.$i" 2>&1 &
        pids+=("$!")
    done
    for i in "${pids[@]}"; do wait "$i" || rc=1; done
    return "$rc"
}
tls_hs_full() {
    local sys_=$1 r=$2 hostport path figures i raws=()
    hostport=${TLS_URL[$sys_]#https://}
    path=/${hostport#*/}
    hostport=${hostport%%/*}
    tls_run tls_hs_full "$sys_" "$r" stime_all "$hostport" "$path" "$OUT/raw/tls_hs_full-$sys_-$r.txt"
    for ((i = 1; i <= HS_CLIENTS; i++)); do raws+=("$RAW.$i"); done
    figures=$(python3 "$BENCH/tls.py" stime "$WALL_S" "${raws[@]}") || die "cannot read $RAW.*"
    (($(jq .bytes_per_conn_min <<<"$figures") > 0)) || die "s_time read no answer from $sys_ (see $RAW.*)"
    tls_record "$LABELS" "$figures"
}
# Resumed handshakes: h2load over HTTP/1.1 with Connection: close; each client
# reconnects on the same SSL object and so resumes its session.
tls_hs_resumed() {
    local sys_=$1 r=$2 figures
    tls_run tls_hs_resumed "$sys_" "$r" taskset -c "$LOAD_CPUS" h2load --h1 -t"$THREADS" -c"$HS_CLIENTS" -m1 \
        -n"$HS_RESUMED" -H 'Connection: close' "${TLS_URL[$sys_]}"
    figures=$(python3 "$BENCH/tls.py" h2load "$RAW") || die "cannot read $RAW"
    tls_record "$LABELS" "$figures"
}

step "TLS warm-up: 2 s of wrk and of h2load on each TLS system"
for sys_ in "${TLS_SYSTEMS[@]}"; do
    BENCH_LUA_DIR=$BENCH taskset -c "$LOAD_CPUS" wrk -t"$THREADS" -c"$CONNS" -d2s -s "$BENCH/get.lua" \
        -H "Authorization: Bearer $TOKEN" "${TLS_URL[$sys_]}" >"$OUT/raw/warmup-$sys_.txt" 2>&1 \
        || die "wrk warm-up failed on $sys_ (see $OUT/raw/warmup-$sys_.txt)"
    taskset -c "$LOAD_CPUS" h2load -t"$THREADS" -c"$CONNS" -m"$H2_STREAMS" -D2 -H "Authorization: Bearer $TOKEN" \
        "${TLS_URL[$sys_]}" >"$OUT/raw/warmup-h2-$sys_.txt" 2>&1 \
        || die "h2load warm-up failed on $sys_ (see $OUT/raw/warmup-h2-$sys_.txt)"
done
for ((r = 1; r <= ROUNDS; r++)); do
    step "TLS round $r/$ROUNDS: HTTP/1.1 keep-alive (${H1_SYSTEMS[*]}), h2 (${TLS_SYSTEMS[*]}), new connections (${HS_SYSTEMS[*]}); $DURATION each"
    for sys_ in "${H1_SYSTEMS[@]}"; do tls_wrk "$sys_" "$r"; done
    for sys_ in "${TLS_SYSTEMS[@]}"; do tls_h2 "$sys_" "$r"; done
    for sys_ in "${HS_SYSTEMS[@]}"; do tls_hs_full "$sys_" "$r"; done
    for sys_ in "${HS_SYSTEMS[@]}"; do tls_hs_resumed "$sys_" "$r"; done
done
negotiated=$(sed -n 's/^TLS Protocol: //p; s/^Cipher: //p; s/^Server Temp Key: //p' \
    "$OUT/raw/tls_h2-authgw-tls-1.txt" | paste -sd ' ')
negotiated_ngx=$(sed -n 's/^TLS Protocol: //p; s/^Cipher: //p; s/^Server Temp Key: //p' \
    "$OUT/raw/tls_h2-nginx-tls-1.txt" | paste -sd ' ')
TLS_META=$(jq -cn --arg n "authgw $negotiated; nginx $negotiated_ngx" \
    --arg cert "EC P-256 (ECDSA), leaf only, signed by a P-256 CA" \
    --arg wrk "wrk -t$THREADS -c$CONNS -d$DURATION --latency (taskset -c $LOAD_CPUS)" \
    --arg h2 "h2load -t$THREADS -c$CONNS -m$H2_STREAMS -D$DURATION_S (taskset -c $LOAD_CPUS)" \
    --argjson hc "$HS_CLIENTS" --argjson resumes "$RESUMES" \
    --arg full "$HS_CLIENTS × openssl s_time -new -time $DURATION_S -www PATH (taskset -c $LOAD_CPUS)" \
    --arg res "h2load --h1 -c$HS_CLIENTS -m1 -n$HS_RESUMED -H 'Connection: close' (taskset -c $LOAD_CPUS)" \
    '{negotiated: $n, cert: $cert, wrk_args: $wrk, h2_args: $h2, hs_clients: $hc, hs_full_tool: $full,
      hs_resumed_tool: $res, resumes: $resumes}')
stop nginx-tls
stop authgw-tls

fi

# --- the auth API ------------------------------------------------------------
if want check; then
for ((r = 1; r <= ROUNDS; r++)); do
    step "GET /api/v1/auth/check round $r/$ROUNDS"
    wrk_run "check-$r" "{\"test\":\"check\",\"round\":$r}" get.lua "$API/api/v1/auth/check" \
        -H "Authorization: Bearer $TOKEN"
done

fi

# --- password reset: the answer takes as long whether or not the account -----
# exists (issue 15): a known login with an address (a message is queued after
# the answer, at most one per resend_interval), a known one without, an
# unknown one; alternated in each round, the same connections.
if want reset; then
api POST /api/v1/auth/signup "{\"login\":\"nomail\",\"password\":\"$USER_PASSWORD\"}" >/dev/null
declare -A RESET_BODY=([with-email]="{\"login\":\"$USER_LOGIN\"}" [no-email]='{"login":"nomail"}'
    [unknown]='{"login":"nobody-at-all"}')
for ((r = 1; r <= ROUNDS; r++)); do
    for kind in with-email no-email unknown; do
        step "POST /api/v1/auth/password-reset ($kind) round $r/$ROUNDS"
        export BENCH_RESET_BODY=${RESET_BODY[$kind]}
        wrk_run "reset-$kind-$r" "{\"test\":\"reset\",\"kind\":\"$kind\",\"round\":$r}" reset.lua "$API"
    done
done
unset BENCH_RESET_BODY

fi

if want login; then
step "one login at a time (1 connection, $DURATION)"
BENCH_LUA_DIR=$BENCH BENCH_LOGIN_BODY=$LOGIN_BODY taskset -c "$LOAD_CPUS" wrk -t1 -c1 -d"$DURATION" --latency \
    -s "$BENCH/login.lua" "$API" >"$OUT/raw/login1.txt" 2>&1 || die "wrk failed (see $OUT/raw/login1.txt)"
record '{"test":"login1"}' "$OUT/raw/login1.txt"
for ((r = 1; r <= ROUNDS; r++)); do
    step "login/s round $r/$ROUNDS ($LOGIN_CONNS connections)"
    BENCH_LUA_DIR=$BENCH BENCH_LOGIN_BODY=$LOGIN_BODY taskset -c "$LOAD_CPUS" wrk -t1 -c"$LOGIN_CONNS" \
        -d"$DURATION" --latency -s "$BENCH/login.lua" "$API" >"$OUT/raw/login-$r.txt" 2>&1 \
        || die "wrk failed (see $OUT/raw/login-$r.txt)"
    record "{\"test\":\"login\",\"round\":$r}" "$OUT/raw/login-$r.txt"
done

fi

if want refresh; then
# Refresh: authgw (wrk chaining refresh tokens) against pgbench running the
# same transaction with as many clients as authgw has pooled connections.
psql -X -w -q -v ON_ERROR_STOP=1 -d "$DB_URL" -c 'SELECT 1' >/dev/null || die "cannot connect to $DB"
for ((r = 1; r <= ROUNDS; r++)); do
    step "refresh/s round $r/$ROUNDS: authgw ($REFRESH_CONNS connections), then pgbench ($POOL_SIZE clients)"
    tokens_file=$OUT/raw/refresh-tokens-$r.txt
    : >"$tokens_file"
    # One token per connection, plus one per thread: wrk calls request() once
    # on the first thread to check the script, which takes a token.
    for ((i = 0; i < REFRESH_CONNS + THREADS; i++)); do
        login "$USER_LOGIN" "$USER_PASSWORD" | jq -r .refresh_token >>"$tokens_file"
    done
    BENCH_LUA_DIR=$BENCH BENCH_REFRESH_TOKENS=$tokens_file BENCH_WRK_THREADS=$THREADS \
        taskset -c "$LOAD_CPUS" wrk -t"$THREADS" -c"$REFRESH_CONNS" -d"$DURATION" --latency \
        -s "$BENCH/refresh.lua" "$API" >"$OUT/raw/refresh-$r.txt" 2>&1 \
        || die "wrk failed (see $OUT/raw/refresh-$r.txt)"
    record "{\"test\":\"refresh\",\"tool\":\"authgw\",\"round\":$r}" "$OUT/raw/refresh-$r.txt"

    # One chain per pgbench client, in sessions of the benchmark user.
    psql -X -w -q -v ON_ERROR_STOP=1 -d "$DB_URL" -v tag="$r" -v uid="$USER_ID" -v n="$POOL_SIZE" >/dev/null <<'SQL' \
        || die "cannot seed the pgbench refresh chains"
INSERT INTO refresh_tokens (user_id, session_id, token_hash, session_started_at, expires_at, user_agent, ip)
SELECT :'uid'::uuid, gen_random_uuid(), sha256(convert_to(format('%s-%s-%s', :tag, c, 0), 'UTF8')),
       now(), now() + interval '30 days', 'pgbench', '127.0.0.1'
  FROM generate_series(0, :n - 1) AS c;
SQL
    taskset -c "$LOAD_CPUS" pgbench -n -M extended -c "$POOL_SIZE" -j 1 -T "$DURATION_S" \
        -D tag="$r" -D n=0 -f "$BENCH/refresh.pgbench" "$DB_URL" >"$OUT/raw/pgbench-$r.txt" 2>&1 \
        || { tail -n 20 "$OUT/raw/pgbench-$r.txt" >&2; die "pgbench failed (see $OUT/raw/pgbench-$r.txt)"; }
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$OUT/raw/pgbench-$r.txt")
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$OUT/raw/pgbench-$r.txt")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$OUT/raw/pgbench-$r.txt")
    [[ -n $tps ]] || die "no tps in $OUT/raw/pgbench-$r.txt"
    # Every transaction must have consumed a token (the chain never broke).
    used=$(psql -X -w -At -d "$DB_URL" -c "SELECT count(*) FROM refresh_tokens WHERE user_agent = 'pgbench' AND used_at IS NOT NULL AND token_hash IN (SELECT sha256(convert_to(format('%s-%s-%s', $r, c, 0), 'UTF8')) FROM generate_series(0, $POOL_SIZE - 1) c)")
    [[ $used == "$POOL_SIZE" ]] || die "pgbench round $r: only $used of $POOL_SIZE chains started (see $OUT/raw/pgbench-$r.txt)"
    jq -cn --argjson r "$r" --argjson tps "$tps" --argjson lat "${lat:-null}" --argjson f "${failed:-0}" \
        '{test: "refresh", tool: "pgbench", round: $r, rps: $tps, latency_avg_ms: $lat, non2xx: $f}' \
        >>"$OUT/results.jsonl"
    printf '    pgbench: %s tps, latency average %s ms, failed %s\n' "$tps" "${lat:-?}" "${failed:-0}" >&2
done

fi

if want flood; then
# --- proxy p99 during a login flood ------------------------------------------
for ((r = 1; r <= ROUNDS; r++)); do
    step "login flood round $r/$ROUNDS: proxy baseline, then the proxy during $FLOOD_CONNS connections of logins"
    wrk_run "flood-baseline-$r" "{\"test\":\"flood\",\"phase\":\"baseline\",\"round\":$r}" get.lua \
        "${URL[authgw]}" -H "Authorization: Bearer $TOKEN"
    BENCH_LUA_DIR=$BENCH BENCH_LOGIN_BODY=$LOGIN_BODY taskset -c "$LOAD_CPUS" wrk -t1 -c"$FLOOD_CONNS" \
        -d$((DURATION_S + 2))s --latency -s "$BENCH/login.lua" "$API" >"$OUT/raw/flood-logins-$r.txt" 2>&1 &
    flood=$!
    PIDS+=("$flood")
    sleep 1
    wrk_run "flood-proxy-$r" "{\"test\":\"flood\",\"phase\":\"flood\",\"round\":$r}" get.lua \
        "${URL[authgw]}" -H "Authorization: Bearer $TOKEN"
    wait "$flood" || die "the login flood's wrk failed (see $OUT/raw/flood-logins-$r.txt)"
    forget "$flood"
    record "{\"test\":\"flood_login\",\"round\":$r}" "$OUT/raw/flood-logins-$r.txt"
done

fi

if want rss; then
# --- RSS with idle keep-alive connections ------------------------------------
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
step "RSS: a fresh authgw, a 2 s warm-up, then $IDLE_CONNS idle keep-alive connections"
stop authgw
start authgw "$SUT_CPUS" "$BIN" serve
wait_http authgw "$API/healthz"
apid=${PID_OF[authgw]}
sleep 1
rss_start=$(rss_kib "$apid")
BENCH_LUA_DIR=$BENCH taskset -c "$LOAD_CPUS" wrk -t"$THREADS" -c"$CONNS" -d2s -s "$BENCH/get.lua" \
    -H "Authorization: Bearer $TOKEN" "${URL[authgw]}" >"$OUT/raw/rss-warmup.txt" 2>&1 || die "wrk warm-up failed"
sleep 1
rss_warm=$(rss_kib "$apid")
coproc IDLE { exec taskset -c "$LOAD_CPUS" python3 "$BENCH/idle_conns.py" 127.0.0.1 "$P_AUTH" "$IDLE_CONNS" /films/premium/1 "$TOKEN" 2>"$OUT/raw/idle-conns.err"; }
PIDS+=("$IDLE_PID")
idle_pid=$IDLE_PID
read -r -t 600 word open served <&"${IDLE[0]}" || die "the idle-connection client failed (see $OUT/raw/idle-conns.err)"
[[ $word == ready ]] || die "the idle-connection client said '$word $open $served' (see $OUT/raw/idle-conns.err)"
sleep 2
rss_conns=$(rss_kib "$apid")
fds=$(find "/proc/$apid/fd" -mindepth 1 -maxdepth 1 | wc -l)
# The client prints "open N" every second: the connections the server has not closed.
open_now=$open
while read -r -t 5 line <&"${IDLE[0]}"; do
    if [[ $line == open* ]]; then
        open_now=${line#open }
        break
    fi
done
later=15
sleep "$later"
open_later=
while read -r -t 0.5 line <&"${IDLE[0]}"; do
    if [[ $line == open* ]]; then open_later=${line#open }; fi
done
rss_later=$(rss_kib "$apid")
eval "exec ${IDLE[1]}>&-"
wait "$idle_pid" 2>/dev/null || true
forget "$idle_pid"
jq -cn --argjson s "$rss_start" --argjson w "$rss_warm" --argjson c "$rss_conns" --argjson o "$open_now" \
    --argjson sv "$served" --argjson fds "$fds" --argjson ol "${open_later:-null}" --argjson rl "$rss_later" \
    --argjson later "$later" --argjson n "$IDLE_CONNS" \
    '{test: "rss", conns: $n, rss_kib_start: $s, rss_kib_warm: $w, rss_kib_conns: $c, open: $o, served: $sv,
      fds: $fds, open_later: $ol, rss_kib_later: $rl, later_s: $later}' >>"$OUT/results.jsonl"
printf '    RSS %s KiB at start, %s KiB warm, %s KiB with %s open connections (%s served, %s fds)\n' \
    "$rss_start" "$rss_warm" "$rss_conns" "$open_now" "$served" "$fds" >&2
printf '    %s KiB and %s connections still open %s s later\n' "$rss_later" "${open_later:-?}" "$later" >&2

fi

# --- summary -----------------------------------------------------------------
LOAD_AFTER=$(cut -d ' ' -f 1-3 /proc/loadavg)
# lock_version CRATE: its version in Cargo.lock (the bare proxy's hyper is authgw's).
lock_version() { awk -v n="$1" '$0 == "name = \"" n "\"" {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock; }
SYSCALL_META=null
if [[ $STRACE == 1 ]]; then
    SYSCALL_META=$(jq -cn --argjson n "$STRACE_REQUESTS" --argjson c "$STRACE_CONNS" \
        --arg tool "strace -c -f -p PID... (taskset -c $LOAD_CPUS), during wrk -t1 -c$STRACE_CONNS stopped after $STRACE_REQUESTS responses" \
        '{requests: $n, conns: $c, tool: $tool}')
fi
jq -n --arg started "$STARTED" --arg machine "$MACHINE" --arg lb "$LOAD_BEFORE" \
    --arg la "$LOAD_AFTER" --arg wrk_args "$WRK_ARGS" --argjson rounds "$ROUNDS" --arg sut "$SUT_CPUS" \
    --arg load "$LOAD_CPUS" --argjson cores "$SUT_CORES" --argjson argon "$ARGON2_MS" --arg argon_src "$ARGON2_SOURCE" \
    --argjson lc "$LOGIN_CONNS" --argjson rc "$REFRESH_CONNS" --argjson fc "$FLOOD_CONNS" --argjson pool "$POOL_SIZE" \
    --arg commit "$COMMIT" --arg nginx "$(nginx -v 2>&1 | sed 's/.*: //')" \
    --arg haproxy "$(haproxy -v 2>/dev/null | head -n 1 | cut -d ' ' -f 3)" --arg wrk "$(wrk -v 2>&1 | head -n 1 | cut -d ' ' -f 2)" \
    --arg h2load "$(h2load --version 2>/dev/null | sed -n 's/.*nghttp2\///p')" --arg openssl "$(openssl version)" \
    --argjson tls "${TLS_META:-null}" --argjson sc "$SYSCALL_META" --argjson tck "$CLK_TCK" \
    --arg strace "$(strace -V 2>/dev/null | head -n 1 | sed -n 's/.*version //p')" \
    --arg hyper "$(lock_version hyper)" --arg hyper_util "$(lock_version hyper-util)" \
    --arg pg "$(psql -X -w -At -d "$DB_URL" -c 'show server_version')" --arg rustc "$(rustc --version 2>/dev/null || echo '?')" \
    '{started: $started, machine: $machine, load_before: $lb, load_after: $la, wrk_args: $wrk_args,
      rounds: $rounds, sut_cpus: $sut, load_cpus: $load, sut_cores: $cores, argon2_verify_ms: $argon,
      argon2_source: $argon_src, login_conns: $lc, refresh_conns: $rc, flood_conns: $fc, pool_size: $pool,
      tls: $tls, syscalls: $sc, clk_tck: $tck,
      versions: {authgw: $commit, nginx: $nginx, haproxy: $haproxy, wrk: $wrk, h2load: $h2load, openssl: $openssl,
                 strace: $strace, hyper: $hyper, "hyper-util": $hyper_util,
                 postgresql: $pg, rustc: $rustc}}' \
    >"$OUT/meta.json"
step "load average: $LOAD_AFTER"
echo
jq -r '"versions: " + (.versions | to_entries | map("\(.key) \(.value)") | join(", ")) + "\nargon2id verify time from " + .argon2_source' "$OUT/meta.json"
echo
# (if, not &&: a part left out must not become the script's exit status.)
if [[ ,$ONLY, =~ ,(proxy|check|login|refresh|flood|rss), ]]; then
    python3 "$BENCH/summary.py" "$OUT"
    if want tls; then python3 "$BENCH/tls.py" summary "$OUT" --append; fi
    if want reset; then python3 "$BENCH/reset.py" "$OUT" --append; fi
elif want tls; then
    python3 "$BENCH/tls.py" summary "$OUT"
    if want reset; then python3 "$BENCH/reset.py" "$OUT" --append; fi
else
    python3 "$BENCH/reset.py" "$OUT"
fi
