#!/usr/bin/env bash
# Set up .venv and run the whole pipeline on the embedded SmolLM2-135M-Instruct with offline data (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/looper pipeline configs/demo.yaml "$@"
