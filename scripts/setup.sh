#!/usr/bin/env bash
# Create .venv and install looper into it (idempotent; a second run installs nothing new).
# torch is installed first, pinned, so that pip does not swap a CPU build for a multi-GB CUDA one;
# set LOOPER_TORCH_SPEC (e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128") to choose.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  "$VPY" -m pip install -q ${LOOPER_TORCH_SPEC:-torch==2.13.0}
fi
"$VPY" -m pip install -q -e ".[test]"
