#!/usr/bin/env bash
# Builds my_plugin.wasm, the component hookgate loads, in this folder.
set -euo pipefail
cd "$(dirname "$0")"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
cargo build --release --locked --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/my_plugin.wasm" my_plugin.wasm
echo "built $(pwd)/my_plugin.wasm"
