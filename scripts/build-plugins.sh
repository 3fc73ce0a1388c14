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
