"""`ruff check` is clean on the code: the rules in pyproject.toml's [tool.ruff], the check .pre-commit-config.yaml's
hook makes on each commit (so a commit made without the hook still fails the quick suite)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PATHS = ["src", "tests", "bench", "scripts"]


def test_ruff_check_is_clean():
    pytest.importorskip("ruff", reason="ruff comes with looper's test extra: pip install -e '.[test]'")
    # --no-cache: the check writes nothing into the tree (a run by hand keeps ruff's .ruff_cache/)
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *PATHS], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
