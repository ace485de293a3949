#!/usr/bin/env bash
# README command 1: set everything up (idempotent), compile the embedded Fashion-MNIST CNN at (4,4), evaluate it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${WQ_VENV:-.venv}/bin/python" -m models.fashion_mnist.demo "$@"
