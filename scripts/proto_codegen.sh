#!/usr/bin/env bash
# Regenerates the one generated package (import path zaqar_grpc.v2, kept in
# services/common/gen/) from protos/zaqar_grpc/v2/: messages (_pb2.py), gRPC stubs and servicers
# (_pb2_grpc.py), and typed stubs for both (.pyi). The Python import path follows the protos'
# folder, zaqar_grpc/v2, not their proto package, which stays zaqar.v2: the names on the wire
# (zaqar.v2.Messages, /zaqar.v2.Messages/PostMessages, ...) are the same as ever, and the import
# name is not OpenStack Zaqar's own `zaqar`, so both can be installed side by side.
# Uses the pinned generators of scripts/gen-requirements.txt so output is stable.
#
# The .pyi stubs come from mypy-protobuf, not from grpcio-tools' --pyi_out: both write
# <name>_pb2.pyi, and only mypy-protobuf also types the gRPC side (<name>_pb2_grpc.pyi: stubs
# typed for grpc and grpc.aio channels, servicers, add_*_to_server), with the protos' comments
# as docstrings. Like protoc's, its output names files by their path under protos/ only, so it
# is the same whatever $OUT is (tests/unit/test_codegen.py regenerates into a scratch folder).
# "quiet" keeps it from printing each file it writes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')  # absolute: we cd below
out=${OUT:-"$root/services/common/gen"}
# Refuse to write with other generator versions than the pinned ones: the output would differ.
"$py" - "$root/scripts/gen-requirements.txt" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

wrong = []
for line in open(sys.argv[1]):
    name, _, pinned = line.split("#")[0].strip().partition("==")
    if not pinned:
        continue
    try:
        found = version(name)
    except PackageNotFoundError:
        found = "missing"
    if found != pinned:
        wrong.append(f"{name} {found} (pinned {pinned})")
if wrong:
    sys.exit(f"proto_codegen.sh: install scripts/gen-requirements.txt first: {', '.join(wrong)}")
PY
annotations=$("$py" -c 'import google.api, os; print(os.path.dirname(os.path.dirname(google.api.__path__[0])))')
plugins=$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
rm -rf "$out/zaqar_grpc"
mkdir -p "$out/zaqar_grpc/v2"
cd "$root/protos"
"$py" -m grpc_tools.protoc -I . -I "$annotations" \
  --plugin=protoc-gen-mypy="$plugins/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$plugins/protoc-gen-mypy_grpc" \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out=quiet:"$out" --mypy_grpc_out=quiet:"$out" zaqar_grpc/v2/*.proto
touch "$out/zaqar_grpc/__init__.py" "$out/zaqar_grpc/v2/__init__.py"
# The descriptor set Envoy's gRPC-JSON transcoder reads (deploy/envoy/envoy.yaml). It also holds
# google.rpc.Status and the error detail types (ErrorInfo), which no zaqar proto imports: with
# convert_grpc_status the transcoder renders a failed call's grpc-status-details-bin as JSON,
# and it can only print the details whose types it finds here.
"$py" -m grpc_tools.protoc -I . -I "$annotations" --include_imports \
  --descriptor_set_out="${DESCRIPTOR_OUT:-$root/deploy/envoy/zaqar.pb}" zaqar_grpc/v2/*.proto \
  google/rpc/status.proto google/rpc/error_details.proto
# The copy components/grpc-edge mounts (kustomize reads files inside the component only); a
# scratch run (DESCRIPTOR_OUT set, as tests/unit/test_codegen.py does) leaves it alone.
if [ -z "${DESCRIPTOR_OUT:-}" ]; then
  cp "$root/deploy/envoy/zaqar.pb" "$root/deploy/k8s/components/grpc-edge/zaqar.pb"
fi
