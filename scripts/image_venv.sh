#!/usr/bin/env bash
# What deploy/docker/Dockerfile's embedder-cpu stage does, into .venv-image: the project's
# wheel installed with the tested constraints (no Docker engine here). tests/deploy runs the
# image's ENTRYPOINT and HEALTHCHECK from it. Needs the package registry, so it runs before
# the tests, outside their loopback-only network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-image
WHEELS=build/image-wheel
# Made afresh when the dependencies change, so nothing the image would not have lingers.
STAMP="$VENV/.deps-$(cat pyproject.toml deploy/docker/constraints.txt | sha1sum | cut -c1-12)"
[[ -f $STAMP ]] || rm -rf "$VENV"
rm -rf "$WHEELS"
[[ -x $VENV/bin/pip ]] || python3 -m venv "$VENV"
"$VENV/bin/pip" wheel --quiet --no-deps --wheel-dir "$WHEELS" . 2>&1 \
    | { grep -v "^WARNING: Location" || true; }
wheel=$(ls "$WHEELS"/imagesearch-*.whl)
"$VENV/bin/pip" install --quiet --constraint deploy/docker/constraints.txt "$wheel[cpu]" 2>&1 \
    | { grep -v "^WARNING: Location" || true; }
# The same version number as last time: pip would keep the old build without --force.
"$VENV/bin/pip" install --quiet --force-reinstall --no-deps "$wheel"
touch "$STAMP"
