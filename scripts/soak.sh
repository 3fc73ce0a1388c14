#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The long robustness checks (issue 7) that do not belong in every CI run:
#
#   scripts/soak.sh [STEP...]      default: fuzz dbfault abuse
#
#   fuzz     every cargo-fuzz target in fuzz/ for SOAK_FUZZ_SECS each
#            (default 600); a crash fails the step and leaves its input in
#            fuzz/artifacts/<target>/ (turn it into a #[test], see fuzz/README.md)
#   dbfault  PostgreSQL (a private cluster this script starts, never the
#            system one) stopped in the middle of a mixed load, then started:
#            503s and no 500, no hang, recovery within 2 s, no refresh
#            rotation lost or applied twice (checked against the table)
#   abuse    slow and abusive clients: slowloris, SOAK_CONNS (default 10000)
#            concurrent connections, oversized headers and bodies (431, 413),
#            a login brute force from one IP (429, lockout)
#
# Each step prints its figures; a summary of all of them closes the run.
# Steps are functions named soak_<step>: add one by writing the function and
# naming it in ALL_STEPS.
#
# Environment: SOAK_FUZZ_SECS, SOAK_CONNS, SOAK_FUZZ_TARGETS (default: all),
# CARGO_TARGET_DIR (respected), AUTHGW_QA_VENV (unused here).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
# shellcheck source=lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"
# shellcheck source=lib/serve.sh
source "$ROOT/scripts/lib/serve.sh"

ALL_STEPS=(fuzz dbfault abuse)
FUZZ_SECS=${SOAK_FUZZ_SECS:-600}
CONNS=${SOAK_CONNS:-10000}
SOAK_PG_DIR=$ROOT/.data/soak
SOAK_PG_PORT=5440

step() { printf '\n==> %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
trap 'printf "error: scripts/soak.sh failed at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (https://rustup.rs) and retry"
command -v python3 >/dev/null 2>&1 || die "python3 not found (Debian: apt-get install python3)"
command -v curl >/dev/null 2>&1 || die "curl not found (Debian: apt-get install curl)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/authgw-soak.XXXXXX")
FIGURES=$WORK/figures.txt
: >"$FIGURES"
FAILED=()
cleanup() {
    authgw_qa_stop
    authgw_qa_drop_db
    printf 'work directory (logs): %s\n' "$WORK" >&2
}
trap cleanup EXIT

# figure LINE...: print and keep for the summary.
figure() { printf '%s\n' "$*" | tee -a "$FIGURES"; }

# --- fuzz ----------------------------------------------------------------------
soak_fuzz() {
    # cargo-fuzz needs nightly-only flags (-Z sanitizer); the one stable
    # toolchain here accepts them with RUSTC_BOOTSTRAP=1.
    export RUSTC_BOOTSTRAP=1
    if ! cargo fuzz --version >/dev/null 2>&1; then
        step "cargo install cargo-fuzz --locked"
        cargo install cargo-fuzz --locked || die "cargo install cargo-fuzz failed"
    fi
    local targets target log runs secs status=0 artifacts
    read -r -a targets <<<"${SOAK_FUZZ_TARGETS:-$(cd fuzz && cargo fuzz list | tr '\n' ' ')}"
    # The instrumented build lives in fuzz/target whatever CARGO_TARGET_DIR
    # says: it shares nothing with the normal one and takes long to redo.
    step "cargo fuzz build -O (${targets[*]})"
    (cd fuzz && env -u CARGO_TARGET_DIR nice -n 10 cargo fuzz build -O) || die "cargo fuzz build failed"
    for target in "${targets[@]}"; do
        step "cargo fuzz run $target for ${FUZZ_SECS}s"
        log=$WORK/fuzz-$target.log
        artifacts=$ROOT/fuzz/artifacts/$target
        mkdir -p "$ROOT/fuzz/corpus/$target" "$artifacts"
        if (cd fuzz && env -u CARGO_TARGET_DIR -u AUTHGW_DATABASE_URL -u AUTHGW_LISTEN -u AUTHGW_KEYS_DIR -u AUTHGW_LOG \
            cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
            -max_total_time="$FUZZ_SECS" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
            -artifact_prefix="$artifacts/") >"$log" 2>&1; then
            runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log" | tail -n 1)
            secs=$(sed -nE 's/^Done [0-9]+ runs in ([0-9]+) second.*/\1/p' "$log" | tail -n 1)
            figure "fuzz $target: ${runs:-?} execs in ${secs:-?} s, no crash (corpus $(find "fuzz/corpus/$target" -type f | wc -l) inputs)"
        else
            status=1
            figure "fuzz $target: CRASH; input in $artifacts/ (log $log):"
            grep -E '^(==[0-9]+==|thread .* panicked|SUMMARY)' "$log" | head -n 5 | tee -a "$FIGURES" || true
        fi
    done
    unset RUSTC_BOOTSTRAP
    return "$status"
}

