#!/usr/bin/env bash
# Regenerates the one generated package (import path zaqar.v2, kept in services/common/gen/)
# from protos/. Use the pinned grpcio-tools of scripts/gen-requirements.txt so output is stable.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
out=${OUT:-"$root/services/common/gen"}
annotations=$("$py" -c 'import google.api, os; print(os.path.dirname(os.path.dirname(google.api.__path__[0])))')
rm -rf "$out/zaqar"
mkdir -p "$out/zaqar/v2"
cd "$root/protos"
"$py" -m grpc_tools.protoc -I . -I "$annotations" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" zaqar/v2/*.proto
touch "$out/zaqar/__init__.py" "$out/zaqar/v2/__init__.py"
# The descriptor set Envoy's gRPC-JSON transcoder reads (deploy/envoy/envoy.yaml).
"$py" -m grpc_tools.protoc -I . -I "$annotations" --include_imports \
  --descriptor_set_out="${DESCRIPTOR_OUT:-$root/deploy/envoy/zaqar.pb}" zaqar/v2/*.proto
