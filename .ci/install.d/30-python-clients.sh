#!/usr/bin/env bash
# grpcio, grpcio-tools, grpcio-status (with googleapis-common-protos) and protobuf for the Python
# client, and standardwebhooks for its webhook receiver (scripts/suites/30-python.sh), pinned in
# clients/python/requirements.txt.
set -euo pipefail
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  -r clients/python/requirements.txt
python3 -c 'import grpc, grpc_status, standardwebhooks; from google import protobuf; from google.rpc import error_details_pb2; print("grpcio", grpc.__version__, "protobuf", protobuf.__version__, "grpcio-status: ok", "standardwebhooks", standardwebhooks.__version__)'
