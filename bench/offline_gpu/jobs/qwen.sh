#!/usr/bin/env bash
# The real model on one GPU (issue 43): configs/qwen2.5-coder-1.5b-gpu.yaml's whole pipeline (resumed from
# carried-back run folders where start.sh unpacked them), then the SFT
# recipe that diverged on this model (configs/smollm2-135m-gpu.yaml's packed, padding-free 8,192-token micro-batches
# at lr 2e-4) as looper trains it now, replayed on a divergence with scripts/replay_diverged_step.py with and without cuDNN attention.
#   jobs/qwen.sh [PIPELINE_OVERRIDES...]
# Needs convert.sh to have converted embedded:qwen2.5-coder-1.5b-instruct (start.sh waits for it).
set -u
source /tmp/repo/bench/offline_gpu/env.sh
cd /tmp/repo
mkdir -p /tmp/cr /tmp/res
date -u +"start %FT%TZ" > /tmp/res/progress.txt
$PY -c "import vllm, transformers, trl, datasets, peft, torch; print('versions', vllm.__version__, transformers.__version__, trl.__version__, datasets.__version__, peft.__version__, torch.__version__, torch.cuda.get_device_name())" > /tmp/res/versions.txt 2>&1
data="data.source=local data.path=/tmp/gsm8k"  # copied there by the first transfer call
model="model.name_or_path=embedded:qwen2.5-coder-1.5b-instruct"
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

# B: the real model's pipeline
SECONDS=0
$PY -m looper.cli pipeline configs/qwen2.5-coder-1.5b-gpu.yaml runs_dir=/tmp/cr $data \
  rollouts.vllm.gpu_memory_utilization=0.35 eval.vllm.gpu_memory_utilization=0.35 "$@" > /tmp/res/pipeline.log 2>&1
rc=$?
echo "pipeline rc $rc in ${SECONDS}s" >> /tmp/res/progress.txt
# A, after B (beside it, vLLM could not reserve its KV cache, 2026-12-07): the recipe that diverged in the
# backward of cuDNN's sdpa kernel, trained as looper trains now (cuDNN attention off); replayed if it diverges still
(
  set -x
  diverge="name=qwen-diverge runs_dir=/tmp/cr $data $model sft.trainer.num_train_epochs=1"
  $PY -m looper.cli prepare-data configs/smollm2-135m-gpu.yaml $diverge
  $PY -m looper.cli sft configs/smollm2-135m-gpu.yaml $diverge
  dump=$(ls /tmp/cr/qwen-diverge/work/sft/diverged_step*.pt 2>/dev/null | head -1)
  if [ -n "$dump" ]; then
    $PY scripts/replay_diverged_step.py configs/smollm2-135m-gpu.yaml $diverge --stage sft --dump "$dump"
    $PY scripts/replay_diverged_step.py configs/smollm2-135m-gpu.yaml $diverge --cudnn-attention --stage sft --dump "$dump"
  fi
) > /tmp/res/diverge.log 2>&1
echo "diverge job ended" >> /tmp/res/progress.txt
mirror
date -u +"end %FT%TZ rc $rc" >> /tmp/res/progress.txt
echo "rc $rc" > /tmp/res/done
