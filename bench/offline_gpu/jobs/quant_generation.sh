#!/usr/bin/env bash
# Generation with a quantized base on the 8B architecture (random weights): the rates `looper plan` needs to price
# model.quantization 4bit / 8bit (issue 28). Needs the bitsandbytes wheel copied to /tmp/bnb by an earlier call.
#   jobs/quant_generation.sh [REQUESTS_HF] [NEW_TOKENS_HF]      (defaults 64 and 512: transformers' ways are slow)
set -u
source /tmp/repo/bench/offline_gpu/env.sh
cd /tmp/repo
mkdir -p /tmp/res
date -u +"start %FT%TZ" > /tmp/res/progress.txt
$PY -m pip install -q --no-index --no-deps --target /tmp/site /tmp/bnb/*.whl > /tmp/res/bnb_install.log 2>&1
tok=$($PY -c "from looper.modeling import resolve_model_path; print(resolve_model_path('embedded:smollm2-135m-instruct'))" | tail -1)
common=(--gsm8k /tmp/repo/.offline/gsm8k --tokenizer "$tok" --model 8b --model-dir /tmp/llama-8b-random)
rc=0
# vLLM's in-flight bitsandbytes 4-bit at the bf16 rate's size (256 x 2,048), then transformers' 4-bit and 8-bit
$PY bench/generation_throughput.py "${common[@]}" --quantization 4bit --ways vllm --requests 256 --batch 256 \
  --new-tokens 2048 --out /tmp/res/generation_4bit_vllm_h200.json > /tmp/res/gen_4bit_vllm.log 2>&1 || rc=$?
for q in 4bit 8bit; do
  $PY bench/generation_throughput.py "${common[@]}" --quantization $q --ways hf --requests "${1:-64}" --batch "${1:-64}" \
    --new-tokens "${2:-512}" --out /tmp/res/generation_${q}_hf_h200.json > /tmp/res/gen_${q}_hf.log 2>&1 || rc=$?
done
date -u +"end %FT%TZ rc $rc" >> /tmp/res/progress.txt
echo "rc $rc" > /tmp/res/done
