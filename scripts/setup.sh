#!/usr/bin/env bash
# Create .venv and install looper into it with the locked versions of constraints.txt (idempotent; a second run
# installs nothing new). torch is installed first, pinned, so that pip does not swap a CPU build for a multi-GB CUDA
# one; set LOOPER_TORCH_SPEC (e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128") to choose.
# LOOPER_UNLOCKED=1 installs what PyPI resolves today instead (scripts/check_latest.sh uses it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${LOOPER_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  "$VPY" -m pip install -q ${LOOPER_TORCH_SPEC:-torch==2.13.0}
fi
if [ "${LOOPER_UNLOCKED:-0}" = 1 ]; then
  # the newest of everything but torch, which stays the build installed above
  torch_version=$("$VPY" -c "import torch; print(torch.__version__.split('+')[0])")
  "$VPY" -m pip install -q --upgrade --upgrade-strategy eager -e ".[test,lm-eval]" "torch==$torch_version"
else
  "$VPY" -m pip install -q -c constraints.txt -e ".[test,lm-eval]"
fi
