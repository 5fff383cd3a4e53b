#!/usr/bin/env bash
# On the GPU machine: wait until the job ends or WAIT seconds pass, copying /tmp/res to $OUT every 15 s (so a call cut
# off by the device's time limit still brings back what was made), then print where the job is.
#   bash bench/offline_gpu/poll.sh [WAIT]      (default 540: under one call's 600 s)
W=${1:-540}; t0=$(date +%s); mkdir -p "$OUT"
send() { tar czf "$OUT/res.tgz.part" -C /tmp res 2>/dev/null && mv "$OUT/res.tgz.part" "$OUT/res.tgz"; }
while [ ! -f /tmp/res/done ] && [ $(( $(date +%s) - t0 )) -lt "$W" ]; do sleep 15; send; done
send; date -u; cat /tmp/res/progress.txt /tmp/res/done 2>/dev/null
for f in /tmp/res/*.log; do echo "== $f"; tail -c 400 "$f" | tr '\r' '\n' | grep -v '^$' | tail -2; done
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
