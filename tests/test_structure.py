"""The package's import graph: no circles, and nothing reaches up from a lower layer into a stage.

Layers, bottom to top: the shared modules (``looper/*.py``: answers, config, runs, modeling, ..., and the
``regime_w`` library: arms, scoring, reward, pairs, which the RL stages, train-rl's TRL config and eval's reports
all use and which is no stage of its own); the stage folders in pipeline order (baseline_sft, rl_training, eval),
each of which may import the shared modules, itself and earlier stages; and the top layer (``cli`` and ``pipeline``, which
dispatch, and ``plan``, which reads every stage's settings), which nothing below it imports. Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "looper"
STAGE_ORDER = ["baseline_sft", "rl_training", "eval"]
DISPATCHERS = {"looper.cli", "looper.pipeline", "looper.plan"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the looper modules it imports (``from looper.x import y`` counts y when y is a module)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                ]
            for target in targets:
                if target.startswith("looper") and target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def layer(module: str) -> tuple[int, str]:
    """(rank, label): shared modules (regime_w too) 0, stages 1..3 in pipeline order, dispatchers 9."""
    if module in DISPATCHERS:
        return 9, module
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in STAGE_ORDER:
        return 1 + STAGE_ORDER.index(parts[1]), parts[1]
    return 0, "shared"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in graph.items():
        src_rank, src_label = layer(src)
        for dst in targets:
            dst_rank, dst_label = layer(dst)
            if dst_rank > src_rank or (dst_rank == 9 and src not in DISPATCHERS):
                bad.append(f"{src} ({src_label}) imports {dst} ({dst_label})")
    return sorted(bad)


def test_the_import_graph_has_no_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_nothing_imports_up_into_a_stage_or_a_dispatcher():
    bad = upward_imports(import_graph())
    assert not bad, "imports from a lower layer up: " + "; ".join(bad)


def test_the_checks_catch_what_they_are_for():
    """The checker itself: a planted circle and a planted upward import are found."""
    planted = {
        "looper.config": {"looper.runs"},
        "looper.runs": {"looper.config"},
        "looper.regime_w.report": {"looper.rl_training.x"},
        "looper.baseline_sft.y": {"looper.eval.z"},
        "looper.eval.z": set(),
        "looper.rl_training.x": {"looper.cli"},
        "looper.cli": set(),
    }
    assert find_cycles(planted) == [["looper.config", "looper.runs"]]
    assert upward_imports(planted) == [
        "looper.baseline_sft.y (baseline_sft) imports looper.eval.z (eval)",
        "looper.regime_w.report (shared) imports looper.rl_training.x (rl_training)",
        "looper.rl_training.x (rl_training) imports looper.cli (looper.cli)",
    ]
