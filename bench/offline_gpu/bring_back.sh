#!/usr/bin/env bash
# On the GPU machine, when a job will not finish in the session's device time: bring its run folders back so that the
# next session continues them (pack_runs.sh there, then start.sh unpacks them). The first call packs /tmp/cr (without
# trainers' work folders and temporary merged models) into /tmp/back in 15 MiB pieces and prints their sha256; each
# call, the first included, moves the next 4 pieces to $OUT (a call brings back at most 8 files of 16 MiB, 64 MiB in
# all). Repeat until it prints "all sent"; then here: cat the pieces in order | tar xz -C DIR.
#   bash bench/offline_gpu/bring_back.sh
set -euo pipefail
mkdir -p "$OUT"
if [ ! -d /tmp/back ]; then
  mkdir -p /tmp/back
  tar czf - -C /tmp/cr --exclude='*/work' --exclude='*/checkpoints/.merged*' --exclude='.vllm-cache-*' . |
    split -b 15M - /tmp/back/runs.tgz.
  cat /tmp/back/runs.tgz.* | sha256sum
fi
for f in $(ls /tmp/back | sort | head -4); do mv "/tmp/back/$f" "$OUT/"; done
ls "$OUT"; [ -n "$(ls /tmp/back)" ] && echo "$(ls /tmp/back | wc -l) pieces left" || echo "all sent"
