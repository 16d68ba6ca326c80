#!/usr/bin/env bash
# Install everything the tests need and run them: ruff (lint, format), mypy, pytest.
#
#   scripts/test.sh                 # whole suite
#   scripts/test.sh -m "not realclient" -x   # extra arguments go to pytest
#
# Idempotent; meant for Debian 12 (bookworm) as root, as in CI. As another user it uses
# sudo only when a system package is missing. The real clients the tests drive
# (dockerd, docker-registry, skopeo, podman) come from Debian; the tests start their own
# private instances, so no system service is started or needed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
VENV="$REPO/.venv"
# chromium and chromedriver drive the status-page test, promtool checks the alert rules,
# mmdebstrap makes the container image's base (scripts/base-image.sh).
# nginx and haproxy front the ring of replicas in tests/test_ring.py (deploy/ring/).
# containerd (a docker.io dependency, named as tests/test_doctor.py runs its own).
SYSTEM_BINARIES=(dockerd docker docker-registry skopeo podman chromium chromedriver promtool mmdebstrap systemd-analyze nginx haproxy containerd ctr)
SYSTEM_PACKAGES=(docker.io docker-registry skopeo podman chromium chromium-driver prometheus mmdebstrap systemd nginx haproxy containerd)

SCRIPT_START=$SECONDS
PHASE_START=$SECONDS
PHASE=""

section() {
    PHASE="$1"
    PHASE_START=$SECONDS
    printf '\n==== [%s] %s\n' "$(date +%H:%M:%S)" "$PHASE"
}

section_done() {
    printf -- '---- %s: %s (%ss)\n' "$PHASE" "$1" "$((SECONDS - PHASE_START))"
}

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo "$@"
    else
        echo "error: need root (or passwordless sudo) to run: $*" >&2
        return 1
    fi
}

missing_binaries() {
    local name
    for name in "${SYSTEM_BINARIES[@]}"; do
        command -v "$name" >/dev/null || echo "$name"
    done
}

python_has_venv() {
    command -v python3 >/dev/null && python3 -c 'import ensurepip, venv' 2>/dev/null
}

POLICY_RC=/usr/sbin/policy-rc.d
CREATED_POLICY_RC=""

remove_policy_rc() {
    if [[ -n $CREATED_POLICY_RC ]]; then
        as_root rm -f "$POLICY_RC"
        CREATED_POLICY_RC=""
    fi
}
trap remove_policy_rc EXIT

install_system_packages() {
    section "system packages"
    local packages=() missing
    missing=$(missing_binaries)
    [[ -n $missing ]] && packages+=("${SYSTEM_PACKAGES[@]}")
    python_has_venv || packages+=(python3 python3-venv)
    if [[ ${#packages[@]} -eq 0 ]]; then
        section_done "already installed"
        return
    fi
    [[ -n $missing ]] && echo "missing: $(echo "$missing" | tr '\n' ' ')"
    # docker.io and docker-registry start system services from their postinst; the
    # registry would take port 5000 (the proxy's). policy-rc.d stops that.
    if [[ ! -e $POLICY_RC ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' >$POLICY_RC && chmod 755 $POLICY_RC"
        CREATED_POLICY_RC=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${packages[@]}"
    remove_policy_rc
    missing=$(missing_binaries)
    if [[ -n $missing ]]; then
        echo "error: still missing after install: $missing" >&2
        exit 1
    fi
    section_done "installed ${packages[*]}"
}

print_versions() {
    section "versions"
    python3 --version
    dockerd --version
    docker --version
    docker-registry --version
    skopeo --version
    podman --version
    mmdebstrap --version
    section_done "ok"
}

install_python_env() {
    section "python environment ($VENV)"
    local stamp="$VENV/.gar-proxy-installed" want
    if [[ ! -x $VENV/bin/python ]]; then
        python3 -m venv --clear "$VENV"
    fi
    # Reinstall only when the dependencies may have changed.
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
        section_done "up to date"
        return
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
    echo "$want" >"$stamp"
    section_done "installed"
}

FAILED=()

check() {
    section "$1"
    shift
    local status=0
    "$@" || status=$?
    if [[ $status -eq 0 ]]; then
        section_done "ok"
    else
        section_done "FAILED (exit $status)"
        FAILED+=("$PHASE")
    fi
}

install_system_packages
print_versions
install_python_env
export PATH="$VENV/bin:$PATH"

# All three run even when one fails, so one CI run shows every problem.
check "ruff" ruff check proxy testkit tests bench deploy
check "ruff format" ruff format --check proxy testkit tests bench deploy
check "mypy" mypy
# pytest's exit 5 ("no tests collected") counts as a failure like any other.
check "pytest" pytest "$@"

printf '\n==== total %ss\n' "$((SECONDS - SCRIPT_START))"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    echo "FAILED: ${FAILED[*]}"
    exit 1
fi
echo "all passed"
