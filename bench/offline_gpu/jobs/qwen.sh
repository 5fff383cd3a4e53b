#!/usr/bin/env bash
# The real model on one GPU (issue 43), continuing configs/qwen2.5-coder-1.5b-gpu.yaml's run from carried-back run
# folders (start.sh unpacks them into /tmp/cr; the run stopped after build-preferences):
#   1. train-rl: the config's recipe (DPO + NLL at lr 1e-4, chosen on dev in the session before); its RL policy
#      scored on GSM8K test at once (that choice's registered test score, first, so a short session still has it)
#   2. the SFT recipe that diverged on this model (configs/smollm2-135m-gpu.yaml's packed, padding-free 8,192-token
#      micro-batches at lr 2e-4), as looper trains it now (cuDNN attention off); on a divergence, the step replayed
#      with and without cuDNN attention (scripts/replay_diverged_step.py)
#   3. base, SFT and RL on dev and test from one vLLM engine (eval.vllm_adapter lora; if serving adapters as LoRA
#      fails, merged from there on, said in progress.txt)
#   4. the same run extended to two rounds (round 2 samples round 1's policy on the next 1,000 training questions),
#      in a copy of the run folder (qwen-rounds2) made before any eval; one round or two: the rule, fixed here
#      before either is scored, is the higher greedy flexible accuracy on gsm8k_dev (one round on a tie); a chosen
#      second round is then scored on test too (a second look at test, reported as such)
#   Steps run in this order, one at a time: a session short of device time stops after the ones it has.
#   `start.sh qwen diverge` runs step 2 alone (with WAIT_KIT=0 it needs only the wheels and the GGUF). Done on
#   2026-12-07 (fourth session): steps 1 (its test score) and 2; the next run: RL_TEST_DONE=1 WAIT_KIT=0 start.sh qwen.
#   jobs/qwen.sh
# Needs convert.sh to have converted embedded:qwen2.5-coder-1.5b-instruct (start.sh waits for it).
set -u
source /tmp/repo/bench/offline_gpu/env.sh
cd /tmp/repo
mkdir -p /tmp/cr /tmp/res
date -u +"start %FT%TZ" > /tmp/res/progress.txt
( until [ -f /tmp/install.done ]; do sleep 2; done  # vLLM's version once its kit is installed
  $PY -c "import vllm, transformers, trl, datasets, peft, torch; print('versions', vllm.__version__, transformers.__version__, trl.__version__, datasets.__version__, peft.__version__, torch.__version__, torch.cuda.get_device_name())" > /tmp/res/versions.txt 2>&1 ) &
