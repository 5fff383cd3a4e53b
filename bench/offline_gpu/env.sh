# Sourced by the device jobs: the image's Python, looper from /tmp/repo, the carried wheels (/tmp/site) and the vLLM kit
# (/tmp/vsite) ahead of the image's packages, the embedded model's joined GGUF (/tmp/gguf), everything offline.
export PY=${PY:-/opt/torch/.venv/bin/python3}
export PYTHONPATH=/tmp/repo/src:/tmp/site:/tmp/vsite
export PATH=/tmp/vsite/bin:$PATH VLLM_USE_FLASHINFER_SAMPLER=0
export LOOPER_GGUF_DIR=/tmp/gguf LOOPER_CACHE=/tmp/lcache
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
