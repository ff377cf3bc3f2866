#!/usr/bin/env bash
# The one setup command (README): a virtualenv in .venv with QBFL and its dev tools, and the datasets.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch 2.13.0 is the CPU build on this machine's local wheel disk (~210 MB RSS per process instead
# of ~650 MB for the CUDA build); on a machine with CUDA, pip resolves a CUDA build instead.
TORCH_SPEC="${QBFL_TORCH_SPEC:-torch==2.13.0}"
.venv/bin/pip install -q "$TORCH_SPEC" || .venv/bin/pip install -q "torch>=2.4,<=2.14.1"
.venv/bin/pip install -q -e ".[dev]"
.venv/bin/pip install -q --no-deps "byzfl==0.0.11"  # rules/attacks for the `byzfl` tests; its torchvision dep breaks CPU torch (qbfl/bench/byzfl_modules.py)
if [ -x scripts/gen-proto.sh ]; then scripts/gen-proto.sh; fi
scripts/fetch-data.sh
echo "setup done: activate with 'source .venv/bin/activate' or use .venv/bin/qbfl-*"
