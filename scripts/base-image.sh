#!/usr/bin/env bash
# Make the container image's base, Debian 12 with python3, without Docker Hub:
#
#   scripts/base-image.sh [TAG]        # default TAG: debian-python:bookworm
#
# mmdebstrap (Debian package) builds a minimal root file system from the Debian mirror
# into a tarball, and `docker import` turns it into an image on the daemon that
# DOCKER_HOST names (the default one otherwise). The tarball is kept under
# ${GAR_PROXY_BASE_CACHE:-~/.cache/gar-proxy/base-image}, keyed by the options below,
# and rebuilt when older than BASE_MAX_AGE_DAYS (7), so security updates arrive weekly
# while repeated runs (CI, tests) take seconds instead of the ~2 minutes of a build.
# Needs root, or an unprivileged user namespace (mmdebstrap's unshare mode).
set -euo pipefail

TAG=${1:-debian-python:bookworm}
SUITE=bookworm
CACHE=${GAR_PROXY_BASE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gar-proxy/base-image}
MAX_AGE_DAYS=${BASE_MAX_AGE_DAYS:-7}
# python3-venv: the image's build stage makes a venv; ca-certificates: HTTPS to Google.
# The merged-usr hook sets up merged /usr itself, which keeps usrmerge and the perl it
# pulls in (~50 MB) out. Docs, man pages and translations are never read in a container.
OPTIONS=(
    --variant=apt
    --include=python3,python3-venv,ca-certificates
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
)

command -v mmdebstrap >/dev/null || {
    echo "error: mmdebstrap not found (apt-get install mmdebstrap; scripts/test.sh does)" >&2
    exit 1
}

key=$(printf '%s\n' "$SUITE" "${OPTIONS[@]}" | sha256sum | cut -c1-16)
tarball="$CACHE/debian-python-$SUITE-$key.tar"
mkdir -p "$CACHE"
if [[ -s $tarball && -z $(find "$tarball" -mtime "+$MAX_AGE_DAYS") ]]; then
    echo "base image: cached $tarball"
else
    echo "base image: mmdebstrap $SUITE -> $tarball"
    partial="$tarball.$$.partial"
    trap 'rm -f "$partial"' EXIT
    mmdebstrap --quiet --format=tar "${OPTIONS[@]}" "$SUITE" "$partial"
    mv -f "$partial" "$tarball"  # atomic: a concurrent run never imports half a file
    trap - EXIT
fi

docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    "$tarball" "$TAG" >/dev/null
echo "base image: $TAG"
