#!/usr/bin/env bash
# tests/test_gpu.py (-m gpu) on the GPU machine: vLLM from the kit, bitsandbytes from its wheel where an earlier call
# copied it to /tmp/bnb (as for quant_generation), the embedded model's GGUF for SmolLM2's tokenizer.
#   jobs/gpu_tests.sh [PYTEST ARGS...]      (e.g. -k quantized: the whole file takes over ten minutes)
set -u
source /tmp/repo/bench/offline_gpu/env.sh
cd /tmp/repo
mkdir -p /tmp/res
date -u +"start %FT%TZ" > /tmp/res/progress.txt
if ls /tmp/bnb/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/site /tmp/bnb/*.whl > /tmp/res/bnb_install.log 2>&1
fi
$PY -m pytest -m gpu tests/test_gpu.py -v -p no:cacheprovider "$@" > /tmp/res/gpu_tests.txt 2>&1
rc=$?
date -u +"end %FT%TZ rc $rc" >> /tmp/res/progress.txt
echo "rc $rc" > /tmp/res/done