# --- dbfault -------------------------------------------------------------------
soak_dbfault() {
    local pg_url stop_cmd start_cmd status=0
    step "private PostgreSQL cluster under $SOAK_PG_DIR (never the system one)"
    authgw_find_pg_bin || return 1
    pg_url=$(AUTHGW_PG_PORT=$SOAK_PG_PORT authgw_private_cluster "$SOAK_PG_DIR") \
        || die "could not start the private PostgreSQL cluster under $SOAK_PG_DIR"
    [[ $pg_url == *"host="* ]] || die "the soak cluster must be on a unix socket, got $pg_url"
    # Limits raised: a dozen sessions from one IP. Default database settings
    # (pool 16, connect_timeout 5s): those are the ones under test.
    authgw_qa_start "$WORK/dbfault" "$pg_url" '
[limits]
auth_per_minute = 1000000
auth_burst = 1000000
[passwords]
memory_kib = 1024
iterations = 1
' || die "could not start authgw for the database fault"
    stop_cmd="source '$ROOT/scripts/lib/pg.sh' && authgw_private_cluster_stop '$SOAK_PG_DIR'"
    start_cmd="source '$ROOT/scripts/lib/pg.sh' && AUTHGW_PG_PORT=$SOAK_PG_PORT authgw_private_cluster '$SOAK_PG_DIR'"
    step "database fault: stop PostgreSQL under a mixed load, start it again"
    PSQL=$AUTHGW_PSQL python3 "$ROOT/scripts/qa/dbfault.py" "$AUTHGW_QA_BASE" "$AUTHGW_QA_DB_URL" \
        --stop-cmd "$stop_cmd" --start-cmd "$start_cmd" --timeout 5 \
        | tee "$WORK/dbfault.txt" || status=1
    grep -E '^(outage|500s|slowest|recovery|refresh rotations|db fault)' "$WORK/dbfault.txt" \
        | sed 's/^/dbfault /' >>"$FIGURES" || true
    # More steps against the same fault go here (the edge proxy keeps
    # serving valid tokens while the database is down: issue 7, proxy half).
    authgw_qa_stop
    authgw_qa_drop_db
    authgw_private_cluster_stop "$SOAK_PG_DIR" || true
    return "$status"
}

# --- abuse ---------------------------------------------------------------------
soak_abuse() {
    local status=0 check admin_url
    # Two fds per connection and side: the client and the server each need
    # CONNS plus headroom. Root may raise the hard limit.
    if (($(ulimit -n) < CONNS + 1000)); then
        ulimit -Hn $((CONNS * 2 + 1000)) 2>/dev/null || true
        ulimit -n $((CONNS * 2 + 1000)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    fi
    (($(ulimit -n) >= CONNS + 1000)) || die "ulimit -n is $(ulimit -n); $CONNS connections need $((CONNS + 1000)) (run as root or raise the hard limit)"
    admin_url=$(authgw_test_admin_url "$ROOT") || die "no PostgreSQL for the test database"
    # Default limits (the brute force is under test), a short lock to wait out.
    authgw_qa_start "$WORK/abuse" "$admin_url" '
[limits]
lockout_base = "2s"
lockout_max = "4s"
' || die "could not start authgw for the abuse checks"
    step "slow and abusive clients (ulimit -n $(ulimit -n))"
    for check in bruteforce oversize slowloris connections; do
        step "abuse: $check"
        PSQL=$AUTHGW_PSQL python3 "$ROOT/scripts/qa/abuse.py" "$AUTHGW_QA_BASE" "$AUTHGW_QA_DB_URL" "$check" \
            --conns "$([[ $check == connections ]] && echo "$CONNS" || echo 500)" \
            --header-timeout 10 --burst 20 --threshold 5 \
            | tee "$WORK/abuse-$check.txt" || status=1
        sed 's/^/abuse /' "$WORK/abuse-$check.txt" >>"$FIGURES"
    done
    authgw_qa_stop
    authgw_qa_drop_db
    return "$status"
}

# --- run -----------------------------------------------------------------------
STEPS=("$@")
((${#STEPS[@]})) || STEPS=("${ALL_STEPS[@]}")
for s in "${STEPS[@]}"; do
    declare -F "soak_$s" >/dev/null || die "unknown step '$s' (steps: ${ALL_STEPS[*]})"
done
authgw_qa_build "$ROOT" || exit 1
for s in "${STEPS[@]}"; do
    step "soak step: $s"
    "soak_$s" || FAILED+=("$s")
done

step "figures"
cat "$FIGURES" >&2
if ((${#FAILED[@]})); then
    die "soak failed: ${FAILED[*]}"
fi
step "soak passed: ${STEPS[*]}"
