#!/usr/bin/env bash
# Pins every image an overlay deploys to a digest, for a release. Renders the overlay and
# writes it to stdout with each `image: NAME:TAG` as `NAME:TAG@sha256:...` (Kubernetes pulls
# by the digest; the tag stays for people), Milvus' image in the operator's resource included.
# Apply that file, or commit it as the release, instead of `kubectl apply -k`.
#
#   scripts/pin_digests.sh --list OVERLAY             the images, one per line
#   scripts/pin_digests.sh --map FILE OVERLAY > x.yaml digests from FILE only (offline)
#   scripts/pin_digests.sh OVERLAY > x.yaml           digests from the registries
#
# FILE has one "IMAGE DIGEST" per line ('#' starts a comment), e.g. written by the CI that
# pushed the images, or for an air-gapped mirror. Without it, `crane digest` is used, or else
# `docker buildx imagetools inspect`. Fails, naming the image, on any it cannot resolve.
set -euo pipefail

usage() {
    sed -n '2,15s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

map="" list=0
while [[ $# -gt 1 ]]; do
    case $1 in
        --map) map=$2; shift 2 ;;
        --list) list=1; shift ;;
        *) usage ;;
    esac
done
[[ $# -eq 1 ]] || usage
overlay=$1

digest_of() {
    local image=$1 found
    if [[ -n $map ]]; then
        found=$(awk -v image="$image" '$1 == image { print $2 }' "$map")
    elif command -v crane > /dev/null; then
        found=$(crane digest "$image")
    elif command -v docker > /dev/null; then
        found=$(docker buildx imagetools inspect "$image" --format '{{json .Manifest.Digest}}')
        found=${found//\"/}
    else
        echo "pin_digests: no --map, crane or docker to resolve $image" >&2
        return 1
    fi
    if [[ ! $found =~ ^sha256:[0-9a-f]{64}$ ]]; then
        echo "pin_digests: no digest for $image${map:+ in $map} (got '$found')" >&2
        return 1
    fi
    echo "$found"
}

rendered=$(kubectl kustomize "$overlay")
# Every `image:` field (containers, init containers, CronJobs, the Milvus resource), less those
# already pinned.
images=$(sed -n -E 's/^[[:space:]]*(- )?image: *"?([^"[:space:]]+)"?[[:space:]]*$/\2/p' \
    <<< "$rendered" | grep -v '@sha256:' | sort -u || true)
if [[ $list -eq 1 ]]; then
    [[ -z $images ]] || echo "$images"
    exit 0
fi

pairs=$(mktemp)
trap 'rm -f "$pairs"' EXIT
for image in $images; do
    digest=$(digest_of "$image")
    echo "$image $digest" >> "$pairs"
done
awk 'NR == FNR { digest[$1] = $2; next }
     match($0, /^[[:space:]]*(- )?image: */) {
         value = substr($0, RLENGTH + 1)
         gsub(/"/, "", value)
         if (value in digest) { print substr($0, 1, RLENGTH) value "@" digest[value]; next }
     }
     { print }' "$pairs" - <<< "$rendered"
