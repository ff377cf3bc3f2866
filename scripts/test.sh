#!/usr/bin/env bash
# The one test command (README): lint, types and the default test suite (no slow/e2e/docker/gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check qbfl tests bench
.venv/bin/ruff format --check qbfl tests bench
.venv/bin/mypy qbfl
# pytest exits 5 when it collects no test: that is a failure here, as is any other non-zero code.
.venv/bin/python -m pytest -q "$@"
