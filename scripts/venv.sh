#!/usr/bin/env bash
# Makes a virtualenv from the locks: scripts/venv.sh VENV [--project] REQUIREMENTS...
#
# Creates VENV if it is missing and installs each REQUIREMENTS file in turn, every package
# hash-checked against the lock, nothing resolved on the day. With --project,
# requirements/build.txt (pip, setuptools, wheel) comes first and the project itself last,
# editable, without build isolation and without dependencies (all of them came from the
# lock). What is already installed is kept, so a test environment made over a runtime one only
# adds what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$1
shift
project=false
if [[ ${1:-} == --project ]]; then
    project=true
    shift
fi
pip() {
    # pip's "Location" warnings are about this machine's local package mirrors, not us.
    "$venv/bin/python" -m pip --disable-pip-version-check "$@" 2>&1 \
        | { grep -v "^WARNING: Location" || true; }
}
[[ -x $venv/bin/python ]] || "${PYTHON:-python3}" -m venv "$venv"
if $project; then
    set -- requirements/build.txt "$@"
fi
for requirements in "$@"; do
    pip install --quiet --require-hashes -r "$requirements"
done
if $project; then
    pip install --quiet --no-deps --no-build-isolation -e .
fi
