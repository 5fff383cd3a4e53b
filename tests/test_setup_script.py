"""scripts/setup.sh's choice of torch build, run against a stand-in venv python and stand-in ``nvidia-smi`` /
``uname`` that record what pip was asked, so the test needs neither a network nor a GPU."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The venv's python: logs every call; "pip install" of torch records the build it would have brought, failing for
# PyTorch's CPU index unless CPU_INDEX_UP is set; "import torch" succeeds once a build is recorded.
FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "$*" >> "$STATE/calls"
case "$*" in
  "-c import torch") [ -e "$STATE/torch" ] ;;
  "-c import torch; print"*) cat "$STATE/torch" ;;
  *"--index-url https://download.pytorch.org/whl/cpu torch==2.13.0")
    [ -n "${CPU_INDEX_UP:-}" ] && echo "2.13.0+cpu (CPU only)" > "$STATE/torch" ;;
  "-m pip install -q torch==2.13.0") echo "2.13.0 (CUDA 13.0)" > "$STATE/torch" ;;
  "-m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128")
    echo "2.13.0+cu128 (CUDA 12.8)" > "$STATE/torch" ;;
  *) true ;;
esac
"""


def run_setup(
    tmp_path: Path, *, gpu: bool, cpu_index_up: bool = False, spec: str | None = None
) -> tuple[str, list[str]]:
    """setup.sh's output and the calls it made of the venv's python, on a Linux machine with or without an
    NVIDIA GPU."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    venv_bin, tools, state = tmp_path / "venv" / "bin", tmp_path / "tools", tmp_path / "state"
    for folder in (venv_bin, tools, state):
        folder.mkdir(parents=True)
    scripts = {
        venv_bin / "python": FAKE_PYTHON,
        tools / "uname": "#!/bin/sh\necho Linux\n",
        tools / "nvidia-smi": f"#!/bin/sh\nexit {0 if gpu else 9}\n",
    }
    for path, text in scripts.items():
        path.write_text(text)
        path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("LOOPER_TORCH_SPEC", "LOOPER_UNLOCKED", "CPU_INDEX_UP")}
    env.update(PATH=f"{tools}:{env['PATH']}", LOOPER_VENV=str(tmp_path / "venv"), STATE=str(state))
    if cpu_index_up:
        env["CPU_INDEX_UP"] = "1"
    if spec:
        env["LOOPER_TORCH_SPEC"] = spec
    done = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "setup.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, (state / "calls").read_text().splitlines()


def torch_installs(calls: list[str]) -> list[str]:
    return [c for c in calls if c.startswith("-m pip install") and "torch==" in c]


def test_without_a_gpu_the_cpu_build_comes_from_pytorchs_cpu_index(tmp_path):
    out, calls = run_setup(tmp_path, gpu=False, cpu_index_up=True)
    assert torch_installs(calls) == [
        "-m pip install -q --timeout 10 --retries 0 --index-url https://download.pytorch.org/whl/cpu torch==2.13.0"
    ]
    assert out.startswith("setup: installed torch 2.13.0+cpu (CPU only): no NVIDIA GPU here, so the CPU build")
    assert "LOOPER_TORCH_SPEC" in out and len(out.splitlines()) == 1


def test_without_a_gpu_and_no_cpu_index_pypi_wheel_is_taken_and_said(tmp_path):
    """Where only PyPI can be reached (this project's workplaces), the CPU index fails fast and PyPI's wheel comes."""
    out, calls = run_setup(tmp_path, gpu=False)
    assert torch_installs(calls)[-1] == "-m pip install -q torch==2.13.0" and len(torch_installs(calls)) == 2
    assert "could not be reached, so PyPI's wheel" in out and "LOOPER_TORCH_SPEC" in out


@pytest.mark.parametrize(
    "spec, build",
    [
        (None, "2.13.0 (CUDA 13.0)"),
        ("torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128", "2.13.0+cu128 (CUDA 12.8)"),
    ],
)
def test_with_a_gpu_or_a_stated_spec_no_cpu_index_is_tried(tmp_path, spec, build):
    out, calls = run_setup(tmp_path, gpu=True, spec=spec)
    assert len(torch_installs(calls)) == 1 and "whl/cpu" not in torch_installs(calls)[0]
    assert out.startswith(f"setup: installed torch {build}: ")


def test_a_second_run_installs_no_torch_and_says_nothing_of_it(tmp_path):
    run_setup(tmp_path, gpu=False, cpu_index_up=True)
    state = tmp_path / "state"
    (state / "calls").unlink()
    env = {k: v for k, v in os.environ.items() if k != "LOOPER_TORCH_SPEC"}
    env.update(LOOPER_VENV=str(tmp_path / "venv"), STATE=str(state), PATH=f"{tmp_path / 'tools'}:{env['PATH']}")
    done = subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh")], env=env, capture_output=True, text=True)
    assert (
        done.returncode == 0 and done.stdout == "" and torch_installs((state / "calls").read_text().splitlines()) == []
    )