data="data.source=local data.path=/tmp/gsm8k"  # copied there by the first transfer call
cfg=configs/qwen2.5-coder-1.5b-gpu.yaml
A=qwen2.5-coder-1.5b-gpu R2=qwen-rounds2
common="runs_dir=/tmp/cr $data rollouts.vllm.gpu_memory_utilization=0.35 eval.vllm.gpu_memory_utilization=0.35"
mirror() {  # what comes back with each poll: markers, metrics, eval summaries and reports, per-question eval files (gzip)
  for run in /tmp/cr/*/; do
    r=$(basename "$run"); mkdir -p "/tmp/res/$r"
    cp -r "$run"stages "$run"logs "$run"manifest.json "$run"config.yaml "/tmp/res/$r/" 2>/dev/null
    for k in "$run"rounds/*/; do  # later rounds' markers and logs
      [ -d "$k" ] && mkdir -p "/tmp/res/$r/rounds/$(basename "$k")" && cp -r "$k"stages "$k"logs "/tmp/res/$r/rounds/$(basename "$k")/" 2>/dev/null
    done
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

need_trl() {  # TRL's trainers import datasets, which needs dill: the vLLM kit brings it, the carried wheels do not
  # (started with WAIT_KIT=0, a trainer would fail at once: "No package metadata was found for dill")
  until $PY -c "import dill" 2> /dev/null || [ -f /tmp/install.done ]; do sleep 2; done
}

diverge_sft() {  # the recipe that diverged on this model, as looper trains it now; a diverged step replayed
  need_trl
  local diverge="name=qwen-diverge runs_dir=/tmp/cr $data model.name_or_path=embedded:qwen2.5-coder-1.5b-instruct sft.trainer.num_train_epochs=1"
  step diverge_prepare looper prepare-data configs/smollm2-135m-gpu.yaml $diverge
  step diverge_sft looper sft configs/smollm2-135m-gpu.yaml $diverge
  local dump; dump=$(ls /tmp/cr/qwen-diverge/work/sft/diverged_step*.pt 2>/dev/null | head -1)
  if [ -n "$dump" ]; then
    step replay $PY scripts/replay_diverged_step.py configs/smollm2-135m-gpu.yaml $diverge --stage sft --dump "$dump"
    step replay_cudnn $PY scripts/replay_diverged_step.py configs/smollm2-135m-gpu.yaml $diverge --cudnn-attention --stage sft --dump "$dump"
  fi
}

adapter=""  # eval.vllm_adapter=merged once serving the adapters as LoRA has failed
evaluate() {  # evaluate LABEL OVERRIDES...: looper eval, falling back to merged adapters once
  local label=$1; shift
  until [ -f /tmp/install.done ]; do sleep 2; done  # started with WAIT_KIT=0, the kit may still be on its way
  step "$label" looper eval $cfg $common $adapter "$@" && return 0
  [ -n "$adapter" ] && return 1
  adapter="eval.vllm_adapter=merged"; echo "$label: eval with LoRA adapters failed; merged from here" >> /tmp/res/progress.txt
  step "${label}_merged" looper eval $cfg $common $adapter "$@"
}

finish() { mirror; date -u +"end %FT%TZ" >> /tmp/res/progress.txt; echo "end" > /tmp/res/done; }
if [ "${1:-}" = diverge ]; then  # jobs/qwen.sh diverge: step 2 alone (needs neither the run folders nor vLLM)
  diverge_sft; finish; exit 0
fi

need_trl
step rl_round1 looper train-rl $cfg $common
[ -d /tmp/cr/$R2 ] || cp -r /tmp/cr/$A /tmp/cr/$R2
# RL_TEST_DONE=1: the registered test score exists (docs/bench/qwen2.5-coder-1.5b_h100_2026-12-07_rltest/); eval_all
# scores the policy on test again beside base and SFT
[ "${RL_TEST_DONE:-0}" = 1 ] || evaluate eval_rl_test "eval.models=[rl]" "eval.datasets=[gsm8k_test]"
diverge_sft
evaluate eval_all  # base, SFT and RL on dev and test from one engine (RL's test file above reused)
step rl_round2 looper train-rl $cfg $common name=$R2 rl.rounds=2
evaluate eval_dev_round2 name=$R2 rl.rounds=2 "eval.models=[rl]" "eval.datasets=[gsm8k_dev]"
$PY - "$A" "$R2" > /tmp/res/choice.txt 2>&1 <<'PYEOF'
import json, sys
def dev(run):
    rows = [json.loads(line) for line in open(f"/tmp/cr/{run}/eval/rl__gsm8k_dev.jsonl")]
    return sum(r["correct_flexible"] for r in rows) / len(rows), len(rows)
(one, n), (two, _) = dev(sys.argv[1]), dev(sys.argv[2])
print(f"gsm8k_dev, greedy flexible, n={n}: one round {100 * one:.2f}%  two rounds {100 * two:.2f}%")
print("chosen", sys.argv[2] if two > one else sys.argv[1])
PYEOF
if grep -q "^chosen $R2" /tmp/res/choice.txt; then
  evaluate eval_round2 name=$R2 rl.rounds=2  # its RL policy on test, and base / SFT beside it
fi
finish
