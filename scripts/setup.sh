#!/usr/bin/env bash
# Create .venv and install looper into it with the locked versions of constraints.txt (idempotent; a second run
# installs nothing new). torch is installed first, pinned, so that pip does not swap a CPU build for a multi-GB CUDA
# one: on Linux without an NVIDIA GPU the CPU build from PyTorch's own index (PyPI's Linux wheel is the CUDA one, GBs
# of libraries a CPU cannot use), falling back to PyPI's wheel where that index cannot be reached; otherwise PyPI's.
# Set LOOPER_TORCH_SPEC (e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128") to choose.
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
TORCH=torch==2.13.0
CPU_INDEX=https://download.pytorch.org/whl/cpu
how=""
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  if [ -n "${LOOPER_TORCH_SPEC:-}" ]; then
    # shellcheck disable=SC2086
    "$VPY" -m pip install -q $LOOPER_TORCH_SPEC
    how="as LOOPER_TORCH_SPEC='$LOOPER_TORCH_SPEC' says"
  elif [ "$(uname -s)" = Linux ] && ! nvidia-smi -L >/dev/null 2>&1; then
    # No NVIDIA GPU. A short timeout and no retries: where only PyPI can be reached this costs seconds, not minutes.
    if "$VPY" -m pip install -q --timeout 10 --retries 0 --index-url "$CPU_INDEX" "$TORCH" >/dev/null 2>&1; then
      how="no NVIDIA GPU here, so the CPU build, asked of $CPU_INDEX"
    else
      "$VPY" -m pip install -q "$TORCH"
      how="no NVIDIA GPU here, but $CPU_INDEX could not be reached, so PyPI's wheel"
    fi
  else
    "$VPY" -m pip install -q "$TORCH"
    how="PyPI's wheel, for the NVIDIA GPU found or a system other than Linux"
  fi
fi
if [ "${LOOPER_UNLOCKED:-0}" = 1 ]; then
  # the newest of everything but torch, which stays the build installed above
  torch_version=$("$VPY" -c "import torch; print(torch.__version__.split('+')[0])")
  "$VPY" -m pip install -q --upgrade --upgrade-strategy eager -e ".[test,lm-eval]" "torch==$torch_version"
else
  "$VPY" -m pip install -q -c constraints.txt -e ".[test,lm-eval]"
fi
if [ -n "$how" ]; then
  # said last, once numpy is in (torch warns on import without it), so it is the line above the pipeline's output
  build=$("$VPY" -c "import torch; print(torch.__version__, f'(CUDA {torch.version.cuda})' if torch.version.cuda else '(CPU only)')")
  echo "setup: installed torch $build: $how. Another build: remove $VENV and rerun with LOOPER_TORCH_SPEC set" \
       "(e.g. LOOPER_TORCH_SPEC='$TORCH --index-url https://download.pytorch.org/whl/cu128')"
fi
