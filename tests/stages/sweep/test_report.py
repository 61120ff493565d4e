"""`stages.sweep.report`: the numbers of `sweep.md` read back and checked against the comparison rows."""
from __future__ import annotations

from pathlib import Path

from stages.sweep.report import difference_summary
from stages.sweep.spec import SweepSpec, Variant


def _row(seed: int, metric: str, diff: float, low: float, high: float) -> dict:
    return {"set": "heldout", "a": f"fcd/seed{seed}", "b": f"icd/seed{seed}", "metric": metric, "difference": diff,
            "ci_low": low, "ci_high": high}


def test_the_difference_table_counts_intervals_above_and_below_zero_as_the_rows_say() -> None:
    spec = SweepSpec(Path("s.toml"), {"fcd": Variant("fcd"), "icd": Variant("icd")}, [0, 1, 2], "fcd", "")
    rows = [_row(0, "auc", 0.02, 0.01, 0.03), _row(1, "auc", 0.01, 0.002, 0.02), _row(2, "auc", -0.01, -0.02, 0.005),
            _row(0, "tar@1e-3", -0.05, -0.09, -0.01), _row(1, "tar@1e-3", 0.01, -0.02, 0.04),
            _row(2, "tar@1e-3", -0.03, -0.05, -0.004)]
    table = [line for line in difference_summary(spec, rows) if line.startswith("| heldout |")]
    parsed = {cells[2]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table)}
    for metric in ("auc", "tar@1e-3"):
        mine = [r for r in rows if r["metric"] == metric]
        above = sum(r["ci_low"] > 0 for r in mine)
        below = sum(r["ci_high"] < 0 for r in mine)
        mean = sum(r["difference"] for r in mine) / len(mine)
        assert parsed[metric][3] == f"{mean:+.4f}"
        assert parsed[metric][4] == f"{above}/3" and parsed[metric][5] == f"{below}/3", metric
    assert parsed["auc"][4] != parsed["auc"][5]  # above and below differ, so a swap shows
