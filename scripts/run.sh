#!/usr/bin/env bash
# Install gar-proxy into .venv and run it on its embedded defaults:
# 127.0.0.1:5000, cache in ~/.cache/gar-proxy, Google credentials from the environment.
#
#   scripts/run.sh                      # serve
#   scripts/run.sh --offline serve      # any gar-proxy arguments (default: serve)
#
# The install is editable (as scripts/test.sh's, which shares .venv), so source changes
# need none: it installs only when pyproject.toml changed since the last install (a
# stamp in .venv records its hash), and a restart starts at once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python_ok() {
    command -v python3 >/dev/null && python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'
}

if ! python_ok; then
    found=$(python3 --version 2>/dev/null || echo "no python3")
    cat >&2 <<MSG
error: gar-proxy needs Python 3.11 or newer; this machine has: $found.
  Debian 12 / Ubuntu 24.04:  apt-get install python3 python3-venv   (3.11 / 3.12)
  Older systems:             install python3.11+ (e.g. pyenv, deadsnakes, uv python install 3.12),
                             put it first on PATH as python3, then run this script again.
MSG
    exit 1
fi
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    if [[ $EUID -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
    else
        sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
    fi
fi
[[ -x .venv/bin/python ]] || python3 -m venv .venv
STAMP=.venv/.gar-proxy-run-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -x .venv/bin/gar-proxy || "$(cat "$STAMP" 2>/dev/null)" != "$want" ]]; then
    echo "installing gar-proxy into .venv ..." >&2
    # Editable: a plain install here would leave scripts/test.sh's tests (same .venv,
    # its own stamp) running a stale copy of the sources in their proxy subprocesses.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
    echo "$want" >"$STAMP"
fi
[[ $# -gt 0 ]] || set -- serve
exec .venv/bin/gar-proxy "$@"
