"""Checks that keep the house tidy: data flows one way, and the stages stay short and shallow.

readers -> extract -> cache -> train/distill -> checkpoints -> evaluate -> export -> demo, sweep: building blocks never
import a stage, no stage imports a later one, and no function under `stages/` is longer than
MAX_LINES lines or nests blocks deeper than MAX_DEPTH.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

BUILDING_BLOCKS = ("common", "config", "readers", "alignment", "models", "losses", "cache", "checkpoints", "evaluation",
                   "deploy")
# each stage, and the stages it must not import (the later ones)
LATER = ("stages.export", "stages.demo", "stages.sweep")
LATER_STAGES = {
    "stages/extract.py": ("stages.train", "stages.distill", "stages.training", "stages.evaluate", *LATER),
    "stages/training": ("stages.extract", "stages.evaluate", *LATER),
    "stages/train.py": ("stages.extract", "stages.evaluate", *LATER),
    "stages/distill.py": ("stages.extract", "stages.evaluate", *LATER),
    "stages/evaluate": ("stages.extract", "stages.training", "stages.train", "stages.distill", *LATER),
    "stages/convert.py": ("stages.extract", "stages.training", "stages.train", "stages.distill", "stages.evaluate",
                          *LATER),
    "stages/split.py": ("stages.extract", "stages.training", "stages.train", "stages.distill", "stages.evaluate",
                        *LATER),
    "stages/export.py": ("stages.demo", "stages.sweep"),
    "stages/demo": ("stages.sweep",),  # demo and sweep are both last: neither imports the other
    "stages/sweep": ("stages.demo",),
}
MAX_LINES = 80
MAX_DEPTH = 4
NESTING = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try)


def _files(path: str) -> list[Path]:
    p = REPO / path
    return [p] if p.is_file() else sorted(p.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _violations(path: Path, banned: tuple[str, ...]) -> list[str]:
    return [f"{path.relative_to(REPO)} imports {m}" for m in sorted(_imports(path))
            if any(m == b or m.startswith(b + ".") for b in banned)]


@pytest.mark.parametrize("package", BUILDING_BLOCKS)
def test_building_blocks_never_import_stages(package: str) -> None:
    assert [v for f in _files(package) for v in _violations(f, ("stages", "cli"))] == []


@pytest.mark.parametrize("stage", sorted(LATER_STAGES))
def test_no_stage_imports_a_later_one(stage: str) -> None:
    assert [v for f in _files(stage) for v in _violations(f, LATER_STAGES[stage])] == []


def _depth(node: ast.AST, level: int = 0) -> int:
    deepest = level
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        deepest = max(deepest, _depth(child, level + isinstance(child, NESTING)))
    return deepest


def test_stage_functions_are_short_and_shallow() -> None:
    problems = []
    for path in _files("stages"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.relative_to(REPO)}::{node.name}"
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_LINES:
                    problems.append(f"{where} has {length} lines")
                if _depth(node) > MAX_DEPTH:
                    problems.append(f"{where} nests {_depth(node)} deep")
    assert problems == []


def test_the_training_loop_reads_top_down() -> None:
    tree = ast.parse((REPO / "stages" / "training" / "loop.py").read_text())
    run_loop = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "run_loop")
    assert (run_loop.end_lineno or 0) - run_loop.lineno + 1 <= 60
    calls = {n.func.id for n in ast.walk(run_loop) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert {"build_run", "train_step", "batches"} <= calls


PACKAGES = (*BUILDING_BLOCKS, "stages")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, known: set[str]) -> str | None:
    """The project module an import names (`a.b.c` may be a module or a name in `a.b`), or None."""
    while module and module not in known:
        module = module.rpartition(".")[0]
    return module or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (every import, `TYPE_CHECKING` ones and those inside functions
    included: a cycle of any kind is a cycle)."""
    files = {_module_name(f): f for pkg in PACKAGES for f in _files(pkg)}
    files["cli"] = REPO / "cli.py"
    known = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {m for t in targets if (m := _resolve(t, known)) and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_the_projects_modules() -> None:
    """A package's `__init__` re-exporting its modules is not a cycle unless one of them imports the package back."""
    assert cycles(import_graph()) == []
