#!/usr/bin/env bash
# Does a rollout's text depend on what else is in its batch? One GPU, one process, the 8B shape with random weights:
# collect-rollouts twice with rollouts.batch_size 512 (is the engine deterministic?) and once with 256 (another batch
# composition, as splitting the questions over 2 processes gives), each compared record by record with the first.
#
#   bash bench/rollouts_batch_composition.sh GSM8K_DIR TOKENIZER_DIR [WORK_DIR]   (PYTHONPATH must reach src/ and bench/)
set -euo pipefail
GSM8K=$1 TOK=$2 WORK=${3:-/tmp/looper-bench/composition}
python3 -c "from common import build_random_checkpoint; build_random_checkpoint('$WORK/model', '$TOK')" 2>&1 | tail -1
O="runs_dir=$WORK/runs data.source=local data.path=$GSM8K data.platinum.source=none model.name_or_path=$WORK/model sft.data=gold
   sft.trainer.max_steps=1 sft.trainer.max_length=2048 sft.trainer.save_strategy='no' sft.trainer.use_liger_kernel=false
   rollouts.num_questions=64 rollouts.max_new_tokens=128"
C=configs/r1-distill-llama-8b.yaml
python3 -m looper.cli prepare-data $C name=r $O 2>&1 | tail -1
python3 -m looper.cli sft $C name=r $O 2>&1 | tail -1
for v in a512:512 b512:512 c256:256; do
  n=${v%%:*}; b=${v##*:}; rm -rf "$WORK/runs/$n"; cp -r "$WORK/runs/r" "$WORK/runs/$n"
  python3 -m looper.cli collect-rollouts $C name=$n rollouts.batch_size=$b $O 2>&1 | tail -1
done
WORK=$WORK python3 - <<'PY'
import json, os
def load(n): return [json.loads(x) for x in open(f"{os.environ['WORK']}/runs/{n}/data/rl_rollouts.jsonl")]
a, b, c = load("a512"), load("b512"), load("c256")
for name, other in (("batch 512 again", b), ("batch 256", c)):
    pairs = [(s, t) for r, q in zip(a, other) for s, t in zip(r["trajectories"], q["trajectories"])]
    same = sum(s["text"] == t["text"] for s, t in pairs)
    print(f"{name}: {same} of {len(pairs)} texts identical to the first batch-512 run; order same: {[r['id'] for r in a] == [r['id'] for r in other]}")
PY
