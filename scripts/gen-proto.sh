#!/usr/bin/env bash
# The one command that (re)generates the gRPC stubs: proto/qbfl/v1/*.proto -> qbfl/_proto/v1/.
# The generated files are committed and never edited; tests/unit/node/test_proto_stubs.py fails
# when they differ from what this script produces (the .proto files changed, or grpcio-tools did).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
out="${1:-qbfl/_proto}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m grpc_tools.protoc -I proto --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
  proto/qbfl/v1/*.proto
mkdir -p "$out/v1"
rm -f "$out"/v1/*_pb2*.py "$out"/v1/*_pb2*.pyi
# protoc writes absolute imports of the proto package (`from qbfl.v1 import x_pb2`), which would
# resolve inside our own `qbfl` package: point them at the folder the stubs really live in.
for f in "$tmp"/qbfl/v1/*; do
  sed -e 's/^from qbfl\.v1 import /from qbfl._proto.v1 import /' "$f" >"$out/v1/$(basename "$f")"
done
[ -f "$out/__init__.py" ] || printf '"""Generated gRPC stubs (scripts/gen-proto.sh); never edit by hand."""\n' >"$out/__init__.py"
[ -f "$out/v1/__init__.py" ] || printf '"""Generated from proto/qbfl/v1 by scripts/gen-proto.sh."""\n' >"$out/v1/__init__.py"
