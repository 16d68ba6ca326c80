#!/usr/bin/env bash
# Build gar-proxy's container image; the build itself downloads nothing:
#
#   scripts/build-image.sh [TAG]                 # default TAG: gar-proxy:latest
#   BASE_IMAGE=my-debian12-python scripts/build-image.sh
#
# 1. the base image: BASE_IMAGE if set, else scripts/base-image.sh makes
#    debian-python:bookworm (Docker Hub is not needed, nor used);
# 2. the wheelhouse, on the host: gar-proxy's wheel and every dependency as a wheel for
#    the base's Python (3.11) and C library (glibc 2.36), whatever the host runs;
# 3. docker build --network=none, installing from the wheelhouse only.
# The daemon is DOCKER_HOST's, as for any docker command.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
TAG=${1:-gar-proxy:latest}
PYTHON=${PYTHON:-python3}
TARGET_PYTHON=3.11
TARGET_ABI=cp311
ARCH=$(uname -m)
# pip matches --platform literally: every manylinux tag up to bookworm's glibc 2.36.
PLATFORMS=(--platform "manylinux1_$ARCH" --platform "manylinux2010_$ARCH" --platform "manylinux2014_$ARCH")
for minor in $(seq 5 36); do PLATFORMS+=(--platform "manylinux_2_${minor}_$ARCH"); done
WHEELHOUSE=build/wheelhouse

if [[ -z ${BASE_IMAGE:-} ]]; then
    BASE_IMAGE=debian-python:bookworm
    scripts/base-image.sh "$BASE_IMAGE"
fi

echo "wheelhouse: $WHEELHOUSE"
rm -rf "$WHEELHOUSE"
mkdir -p "$WHEELHOUSE"
source_copy=$(mktemp -d)
trap 'rm -rf "$source_copy"' EXIT
# A clean copy: setuptools' in-tree build/lib keeps modules deleted since the last
# build and would put them in the wheel.
cp -r pyproject.toml README.md proxy "$source_copy/"
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps \
    --wheel-dir "$WHEELHOUSE" "$source_copy"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --dest "$WHEELHOUSE" \
    --only-binary=:all: --implementation cp --python-version "$TARGET_PYTHON" \
    --abi "$TARGET_ABI" "${PLATFORMS[@]}" "$WHEELHOUSE"/gar_proxy-*.whl

# BuildKit, where this machine has it: the classic builder makes a container per
# instruction, which on a vfs-backed daemon (as in the tests) copies the whole root
# file system each time: 270 s against BuildKit's 60 s for this file. BuildKit comes
# with buildx, or built into CLIs before 23 (Debian 12's docker.io) with DOCKER_BUILDKIT=1.
pick_builder() {
    local cli major
    for cli in ${DOCKER:-} docker /usr/bin/docker; do
        command -v "$cli" >/dev/null || continue
        if "$cli" buildx version >/dev/null 2>&1; then
            DOCKER=$cli BUILDKIT=1 && return
        fi
        major=$("$cli" --version | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')
        if [[ -n $major && $major -lt 23 ]]; then
            DOCKER=$cli BUILDKIT=1 && return
        fi
    done
    DOCKER=docker BUILDKIT=0
    echo "note: no BuildKit here (install docker-buildx); the classic builder is slower"
}
pick_builder
DOCKER_BUILDKIT=$BUILDKIT "$DOCKER" build --network=none \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --tag "$TAG" .
echo "image: $TAG"
