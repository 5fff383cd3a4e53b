#!/usr/bin/env bash
# On the GPU machine, in the call that carries .offline/whl, .offline/gsm8k and the last GGUF piece, after every kit
# load and GGUF piece has been copied to /tmp/kit and /tmp/g and the kit's install.sh started:
#   bash bench/offline_gpu/start.sh JOB [ARGS...]
# joins the GGUF into /tmp/gguf (checking its sha256; convert.sh may have done so), installs the wheels into /tmp/site, copies this working tree to /tmp/repo (so
# later calls, which replace the working tree, cannot touch the job), unpacks into /tmp/cr the run folders of an
# earlier session where earlier calls copied them to /tmp/runs (pack_runs.sh; their sha256 travels in .offline/runs/),
# waits for the kit's install (not with WAIT_KIT=0: the job then waits for it itself), then starts
# bench/offline_gpu/jobs/JOB.sh under setsid: it outlives this call; poll.sh follows it.
set -euo pipefail
job=${1:?usage: start.sh JOB [ARGS...]}; shift
gguf=/tmp/gguf/$(cat .offline/gguf/name)
if [ ! -f /tmp/convert.done ] && [ ! -f /tmp/convert.log ]; then  # not joined by convert.sh already
  mkdir -p /tmp/gguf; cp .offline/gguf/p* /tmp/g/ 2>/dev/null || true
  cat $(ls /tmp/g/p* | sort) > "$gguf"
  [ "$(sha256sum < "$gguf" | cut -d' ' -f1)" = "$(cat .offline/gguf/sha256)" ] || { echo "GGUF: wrong sha256 (a piece missing?)"; ls -la /tmp/g; exit 1; }
fi
[ -d /tmp/site ] || /opt/torch/.venv/bin/python3 -m pip install -q --no-index --no-deps --target /tmp/site .offline/whl/*.whl
rm -rf /tmp/repo && mkdir -p /tmp/repo /tmp/res && cp -r . /tmp/repo/ && rm -rf /tmp/repo/.offline/whl /tmp/repo/.offline/gguf /tmp/repo/.vkit
if ls /tmp/runs/p* > /dev/null 2>&1; then  # run folders of an earlier session (pack_runs.sh), continued by the job
  [ "$(cat $(ls /tmp/runs/p* | sort) | sha256sum | cut -d' ' -f1)" = "$(cat .offline/runs/sha256)" ] ||
    { echo "run folders: wrong sha256 (a piece missing?)"; ls -la /tmp/runs; exit 1; }
  mkdir -p /tmp/cr && cat $(ls /tmp/runs/p* | sort) | tar xz -C /tmp/cr && echo "run folders unpacked: $(ls /tmp/cr | tr '\n' ' ')"
fi
t0=$(date +%s)
# WAIT_KIT=0: the kit comes in later calls and the job waits for it before it needs vLLM (training first)
until [ "${WAIT_KIT:-1}" = 0 ] || [ -f /tmp/install.done ] || [ $(( $(date +%s) - t0 )) -gt 300 ]; do sleep 2; done
if [ -f /tmp/convert.log ]; then  # convert.sh's conversion, started before the kit
  until [ -f /tmp/convert.done ] || [ $(( $(date +%s) - t0 )) -gt 420 ]; do sleep 2; done
  cat /tmp/convert.done 2>/dev/null || { echo "the model's conversion has not finished"; tail -3 /tmp/convert.log; exit 1; }
fi
[ "${WAIT_KIT:-1}" = 0 ] || cat /tmp/install.done 2>/dev/null || { echo "the vLLM kit's install has not finished"; exit 1; }
setsid nohup bash "/tmp/repo/bench/offline_gpu/jobs/$job.sh" "$@" > /tmp/res/job.log 2>&1 < /dev/null &
sleep 30; { cat /tmp/res/versions.txt /tmp/res/job.log 2>/dev/null || true; } | tail -5  # not every job writes versions.txt
