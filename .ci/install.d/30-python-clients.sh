#!/usr/bin/env bash
# grpcio, grpcio-tools and protobuf for the Python client (scripts/suites/30-python.sh).
set -euo pipefail
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  -r clients/python/requirements.txt
python3 -c 'import grpc; from google import protobuf; print("grpcio", grpc.__version__, "protobuf", protobuf.__version__)'
