#!/usr/bin/env bash
# Does looper work with what PyPI resolves today, without the lock? A throwaway venv with the newest releases that
# pyproject.toml allows (torch aside: it stays the build setup.sh installs, LOOPER_TORCH_SPEC), the default test suite, and a generation smoke with the real embedded model (prepare-data,
# then eval of the base model on 8 generated questions). Run it whenever dependencies change or upstream releases;
# record the dated result in docs/dependencies.md. Prints what differs from constraints.txt.
#   bash scripts/check_latest.sh            (the quick suite; extra arguments go to pytest, e.g. -m "long and not slow and not gpu" for the rest)
set -uo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LOOPER_VENV="$work/venv" LOOPER_UNLOCKED=1
bash scripts/setup.sh || { echo "check_latest: install FAILED"; exit 1; }
VPY="$work/venv/bin/python"
echo "== versions that differ from constraints.txt"
"$VPY" -m pip freeze --exclude-editable | sort > "$work/latest.txt"
grep -v '^#' constraints.txt | sort | comm -13 - "$work/latest.txt" | grep -viE '^(torch|nvidia-|triton)' || echo "(none)"
echo "== test suite"
"$VPY" -m pytest -q -p no:cacheprovider "$@" 2>&1 | tail -15
suite=${PIPESTATUS[0]}
echo "== generation smoke (embedded SmolLM2-135M-Instruct, hf engine)"
cli=(configs/demo.yaml "runs_dir=$work/runs" data.symbolic_train_size=20 data.symbolic_test_size=8 "eval.models=[base]"
     "eval.datasets=[gsm_symbolic_test]" eval.max_new_tokens=64)
"$VPY" -m looper.cli prepare-data "${cli[@]}" 2>&1 | tail -1 && \
  "$VPY" -m looper.cli eval "${cli[@]}" > "$work/smoke.log" 2>&1
smoke=$?
tail -8 "$work/smoke.log"
if grep -qiE "deprecat|will be removed" "$work/smoke.log"; then
  echo "check_latest: deprecation warnings in the smoke:"; grep -iE "deprecat|will be removed" "$work/smoke.log" | sort -u | head
fi
echo "check_latest $(date -u +%Y-%m-%d): suite exit $suite, smoke exit $smoke ($("$VPY" -c 'import transformers, trl, peft, datasets, accelerate, torch; print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, peft {peft.__version__}, datasets {datasets.__version__}, accelerate {accelerate.__version__}")'))"
[ "$suite" = 0 ] && [ "$smoke" = 0 ]
