#!/usr/bin/env bash
# What deploy/docker/Dockerfile's embedder-cpu stage does, into .venv-image: the image's locked
# requirements (requirements/embedder-cpu.txt, hash-checked), then the project's wheel without
# dependencies (no Docker engine here). tests/deploy runs the image's ENTRYPOINT and
# HEALTHCHECK from it. Needs the package registry, so it runs before the tests, outside their
# loopback-only network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-image
WHEELS=build/image-wheel
# Made afresh when the lock changes, so nothing the image would not have lingers.
STAMP="$VENV/.deps-$(cat requirements/build.txt requirements/embedder-cpu.txt | sha1sum | cut -c1-12)"
[[ -f $STAMP ]] || rm -rf "$VENV"
rm -rf "$WHEELS"
[[ -f $STAMP ]] || scripts/venv.sh "$VENV" requirements/build.txt requirements/embedder-cpu.txt
touch "$STAMP"
"$VENV/bin/python" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$WHEELS" . \
    2>&1 | { grep -v "^WARNING: Location" || true; }
# The same version number as last time: pip would keep the old build without --force.
"$VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps "$WHEELS"/imagesearch-*.whl
