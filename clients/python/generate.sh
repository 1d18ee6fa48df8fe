#!/usr/bin/env bash
# Generates the Python client from proto/ with grpcio-tools (pip install -r requirements.txt):
# message classes (*_pb2.py, with .pyi type stubs) and gRPC stubs (*_pb2_grpc.py) into
# clients/python/pushpull/v1/, mirroring the proto package pushpull.v1. The generated code is not
# committed; run this again whenever proto/ changes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proto=$(cd "$here/../../proto" && pwd)

rm -rf "$here/pushpull"
# Every file of proto/pushpull/v1, errors.proto too (its ErrorReason enum gives the reason names
# as constants). grpc_tools.protoc carries the well-known types (google/protobuf/*.proto), the
# only imports; the google.rpc error details are not generated here, googleapis-common-protos
# ships them (google.rpc.error_details_pb2).
python3 -m grpc_tools.protoc --proto_path="$proto" \
  --python_out="$here" --pyi_out="$here" --grpc_python_out="$here" \
  "$proto"/pushpull/v1/*.proto
echo "generated: $(cd "$here" && find pushpull -name '*.py' | sort | tr '\n' ' ')"
