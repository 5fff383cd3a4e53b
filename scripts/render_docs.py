"""Tables in README.md and docs/ rendered from raw files, not typed in: rewrite them, or check they are current.

    python scripts/render_docs.py            # rewrite every rendered block
    python scripts/render_docs.py --check    # exit 1 naming each block whose text is not what its command prints

A rendered block is the output of one bench script run on committed raw files (docs/bench/), between two markers:

    <!-- render: python bench/eval_files.py --against base base=docs/bench/.../base__gsm8k_dev.jsonl.gz ... -->
    ...the script's standard output...
    <!-- end render -->

The command runs from the repository root with this Python; only ``python bench/<script>.py`` commands are run. A
test (tests/test_readme.py) runs ``--check``, so a figure in such a block always traces to its raw files.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- render: (?P<command>.+?) -->\n)(?P<body>.*?)(<!-- end render -->)", re.S)


def documents(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def render(command: str, where: str) -> str:
    argv = shlex.split(command)
    if len(argv) < 2 or argv[0] != "python" or not re.fullmatch(r"bench/\w+\.py", argv[1]):
        raise SystemExit(f"{where}: rendered block command must be `python bench/<script>.py ...`, not {command!r}")
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{where}: `{command}` failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout if proc.stdout.endswith("\n") else proc.stdout + "\n"


def main(argv: list[str] | None = None, root: Path = REPO) -> int:
    """Exit status: 1 with ``--check`` where a block is not current, else 0. ``root``: where README.md and docs/ are
    (the commands still run from the repository root)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is not current")
    args = parser.parse_args(argv)
    stale = []
    for path in documents(root):
        text = path.read_text()
        out, last = [], 0
        for m in BLOCK.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            where = f"{path.relative_to(root)}:{line}"
            body = render(m["command"], where)
            if body != m["body"]:
                stale.append(where)
            out += [text[last : m.start("body")], body]
            last = m.end("body")
        new = "".join(out) + text[last:]
        if new != text and not args.check:
            path.write_text(new)
    if stale:
        verb = "not current (run python scripts/render_docs.py)" if args.check else "rewritten"
        print("\n".join(f"{where}: rendered block {verb}" for where in stale))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
