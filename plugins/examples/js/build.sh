#!/usr/bin/env bash
# Builds my_plugin.wasm, a hookgate transform plugin component, from src/plugin.js.
# Installs the pinned tools (package.json, package-lock.json) into node_modules with `npm ci`
# first when node_modules came from another lockfile. Needs Node.js >= 20 and npm. Run from
# anywhere.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

for tool in node npm; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool is required" >&2; exit 1; }
done
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
    { echo "build.sh: Node.js >= 20 is required, found $(node --version)" >&2; exit 1; }

# node_modules/.build-sh-lock is the package-lock.json that node_modules was installed from.
if ! cmp -s package-lock.json node_modules/.build-sh-lock; then
    echo "build.sh: installing the pinned tools (npm ci)" >&2
    npm ci --no-audit --no-fund
    cp package-lock.json node_modules/.build-sh-lock
fi

rm -f my_plugin.wasm
npm run --silent build

# A component starts with the magic `\0asm` and the component layer's version bytes.
magic=$(head -c 8 my_plugin.wasm | od -An -tx1 | tr -d ' \n')
[[ "$magic" == "0061736d0d000100" ]] ||
    { echo "build.sh: my_plugin.wasm is not a WebAssembly component (starts $magic)" >&2; exit 1; }
echo "build.sh: built $(pwd)/my_plugin.wasm ($(wc -c <my_plugin.wasm) bytes)" >&2
