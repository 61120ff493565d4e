"""`evaluation.compare`: rows of model-versus-model comparisons."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.bootstrap import paired_bootstrap
from evaluation.compare import compare_on_set, model_pairs, verdict
from evaluation.pairs import PairSet


def _pair_set(labels: np.ndarray | None) -> PairSet:
    idx1 = np.array([0, 2, 4, 0, 1, 3, 5, 2])
    idx2 = np.array([1, 3, 5, 2, 4, 4, 0, 5])
    lab = np.array([0, 0, 1, 1, 2, 2])
    issame = lab[idx1] == lab[idx2]
    return PairSet("toy", Path("toy/pairs.txt"), [Path(f"{k}.png") for k in range(6)], idx1, idx2, issame, labels)


def test_model_pairs_keeps_the_listed_order() -> None:
    assert model_pairs(["x", "y", "z"]) == [("x", "y"), ("x", "z"), ("y", "z")]
    assert model_pairs(["x"]) == []


def test_rows_are_the_paired_bootstrap_of_each_model_pair() -> None:
    pair_set = _pair_set(np.array([0, 0, 1, 1, 2, 2]))
    rng = np.random.default_rng(3)
    scores = {m: rng.normal(size=len(pair_set)) + pair_set.issame * s for m, s in (("u", 1.0), ("v", 2.0))}
    rows = compare_on_set("toy", pair_set, scores, [("u", "v")], n_boot=40, seed=5, fars=(0.25,))
    lab = pair_set.labels
    assert lab is not None
    # 5 impostor pairs: the lowest FAR the set supports, 1 / 5, is below 0.25 and gets its own row
    direct = paired_bootstrap(scores["u"], scores["v"], pair_set.issame, lab[pair_set.idx1], lab[pair_set.idx2],
                              fars=(0.25, 0.2), n_boot=40, seed=5)
    assert [r["metric"] for r in rows] == ["auc", "tar@2.5e-1", "tar@lowest_far"]
    assert [d["metric"] for d in direct] == ["auc", "tar@2.5e-1", "tar@2e-1"] and rows[2]["far"] == 0.2
    for row, d in zip(rows, direct, strict=True):
        assert (row["set"], row["a"], row["b"]) == ("toy", "u", "v")
        assert (row["a_value"], row["b_value"], row["difference"]) == (d["a"], d["b"], d["difference"])
        assert (row["ci_low"], row["ci_high"], row["n_boot"], row["skipped"]) == (
            d["ci_low"], d["ci_high"], d["n_boot"], d["skipped"])


def test_a_set_too_small_for_every_far_still_gets_a_tar_comparison() -> None:
    pair_set = _pair_set(np.array([0, 0, 1, 1, 2, 2]))
    scores = {"u": pair_set.issame * 1.0 + np.linspace(0, 0.5, 8), "v": pair_set.issame * 2.0 + np.linspace(0, 0.1, 8)}
    rows = compare_on_set("toy", pair_set, scores, [("u", "v")], n_boot=20, seed=0, fars=(1e-3, 1e-4))
    by_metric = {r["metric"]: r for r in rows}
    assert by_metric["tar@1e-3"]["difference"] is None  # 5 impostors cannot measure FAR 1e-3
    lowest = by_metric["tar@lowest_far"]
    assert lowest["far"] == 0.2 and lowest["difference"] is not None
    rows = compare_on_set("toy", pair_set, scores, [("u", "v")], n_boot=20, seed=0, fars=(0.2, 0.5))
    assert "tar@lowest_far" not in {r["metric"] for r in rows}  # a given FAR already is the lowest


def test_a_set_without_identities_is_refused() -> None:
    pair_set = _pair_set(None)
    with pytest.raises(ValueError, match="names no identities"):
        compare_on_set("toy", pair_set, {"u": np.zeros(8), "v": np.zeros(8)}, [("u", "v")], 10, 0)


def test_verdict_reads_the_interval() -> None:
    row = {"a": "fcd", "b": "fcd_icd", "ci_low": 0.01, "ci_high": 0.03}
    assert verdict(row) == "fcd_icd higher"
    assert verdict({**row, "ci_low": -0.03, "ci_high": -0.01}) == "fcd higher"
    assert verdict({**row, "ci_low": -0.01, "ci_high": 0.02}) == "no difference shown"
    assert verdict({**row, "ci_low": 0.0, "ci_high": 0.02}) == "no difference shown"
    assert verdict({**row, "ci_low": None, "ci_high": None}) == "not measured"


def test_mean_std_over_seeds() -> None:
    from evaluation.compare import mean_std

    assert mean_std([0.5, 0.7]) == "0.6000 ± 0.1000"
    assert mean_std([0.25]) == "0.2500"
    assert mean_std([0.5, None]) == "n/a" and mean_std([]) == "n/a"
