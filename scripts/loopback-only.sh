#!/bin/sh
# Runs a command in a new network namespace that has nothing but loopback.
#
# The test suite starts a real Milvus server (PyPI `milvus`, 2.3.5) whose components listen on
# every interface whatever they are told; in this namespace "every interface" is just `lo`, so no
# test traffic can leave the machine. Without root, a user namespace maps us to root inside.
# Where namespaces are not allowed the command runs as it is, and the tests that need the
# server skip (or fail, when IMAGESEARCH_REQUIRE_MILVUS_SERVER=1, as in CI).
set -eu
if [ "$(id -u)" -eq 0 ]; then flags="--net"; else flags="--net --map-root-user"; fi
# shellcheck disable=SC2086 # flags is a list
if unshare $flags true 2>/dev/null; then
    exec unshare $flags sh -c 'ip link set lo up && exec "$@"' loopback-only "$@"
fi
echo "loopback-only.sh: cannot create a network namespace; running without one" >&2
exec "$@"
