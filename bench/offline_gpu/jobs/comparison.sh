#!/usr/bin/env bash
# The pre-registered comparison (docs/results.md, "Regime W against correctness alone"), on one GPU:
#   jobs/comparison.sh SEEDS [EARLIER_ANALYSIS...]     e.g. 1234,1235 docs/bench/regime_w_comparison_2xh200/seed1235_paired.json
# with watch.py mirroring what the analysis needs into /tmp/res as it is made.
set -u
source /tmp/repo/bench/offline_gpu/env.sh
cd /tmp/repo
seeds=${1:?usage: comparison.sh SEEDS [EARLIER_ANALYSIS...]}; shift
mkdir -p /tmp/cr /tmp/res
date -u +"start %FT%TZ" > /tmp/res/progress.txt
$PY -c "import vllm, transformers, trl, datasets, peft, torch; print('versions', vllm.__version__, transformers.__version__, trl.__version__, datasets.__version__, peft.__version__, torch.__version__, torch.cuda.device_count())" > /tmp/res/versions.txt 2>&1
$PY bench/offline_gpu/watch.py > /tmp/res/watch.log 2>&1 &
from=(); [ $# -gt 0 ] && from=(--from-analysis "$@")
$PY bench/regime_w_comparison.py configs/smollm2-135m-gpu.yaml --runs-dir /tmp/cr --out /tmp/res/comparison.json \
  --seeds "$seeds" --k 16 --jobs 3 --gpus 0 "${from[@]}" \
  --set data.source=local data.path=/tmp/repo/.offline/gsm8k eval.batch_size=1024 \
  rollouts.vllm.gpu_memory_utilization=0.1 rollouts.vllm.kv_cache_memory_bytes=8000000000 \
  eval.vllm.gpu_memory_utilization=0.1 eval.vllm.kv_cache_memory_bytes=8000000000 > /tmp/res/comparison.log 2>&1
rc=$?
date -u +"end %FT%TZ rc $rc" >> /tmp/res/progress.txt
echo "rc $rc" > /tmp/res/done
