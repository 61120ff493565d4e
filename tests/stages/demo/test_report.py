"""`stages.demo.report`: what an interval of a difference is said to show."""
from __future__ import annotations

from stages.demo.report import verdict


def test_verdict_reads_the_interval() -> None:
    row = {"a": "fcd", "b": "fcd_icd", "ci_low": 0.01, "ci_high": 0.03}
    assert verdict(row) == "fcd_icd higher"
    assert verdict({**row, "ci_low": -0.03, "ci_high": -0.01}) == "fcd higher"
    assert verdict({**row, "ci_low": -0.01, "ci_high": 0.02}) == "no difference shown"
    assert verdict({**row, "ci_low": 0.0, "ci_high": 0.02}) == "no difference shown"
    assert verdict({**row, "ci_low": None, "ci_high": None}) == "not measured"
