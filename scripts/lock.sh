#!/usr/bin/env bash
# Regenerate constraints.txt, the locked set of versions that scripts/setup.sh (and so the demo, the test suite and CI)
# installs: a throwaway venv takes what PyPI resolves today for looper and its test and lm-eval extras, on top of the pinned torch,
# and its `pip freeze` becomes the lock. Run the suite on the new lock (bash scripts/test.sh) before committing it.
#   bash scripts/lock.sh            # writes constraints.txt
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m venv "$work/venv"
VPY="$work/venv/bin/python"
"$VPY" -m pip install -q --upgrade pip
# shellcheck disable=SC2086
"$VPY" -m pip install -q ${LOOPER_TORCH_SPEC:-torch==2.13.0}
"$VPY" -m pip install -q ".[test,lm-eval]"
{
  echo "# Locked versions for scripts/setup.sh: pip install -c constraints.txt -e '.[test,lm-eval]'."
  echo "# Made by scripts/lock.sh on $(date -u +%Y-%m-%d) with $("$VPY" --version 2>&1), $("$VPY" -m pip --version | cut -d' ' -f1-2)."
  echo "# torch is installed first by setup.sh (LOOPER_TORCH_SPEC), so it is not here; nor is looper itself."
  "$VPY" -m pip freeze --exclude-editable | grep -viE '^(looper|torch|nvidia-|triton)([=@ ]|$)' | sed 's/+cpu$//'
} > constraints.txt.tmp
mv constraints.txt.tmp constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages locked ($(grep -iE '^(transformers|trl|peft|datasets|accelerate)==' constraints.txt | tr '\n' ' '))"
