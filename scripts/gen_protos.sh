#!/usr/bin/env bash
# Regenerates the Python gRPC code (with .pyi stubs) from protos/ into the imagesearch package.
# `-I protos` makes generated imports absolute (imagesearch.embedder.v1.embedder_pb2).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
# protos/google is googleapis' (vendored for buf and protoc): its Python code is the
# googleapis-common-protos package's.
mapfile -t PROTOS < <(find protos -name '*.proto' -not -path 'protos/google/*' | sort)
"$PYTHON" -m grpc_tools.protoc -I protos \
    --python_out=. --pyi_out=. --grpc_python_out=. "${PROTOS[@]}"
for proto in "${PROTOS[@]}"; do
    pkg_dir=$(dirname "${proto#protos/}")
    while [[ "$pkg_dir" != "." && "$pkg_dir" != "imagesearch" ]]; do
        touch "$pkg_dir/__init__.py"
        pkg_dir=$(dirname "$pkg_dir")
    done
done
