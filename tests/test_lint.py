"""`ruff check` is clean on the code and `ruff format` would change nothing: the rules and style in pyproject.toml's
[tool.ruff], what .pre-commit-config.yaml's hooks do on each commit (so a commit made without them still fails the
quick suite)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PATHS = ["src", "tests", "bench", "scripts"]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_is_clean(command):
    pytest.importorskip("ruff", reason="ruff comes with looper's test extra: pip install -e '.[test]'")
    # --no-cache: the check writes nothing into the tree (a run by hand keeps ruff's .ruff_cache/)
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--no-cache", *PATHS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
