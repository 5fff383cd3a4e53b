#!/usr/bin/env bash
# Pack run folders brought back from a GPU machine (bring_back.sh) so that a later session's machine can continue
# them: .offline/runs/pNN (pieces of PIECE bytes, each small enough to ride in one call) and .offline/runs/sha256.
# start.sh unpacks them into /tmp/cr, the runs folder of the jobs, before the job starts; looper then skips every
# finished stage and an eval continues from the questions it has.
#   bash bench/offline_gpu/pack_runs.sh DIR      (DIR holds the run folders, as /tmp/cr on the GPU machine did)
set -euo pipefail
src=${1:?usage: pack_runs.sh DIR}
PIECE=${PIECE:-50000000}
cd "$(dirname "$0")/../.."
out=.offline/runs; rm -rf "$out"; mkdir -p "$out"
# a run's lock names a process of the machine that is gone; a trainer's work folder only resumes a killed training
tar czf - -C "$src" --exclude='*.lock' --exclude='*/work' --exclude='*/checkpoints/.merged*' . | split -a 2 -d --numeric-suffixes=1 -b "$PIECE" - "$out/p"
cat "$out"/p* | sha256sum | cut -d' ' -f1 > "$out/sha256"
ls -la "$out"
