#!/usr/bin/env bash
# The real model on one GPU (issue 43), continuing configs/qwen2.5-coder-1.5b-gpu.yaml's run from carried-back run
# folders (start.sh unpacks them into /tmp/cr; the run stopped after build-preferences):
#   1. train-rl twice on the same pairs: A, the config's DPO + NLL at lr 2e-5; B, the same at lr 1e-4 (run qwen-dpo-lr1e-4)
#   2. eval base and SFT on GSM8K dev and test; each RL policy on dev only
#   3. the recipe is chosen on dev by a rule fixed here before any RL policy is scored on test: the higher greedy
#      flexible accuracy on gsm8k_dev (A on a tie); then the chosen policy is scored on test (choice.txt)
#   4. the SFT recipe that diverged on this model (configs/smollm2-135m-gpu.yaml's packed, padding-free 8,192-token
#      micro-batches at lr 2e-4) as looper trains it now, with cuDNN attention off; on a divergence, the step replayed
#      with and without cuDNN attention (scripts/replay_diverged_step.py)
#   jobs/qwen.sh
# Needs convert.sh to have converted embedded:qwen2.5-coder-1.5b-instruct (start.sh waits for it).
set -u
source /tmp/repo/bench/offline_gpu/env.sh
cd /tmp/repo
mkdir -p /tmp/cr /tmp/res
date -u +"start %FT%TZ" > /tmp/res/progress.txt
$PY -c "import vllm, transformers, trl, datasets, peft, torch; print('versions', vllm.__version__, transformers.__version__, trl.__version__, datasets.__version__, peft.__version__, torch.__version__, torch.cuda.get_device_name())" > /tmp/res/versions.txt 2>&1
data="data.source=local data.path=/tmp/gsm8k"  # copied there by the first transfer call
cfg=configs/qwen2.5-coder-1.5b-gpu.yaml
A=qwen2.5-coder-1.5b-gpu B=qwen-dpo-lr1e-4
common="runs_dir=/tmp/cr $data rollouts.vllm.gpu_memory_utilization=0.35 eval.vllm.gpu_memory_utilization=0.35"
mirror() {  # what comes back with each poll: markers, metrics, eval summaries and reports, per-question eval files (gzip)
  for run in /tmp/cr/*/; do
    r=$(basename "$run"); mkdir -p "/tmp/res/$r"
    cp -r "$run"stages "$run"logs "$run"manifest.json "$run"config.yaml "/tmp/res/$r/" 2>/dev/null
    cp "$run"eval/summary.json "$run"eval/report.md "/tmp/res/$r/" 2>/dev/null
    for f in "$run"eval/*.jsonl; do  # rollouts stay (tens of MB): a poll brings back at most 16 MiB a file
      [ -f "$f" ] && gzip -c "$f" > "/tmp/res/$r/$(basename "$f").gz"
    done
  done
}
( while [ ! -f /tmp/res/done ]; do sleep 20; mirror; done ) &
step() {  # step LABEL COMMAND...: its output in /tmp/res/LABEL.log, its status and time in progress.txt
  local label=$1; shift; SECONDS=0
  "$@" > "/tmp/res/$label.log" 2>&1; local rc=$?
  echo "$label rc $rc in ${SECONDS}s" >> /tmp/res/progress.txt; return $rc
}
looper() { $PY -m looper.cli "$@"; }

[ -d /tmp/cr/$B ] || cp -r /tmp/cr/$A /tmp/cr/$B  # the same data, SFT adapter, rollouts and pairs
step rl_a looper train-rl $cfg $common
step rl_b looper train-rl $cfg $common name=$B rl.dpo.learning_rate=1e-4
step eval_base_sft looper eval $cfg $common eval.models=[base,sft]
mkdir -p /tmp/cr/$B/eval && cp /tmp/cr/$A/eval/base__* /tmp/cr/$A/eval/sft__* /tmp/cr/$B/eval/
step eval_dev_a looper eval $cfg $common eval.models=[rl] eval.datasets=[gsm8k_dev]
step eval_dev_b looper eval $cfg $common name=$B rl.dpo.learning_rate=1e-4 eval.models=[rl] eval.datasets=[gsm8k_dev]
$PY - "$A" "$B" > /tmp/res/choice.txt 2>&1 <<'PYEOF'
import json, sys
def dev(run):
    rows = [json.loads(line) for line in open(f"/tmp/cr/{run}/eval/rl__gsm8k_dev.jsonl")]
    return sum(r["correct_flexible"] for r in rows) / len(rows), len(rows)
(a, n), (b, _) = dev(sys.argv[1]), dev(sys.argv[2])
print(f"gsm8k_dev, greedy flexible, n={n}: A {100 * a:.2f}%  B {100 * b:.2f}%")
print("chosen", sys.argv[2] if b > a else sys.argv[1])
PYEOF
chosen=$(awk '/^chosen/ {print $2}' /tmp/res/choice.txt)
extra=""; [ "$chosen" = "$B" ] && extra="name=$B rl.dpo.learning_rate=1e-4"
step eval_chosen looper eval $cfg $common $extra
mirror

(
  set -x
  diverge="name=qwen-diverge runs_dir=/tmp/cr $data model.name_or_path=embedded:qwen2.5-coder-1.5b-instruct sft.trainer.num_train_epochs=1"
  looper prepare-data configs/smollm2-135m-gpu.yaml $diverge
  looper sft configs/smollm2-135m-gpu.yaml $diverge
  dump=$(ls /tmp/cr/qwen-diverge/work/sft/diverged_step*.pt 2>/dev/null | head -1)
  if [ -n "$dump" ]; then
    $PY scripts/replay_diverged_step.py configs/smollm2-135m-gpu.yaml $diverge --stage sft --dump "$dump"
    $PY scripts/replay_diverged_step.py configs/smollm2-135m-gpu.yaml $diverge --cudnn-attention --stage sft --dump "$dump"
  fi
) > /tmp/res/diverge.log 2>&1
echo "diverge job ended" >> /tmp/res/progress.txt
mirror
date -u +"end %FT%TZ" >> /tmp/res/progress.txt
echo "end" > /tmp/res/done
