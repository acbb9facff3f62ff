#!/bin/sh
# buf breaking for the protos: against main from any other branch; on main itself against
# the previous commit, so the change that is landing is the one checked. A clone too shallow
# to have that commit is told so instead of passing silently.
set -eu
BUF=${BUF:-buf}
branch=$(git rev-parse --abbrev-ref HEAD)
if [ "$branch" != "main" ] && git rev-parse --verify --quiet main >/dev/null; then
    against="main"
elif git rev-parse --verify --quiet HEAD~1 >/dev/null; then
    against="HEAD~1"
else
    echo "buf_breaking.sh: no earlier commit to compare with (shallow clone?)" >&2
    exit 1
fi
# Before protos/buf.yaml existed there is no module to compare with.
if ! git cat-file -e "$against:protos/buf.yaml" 2>/dev/null; then
    echo "buf breaking: $against has no protos/buf.yaml yet; nothing to compare"
    exit 0
fi
echo "buf breaking against $against"
exec "$BUF" breaking protos --against ".git#ref=$against,subdir=protos"
