"""The worked example of docs/development.md ("Adding a loss method") runs as written.

Its code blocks are executed in order: the loss, its test against a loop (called), and the method's terms and
table entries (executed on copies of `stages.training.methods`' tables, which are then patched in, with the name
added to `config.choices`, as step 4 says). A tiny synthetic `distill` with `loss.method=cosine` must then train
and log the new term.
"""
from __future__ import annotations
import __future__

import math
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, invoke, tiny_settings
from tests.stages.conftest import read_metrics

PAGE = REPO / "docs" / "development.md"


def python_blocks(page: Path, heading: str) -> list[str]:
    """The ```python blocks of the section `## <heading>...` of `page`, in order."""
    text = page.read_text()
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], flags=re.S)


def run_block(source: str, namespace: dict[str, Any]) -> None:
    code = compile(source, str(PAGE), "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True)
    exec(code, namespace)


def test_the_worked_loss_method_example_trains(tmp_path: Path, teacher_weights: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from config import choices
    from stages.training import methods
    from stages.training import run as run_module

    loss_src, test_src, method_src = python_blocks(PAGE, "Adding a loss method")
    ns: dict[str, Any] = {}
    run_block(loss_src, ns)
    run_block(test_src, ns)
    ns["test_cosine_distillation_loss_is_the_mean_of_one_minus_each_cosine"]()

    tables = {**vars(methods), "cosine_distillation_loss": ns["cosine_distillation_loss"],
              "METHOD_TERMS": dict(methods.METHOD_TERMS), "METHOD_WEIGHTS": dict(methods.METHOD_WEIGHTS)}
    run_block(method_src, tables)
    assert "cosine" in tables["MARGIN_HEAD_METHODS"] and "cosine" not in methods.MARGIN_HEAD_METHODS
    for name in ("METHOD_TERMS", "METHOD_WEIGHTS", "MARGIN_HEAD_METHODS"):
        monkeypatch.setattr(methods, name, tables[name])
    monkeypatch.setattr(run_module, "MARGIN_HEAD_METHODS", tables["MARGIN_HEAD_METHODS"])
    monkeypatch.setitem(choices.CHOICES, "loss.method", (*choices.LOSS_METHODS, "cosine"))

    settings = tiny_settings(tmp_path, teacher_weights)
    assert invoke("extract", settings)[0] == 0
    code, out, summary = invoke("distill", settings + ["loss.method=cosine"])
    assert code == 0, out
    rows = read_metrics(tmp_path / "metrics.csv")
    assert {"margin", "cosine"} <= set(rows[0]) and "fcd" not in rows[0]
    cosine = [float(r["cosine"]) for r in rows]
    assert len(cosine) == 6 and all(math.isfinite(v) and 0.0 <= v <= 2.0 for v in cosine)


def test_the_method_is_refused_until_its_name_is_added(tmp_path: Path, teacher_weights: Path) -> None:
    """Step 4 is needed: without the name in `config.choices`, `loss.method=cosine` is a config error (exit 2)."""
    code, out, _ = invoke("distill", tiny_settings(tmp_path, teacher_weights) + ["loss.method=cosine"])
    assert code == 2 and "loss.method" in out
