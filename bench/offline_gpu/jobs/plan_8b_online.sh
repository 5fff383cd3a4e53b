#!/usr/bin/env bash
# GRPO and RLOO on the 8B architecture (random weights) with TRL's vLLM colocate: the rates `looper plan` prices
# them with (docs/benchmarks.md, "GRPO and RLOO on the 8B architecture").
set -u
source /tmp/repo/bench/offline_gpu/env.sh
cd /tmp/repo
mkdir -p /tmp/res
date -u +"start %FT%TZ" > /tmp/res/progress.txt
tok=$($PY -c "from looper.modeling import resolve_model_path; print(resolve_model_path('embedded:smollm2-135m-instruct'))" | tail -1)
$PY bench/plan_8b.py --gsm8k /tmp/repo/.offline/gsm8k --tokenizer "$tok" --model-dir /tmp/llama-8b-random \
  --configs 8b --parts grpo,rloo --online-steps 4 --runs-dir /tmp/pb --out /tmp/res/plan_8b_grpo_rloo_vllm_h200.json \
  --set sft.trainer.use_liger_kernel=false rl.grpo.use_vllm=true rl.grpo.vllm_mode=colocate \
        rl.rloo.use_vllm=true rl.rloo.vllm_mode=colocate > /tmp/res/plan_8b.log 2>&1
rc=$?
date -u +"end %FT%TZ rc $rc" >> /tmp/res/progress.txt
echo "rc $rc" > /tmp/res/done
