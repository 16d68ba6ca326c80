#!/usr/bin/env bash
# Install gar-proxy into .venv and run it on its embedded defaults:
# 127.0.0.1:5000, cache in ~/.cache/gar-proxy, Google credentials from the environment.
#
#   scripts/run.sh                      # serve
#   scripts/run.sh --offline serve      # any gar-proxy arguments (default: serve)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    if [[ $EUID -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv
    else
        sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv
    fi
fi
[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check .
[[ $# -gt 0 ]] || set -- serve
exec .venv/bin/gar-proxy "$@"
