"""The benchmark scripts run end to end on a tiny shape (CPU); the real figures come from the device."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "data" / "gsm8k"


@pytest.mark.slow
@pytest.mark.skipif(not GSM8K.is_dir(), reason="needs the GSM8K files")
@pytest.mark.parametrize("script,extra,key", [
    ("sft_throughput.py", ["--recipes", "plan,fast", "--steps", "5", "--warmup", "1", "--pack", "512"], "recipes"),
    ("generation_throughput.py", ["--model", "tiny", "--requests", "12", "--batch", "4", "--new-tokens", "8"], "runs"),
    ("decode_profile.py", ["--model", "tiny", "--requests", "12", "--batch", "4", "--new-tokens", "8", "--prefill-rows", "2",
                           "--sweep", "8x64,2x1"], "sweep"),
    ("rl_throughput.py", ["--steps", "3", "--warmup", "1", "--batch", "2"], "layouts"),
])
def test_bench_script_runs_tiny(tmp_path, real_tokenizer_dir, script, extra, key):
    out = tmp_path / "out.json"
    cmd = [sys.executable, str(REPO / "bench" / script), "--gsm8k", str(GSM8K), "--tokenizer", str(real_tokenizer_dir),
           "--model-dir", str(tmp_path / "model"), "--out", str(out), *extra]
    if script not in ("generation_throughput.py", "decode_profile.py"):
        cmd += ["--shape", "tiny", "--runs-dir", str(tmp_path / "runs")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())[key]
    rows = results.values() if isinstance(results, dict) else results
    assert rows and all("tokens_per_s" in r and r["tokens_per_s"] > 0 for r in rows), results
