"""`stages.demo.report`: the intra-class gaps in the report's tables, read back, are teacher minus student."""
from __future__ import annotations

from types import SimpleNamespace

from config import load_config
from stages.demo.heldout import ALL_PAIRS, SAMPLED
from stages.demo.report import model_row, seed_table
from stages.demo.results import ModelResult


def _result(intra: float, train_gap: float, auc: float) -> ModelResult:
    sampled = SimpleNamespace(record={"accuracy_mean": 0.9, "accuracy_std": 0.01})
    all_pairs = SimpleNamespace(record={"auc": auc, "tar_at_far": {"1e-3": 0.3}, "intra_mean": intra})
    return ModelResult({SAMPLED: sampled, ALL_PAIRS: all_pairs}, 100.0,  # type: ignore[dict-item]
                       compactness={"gap": {"intra_mean": train_gap}})


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_gaps_are_teacher_minus_student_in_the_row_and_across_seeds() -> None:
    row = _cells(model_row("fcd", _result(intra=0.60, train_gap=0.05, auc=0.97), teacher_intra=0.70))
    assert row[-3] == "0.1000" and row[-2] == "0.0500"  # held-out gap, training gap: the student is less compact
    cfg = load_config(None, ["demo.seeds=[0, 1]"])
    results = {"seed0/fcd": _result(0.60, 0.05, 0.97), "seed1/fcd": _result(0.75, -0.02, 0.96)}
    line = next(x for x in seed_table(cfg, results, ["fcd"], teacher_intra=0.70) if x.startswith("| fcd"))
    cells = _cells(line)
    assert cells[4] == "0.0250 ± 0.0750"  # mean of +0.10 and -0.05, their spread
    assert cells[5] == "0.0150 ± 0.0350"
