#!/usr/bin/env bash
# Builds every policy plugin of the plugins/ workspace (release,
# wasm32-wasip2) into plugins/dist/<name>.wasm, adding the rustup target when
# it is missing. Idempotent: cargo rebuilds only what changed, and a .wasm
# is copied only when its bytes differ, so dist/ mtimes stay put.
#
#   scripts/build-plugins.sh
#
# Environment: PLUGINS_TARGET_DIR (default plugins/target).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
PLUGINS=$ROOT/plugins
TARGET=wasm32-wasip2
TARGET_DIR=${PLUGINS_TARGET_DIR:-$PLUGINS/target}
DIST=$PLUGINS/dist

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (https://rustup.rs)"
if ! rustc --print target-libdir --target "$TARGET" 2>/dev/null | xargs -I{} test -d {}; then
    command -v rustup >/dev/null 2>&1 || die "the $TARGET target is missing and rustup is not found"
    printf '==> rustup target add %s\n' "$TARGET" >&2
    rustup target add "$TARGET" || die "rustup target add $TARGET failed"
fi

cd "$PLUGINS"
cargo build --quiet --release --target "$TARGET" --target-dir "$TARGET_DIR" --workspace \
    || die "cargo build of the plugins failed"

mkdir -p "$DIST"
# Every workspace member: its package name is the plugin name.
for manifest in */Cargo.toml fixtures/*/Cargo.toml; do
    name=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | head -n 1)
    [[ -n $name ]] || die "$manifest: no package name"
    built=$TARGET_DIR/$TARGET/release/${name//-/_}.wasm
    [[ -f $built ]] || die "$manifest: cargo built no $built"
    if ! cmp -s "$built" "$DIST/$name.wasm"; then
        cp "$built" "$DIST/$name.wasm.tmp"
        mv "$DIST/$name.wasm.tmp" "$DIST/$name.wasm"
        printf 'built plugins/dist/%s.wasm\n' "$name" >&2
    fi
done

# --- Python components: the example (plugins/examples/python) and a fixture
# componentize-py, pinned, in a venv of its own under the plugins' target
# directory (installed from PyPI the first time). Each is rebuilt when its
# app.py or the WIT is newer than the component.
COMPONENTIZE_PY=0.25.1
PY_VENV=$TARGET_DIR/componentize-py-$COMPONENTIZE_PY
build_python() { # SOURCE_DIR NAME
    local src=$1 out=$DIST/$2.wasm
    [[ ! -f $out || $src/app.py -nt $out || $PLUGINS/wit/policy.wit -nt $out ]] || return 0
    if [[ ! -x $PY_VENV/bin/componentize-py ]]; then
        command -v python3 >/dev/null 2>&1 || die "python3 not found; it builds the Python plugins"
        printf '==> componentize-py %s into %s\n' "$COMPONENTIZE_PY" "$PY_VENV" >&2
        python3 -m venv "$PY_VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
        "$PY_VENV/bin/pip" install --quiet "componentize-py==$COMPONENTIZE_PY" \
            || die "pip install componentize-py==$COMPONENTIZE_PY failed"
    fi
    (cd "$src" && "$PY_VENV/bin/componentize-py" -d "$PLUGINS/wit" -w plugin \
        componentize app -o "$out.tmp" >/dev/null) \
        || die "componentize-py failed on $src/app.py"
    mv "$out.tmp" "$out"
    printf 'built plugins/dist/%s.wasm\n' "$2" >&2
}
build_python "$PLUGINS/examples/python" premium-gate-py
build_python "$PLUGINS/fixtures/python-trap" python-trap

# --- the JavaScript example (plugins/examples/js) ----------------------------
# componentize-js, pinned by package-lock.json (npm ci the first time), called
# directly: jco 1.35's `componentize` fails with "failed to get path
# metadata". `-d http fetch-event` leaves out the WASI features the host does
# not offer. Rebuilt when policy.js, the lock or the WIT is newer.
JS_SRC=$PLUGINS/examples/js
JS_OUT=$DIST/premium-gate-js.wasm
if [[ ! -f $JS_OUT || $JS_SRC/policy.js -nt $JS_OUT || $JS_SRC/package-lock.json -nt $JS_OUT \
    || $PLUGINS/wit/policy.wit -nt $JS_OUT ]]; then
    command -v npm >/dev/null 2>&1 || die "npm not found; it builds the JavaScript example plugin (Debian: apt-get install npm)"
    if [[ ! -x $JS_SRC/node_modules/.bin/componentize-js ]]; then
        printf '==> npm ci in plugins/examples/js (componentize-js)\n' >&2
        (cd "$JS_SRC" && npm ci --silent --no-audit --no-fund) || die "npm ci in plugins/examples/js failed"
    fi
    (cd "$JS_SRC" && node_modules/.bin/componentize-js policy.js --wit "$PLUGINS/wit" --world-name plugin \
        -d http fetch-event -o "$JS_OUT.tmp" >/dev/null) \
        || die "componentize-js failed on plugins/examples/js/policy.js"
    mv "$JS_OUT.tmp" "$JS_OUT"
    printf 'built plugins/dist/premium-gate-js.wasm\n' >&2
fi
