#!/usr/bin/env bash
# Benchmarks (criterion), each reported against a peer measured in the same run:
#   verify/issue: EdDSA against ES256 and RS256;
#   check_path:   the revocation-set lookup added to a verification;
#   http:         GET /api/v1/auth/check against GET /healthz on one server;
#   argon2id:     hash and verify with the OWASP parameters.
# No database is needed. Extra arguments go to criterion (e.g. a filter: verify).
#
#   scripts/bench.sh [filter]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
cargo bench --bench hot_path -- --noplot "$@" 2>&1 | tee target/bench.txt
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
for group, items in groups.items():
    peers = ("GET _healthz", "EdDSA", "verify only", "verify")
    base_name, base = next((i for p in peers for i in items if i[0] == p), items[0])
    print(f"{group}:")
    for name, ns in items:
        print(f"  {name:45s} {fmt(ns):>10s}   x{ns/base:.2f} vs {base_name}")
PY
