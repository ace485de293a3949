#!/usr/bin/env bash
# README command 2: set everything up (idempotent), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${WQ_VENV:-.venv}/bin/python" -m pytest -q "$@"
