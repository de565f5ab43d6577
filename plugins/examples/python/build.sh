#!/usr/bin/env bash
# Builds my_plugin.wasm, a hookgate transform plugin component, from src/plugin.py.
# Installs requirements.txt (the pinned componentize-py, and any pure-Python packages the plugin
# imports) into .venv first when .venv was made from another one. Needs Python >= 3.9 with the
# venv module. Run from anywhere.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "build.sh: $python is required" >&2; exit 1; }

# .venv/.build-sh-requirements is the requirements.txt that .venv was made from.
if ! cmp -s requirements.txt .venv/.build-sh-requirements ||
    [[ ! -x .venv/bin/componentize-py ]]; then
    echo "build.sh: installing requirements.txt into a new .venv" >&2
    rm -rf .venv
    "$python" -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check --no-input -r requirements.txt
    cp requirements.txt .venv/.build-sh-requirements
fi

# Pure-Python packages listed in requirements.txt are bundled from .venv when imported.
export VIRTUAL_ENV="$PWD/.venv"
rm -f my_plugin.wasm
# --stub-wasi: hookgate links no WASI, and CPython calls WASI on every call (first
# wasi:cli/environment); the stubs, inside the component, take those calls (see README.md).
.venv/bin/componentize-py --wit-path wit --world transformer --quiet \
    componentize --python-path src --stub-wasi --output my_plugin.wasm plugin

# A component starts with the magic `\0asm` and the component layer's version bytes.
magic=$(head -c 8 my_plugin.wasm | od -An -tx1 | tr -d ' \n')
[[ "$magic" == "0061736d0d000100" ]] ||
    { echo "build.sh: my_plugin.wasm is not a WebAssembly component (starts $magic)" >&2; exit 1; }
echo "build.sh: built $(pwd)/my_plugin.wasm ($(wc -c <my_plugin.wasm) bytes)" >&2
