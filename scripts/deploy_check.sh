#!/usr/bin/env bash
# Lints the container images and renders, schema-validates and policy-checks every Kubernetes
# overlay. Its tools live in their own virtualenv (.venv-deploy): checkov pins dozens of
# libraries that have no business in the project's environment.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=.venv-deploy
KUBERNETES_VERSION=1.32.0
# Their versions, and every library's, come from requirements/deploy-tools.txt (make lock).
STAMP="$TOOLS/.locked-$(sha1sum < requirements/deploy-tools.txt | cut -c1-12)"
if [[ ! -f $STAMP ]]; then
    rm -rf "$TOOLS"
    scripts/venv.sh "$TOOLS" requirements/deploy-tools.txt
    touch "$STAMP"
fi

echo "hadolint: deploy/docker"
"$TOOLS/bin/hadolint" deploy/docker/Dockerfile deploy/docker/model.Dockerfile
echo "checkov: deploy/docker"
"$TOOLS/bin/checkov" --config-file deploy/checkov.yaml --framework dockerfile -d deploy/docker

OUT=build/deploy
mkdir -p "$OUT"
for overlay in deploy/kubernetes/overlays/*/; do
    name=$(basename "$overlay")
    kubectl kustomize "$overlay" > "$OUT/$name.yaml"
    echo "kubernetes-validate $KUBERNETES_VERSION: $name"
    # Custom resources (Milvus, ServiceMonitor, PrometheusRule) have no schema here: that
    # warning is expected, and tests/deploy checks what they refer to.
    if ! report=$("$TOOLS/bin/kubernetes-validate" --kubernetes-version "$KUBERNETES_VERSION" \
            --strict --quiet "$OUT/$name.yaml" 2>&1); then
        echo "$report"
        exit 1
    fi
    echo "$report" | grep -v "Couldn't find schema for kind" || true
    echo "checkov: $name"
    "$TOOLS/bin/checkov" --config-file deploy/checkov.yaml --framework kubernetes \
        -f "$OUT/$name.yaml"
done
