#!/usr/bin/env bash
# Builds the cargohold image from this working tree without network access inside the build:
# wheels of the tree and of every dependency go into deploy/wheels first (on this machine, which
# reaches the package index), then `docker build` installs from those alone.
#   IMAGE   the tag to build (cargohold:dev)
#   BASE    the base image (the Dockerfile's default, python:3.11-slim-bookworm, when unset);
#           its Python must match this machine's for the wheels to fit (CPython 3.11, x86_64 glibc)
#   PYTHON  the interpreter whose pip makes the wheels (python3)
# Further arguments go to `docker build` (e.g. --network none, to prove the build needs none).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
image=${IMAGE:-cargohold:dev}
rm -f deploy/wheels/cargohold-*.whl
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir deploy/wheels .
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
args=(-f deploy/Dockerfile -t "$image" --build-arg "REVISION=$revision")
if [ -n "${BASE:-}" ]; then
  args+=(--build-arg "BASE=$BASE")
fi
exec docker build "${args[@]}" "$@" .
