#!/usr/bin/env bash
# On the GPU machine, in the call after the last GGUF piece was copied to /tmp/g (carry .offline/gguf/name and sha256,
# and .offline/whl if not sent before): join the pieces into /tmp/gguf/NAME (checking the sha256), install the wheels
# into /tmp/site, and start converting the model into looper's cache (/tmp/lcache) in the background, so that the
# conversion (minutes for a 1.5B model) overlaps the vLLM kit's transfer and install. start.sh waits for it.
#   bash bench/offline_gpu/convert.sh EMBEDDED_NAME        e.g. qwen2.5-coder-1.5b-instruct
set -euo pipefail
name=${1:?usage: convert.sh EMBEDDED_NAME}
gguf=/tmp/gguf/$(cat .offline/gguf/name)
mkdir -p /tmp/gguf /tmp/lsrc
cat $(ls /tmp/g/p* | sort) > "$gguf"
[ "$(sha256sum < "$gguf" | cut -d' ' -f1)" = "$(cat .offline/gguf/sha256)" ] || { echo "GGUF: wrong sha256 (a piece missing?)"; ls -la /tmp/g; exit 1; }
rm -rf /tmp/g
[ -d /tmp/site ] || /opt/torch/.venv/bin/python3 -m pip install -q --no-index --no-deps --target /tmp/site .offline/whl/*.whl
cp -r src/looper /tmp/lsrc/  # the working tree is replaced by the next call
setsid nohup bash -c "PYTHONPATH=/tmp/lsrc:/tmp/site LOOPER_CACHE=/tmp/lcache LOOPER_GGUF_DIR=/tmp/gguf HF_HUB_OFFLINE=1 \
  /opt/torch/.venv/bin/python3 -c \"from looper.modeling import resolve_model_path; print(resolve_model_path('embedded:$name'))\" \
  > /tmp/convert.log 2>&1; echo rc \$? > /tmp/convert.done" > /dev/null 2>&1 < /dev/null &
echo "joined $gguf; converting in the background (/tmp/convert.log)"
