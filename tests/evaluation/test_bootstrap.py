"""`evaluation.bootstrap`: identity-bootstrap weights, weighted AUC / TAR@FAR and the paired bootstrap,
each against a direct loop that builds the resampled list of pairs and calls the unweighted metrics."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from evaluation.bootstrap import (
    paired_bootstrap,
    replicate_weights,
    weighted_roc_auc,
    weighted_roc_auc_rows,
    weighted_tar_at_far,
    weighted_tar_at_far_rows,
)
from evaluation.protocol import far_key, roc_auc, tar_at_far


def _pair_set(
    n_ids: int, n_genuine: int, n_impostor: int, seed: int, genuine_ids: int | None = None, signal: float = 1.0
) -> tuple[np.ndarray, ...]:
    """Scores (rounded, so that ties occur), issame and identity labels (not 0..U-1, on purpose)."""
    rng = np.random.default_rng(seed)
    gid = rng.integers(0, genuine_ids or n_ids, n_genuine)
    first = rng.integers(0, n_ids, n_impostor)
    second = (first + rng.integers(1, n_ids, n_impostor)) % n_ids
    id1 = np.concatenate([gid, first]) * 10 + 7
    id2 = np.concatenate([gid, second]) * 10 + 7
    issame = np.r_[np.ones(n_genuine, bool), np.zeros(n_impostor, bool)]
    scores = np.round(rng.normal(size=issame.size) + signal * issame, 1)
    shuffle = rng.permutation(issame.size)
    return scores[shuffle], issame[shuffle], id1[shuffle], id2[shuffle]


def _literal_resample(id1: np.ndarray, id2: np.ndarray, issame: np.ndarray, draw: list[int]) -> list[int]:
    """The resampled pair list, built literally: drawn copy c of an identity is pseudo-identity c.

    A pair is taken once for every way of putting its first image in a copy c1 of id1 and its second
    in a copy c2 of id2, where a genuine pair must stay inside one pseudo-identity (c1 == c2).
    """
    taken = []
    for p in range(len(issame)):
        for c1, first in enumerate(draw):
            for c2, second in enumerate(draw):
                if first == id1[p] and second == id2[p] and (c1 == c2 or not issame[p]):
                    taken.append(p)
    return taken


def test_replicate_weights_match_the_literal_resampled_list() -> None:
    scores, issame, id1, id2 = _pair_set(n_ids=7, n_genuine=25, n_impostor=40, seed=1)
    identities = sorted(set(id1.tolist()) | set(id2.tolist()))
    rng = np.random.default_rng(5)
    for _ in range(20):
        draw = [identities[i] for i in rng.integers(0, len(identities), size=len(identities))]
        expected = np.bincount(_literal_resample(id1, id2, issame, draw), minlength=issame.size)
        weights = replicate_weights(id1, id2, issame, np.array(draw))
        assert weights.dtype == np.int64
        assert weights.tolist() == expected.tolist()


def test_replicate_weights_on_a_hand_example() -> None:
    # identities 3, 5, 9; draw: 3 twice, 5 once, 9 never
    id1 = np.array([3, 5, 9, 3, 3, 5])
    id2 = np.array([3, 5, 9, 5, 9, 3])
    issame = np.array([True, True, True, False, False, False])
    assert replicate_weights(id1, id2, issame, np.array([3, 5, 3])).tolist() == [2, 1, 0, 2, 0, 2]


def test_replicate_weights_refuse_inconsistent_identities() -> None:
    with pytest.raises(ValueError, match="genuine"):
        replicate_weights(np.array([1, 1]), np.array([2, 1]), np.array([True, False]), np.array([1]))
    with pytest.raises(ValueError, match="impostor"):
        replicate_weights(np.array([1, 2]), np.array([1, 2]), np.array([True, False]), np.array([1]))
    with pytest.raises(ValueError, match="no pair involves"):
        replicate_weights(np.array([1, 1]), np.array([1, 2]), np.array([True, False]), np.array([4]))


FARS = (1e-3, 0.01, 0.05, 0.3, 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_weighted_metrics_equal_unweighted_ones_on_repeated_rows(seed: int) -> None:
    scores, issame, _, _ = _pair_set(n_ids=9, n_genuine=60, n_impostor=150, seed=seed)
    rng = np.random.default_rng(100 + seed)
    weights = rng.integers(0, 4, size=(6, issame.size))
    weights[0] = 1
    for row in weights:
        repeated = np.repeat(np.arange(issame.size), row)
        assert weighted_roc_auc(scores, issame, row) == roc_auc(scores[repeated], issame[repeated])
        assert weighted_tar_at_far(scores, issame, row, FARS) == tar_at_far(scores[repeated], issame[repeated], FARS)
    rows_auc = weighted_roc_auc_rows(scores, issame, weights)
    assert np.isnan(rows_auc).sum() == 0
    rows_tar = weighted_tar_at_far_rows(scores, issame, weights, FARS)
    for b, row in enumerate(weights):
        assert rows_auc[b] == weighted_roc_auc(scores, issame, row)
        from_rows = {k: None if np.isnan(v[b]) else v[b] for k, v in rows_tar.items()}
        assert from_rows == weighted_tar_at_far(scores, issame, row, FARS)


def test_weighted_tar_follows_the_floor_rule_where_far_times_n_rounds_below_an_integer() -> None:
    # 60 impostors of total weight 100 and far = 0.29: far * 100 = 28.999999999999996 in floating
    # point, and the project rule (tar_at_far) still takes k = 29
    rng = np.random.default_rng(6)
    scores = np.r_[rng.permutation(60) / 60.0, np.linspace(0.0, 1.0, 40)]
    issame = np.r_[np.zeros(60, bool), np.ones(40, bool)]
    weights = np.r_[np.full(40, 2), np.full(20, 1), np.ones(40, np.int64)]
    repeated = np.repeat(np.arange(issame.size), weights)
    expected = tar_at_far(scores[repeated], issame[repeated], (0.29,))
    assert weighted_tar_at_far(scores, issame, weights, (0.29,)) == expected
    assert expected != tar_at_far(scores[repeated], issame[repeated], (0.28,))  # k = 28 would differ


def test_weighted_metrics_are_undefined_without_a_class() -> None:
    scores, issame, _, _ = _pair_set(n_ids=5, n_genuine=10, n_impostor=30, seed=4)
    no_genuine = np.where(issame, 0, 1)
    assert weighted_roc_auc(scores, issame, no_genuine) is None
    assert weighted_tar_at_far(scores, issame, no_genuine, (0.1,)) == {"1e-1": None}
    assert weighted_roc_auc(scores, issame, np.where(issame, 1, 0)) is None
    assert weighted_tar_at_far(scores, issame, np.ones(issame.size), (0.01,)) == {"1e-2": None}  # 30 impostors


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    low, high = np.percentile(np.array(values), [2.5, 97.5])
    return float(low), float(high)


def _loop_bootstrap(
    scores_a: np.ndarray, scores_b: np.ndarray, issame: np.ndarray, id1: np.ndarray, id2: np.ndarray,
    fars: tuple[float, ...], n_boot: int, seed: int,
) -> list[dict[str, Any]]:
    """The bootstrap as a plain loop: resample the pair list literally, call roc_auc / tar_at_far."""
    identities = sorted(set(id1.tolist()) | set(id2.tolist()))
    names = ["auc"] + [f"tar@{far_key(far)}" for far in fars]
    differences: dict[str, list[float]] = {name: [] for name in names}
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        draw = [identities[i] for i in rng.integers(0, len(identities), size=len(identities))]
        taken = np.array(_literal_resample(id1, id2, issame, draw), dtype=np.int64)
        values = []
        for scores in (scores_a, scores_b):
            tar = tar_at_far(scores[taken], issame[taken], fars)
            values.append([roc_auc(scores[taken], issame[taken])] + [tar[far_key(far)] for far in fars])
        for name, a, b in zip(names, values[0], values[1], strict=True):
            if a is not None and b is not None:
                differences[name].append(b - a)
    records = []
    full = []
    for scores in (scores_a, scores_b):
        tar = tar_at_far(scores, issame, fars)
        full.append([roc_auc(scores, issame)] + [tar[far_key(far)] for far in fars])
    for name, a, b in zip(names, full[0], full[1], strict=True):
        low, high = _percentiles(differences[name]) if a is not None and b is not None else (None, None)
        records.append({
            "metric": name, "a": a, "b": b, "difference": None if a is None or b is None else b - a,
            "ci_low": low, "ci_high": high, "n_boot": n_boot, "skipped": n_boot - len(differences[name]),
        })
    return records


def test_paired_bootstrap_equals_the_direct_resampling_loop() -> None:
    # genuine pairs on 2 of 6 identities only, so some replicates have none (skipped), and 40 impostor
    # pairs, so that TAR@3e-2 is defined on some replicates and not others
    scores_a, issame, id1, id2 = _pair_set(n_ids=6, n_genuine=20, n_impostor=40, seed=7, genuine_ids=2)
    scores_b = np.round(scores_a + np.random.default_rng(8).normal(scale=0.7, size=issame.size), 1)
    fars = (1e-3, 3e-2, 0.2)
    result = paired_bootstrap(scores_a, scores_b, issame, id1, id2, fars=fars, n_boot=60, seed=11)
    expected = _loop_bootstrap(scores_a, scores_b, issame, id1, id2, fars, n_boot=60, seed=11)
    assert result == expected
    skipped = {r["metric"]: r["skipped"] for r in result}
    assert 0 < skipped["auc"] < skipped["tar@3e-2"] < 60  # the cases above occur
    assert result[1]["a"] is None and skipped["tar@1e-3"] == 60  # 40 impostors cannot measure 1e-3


def test_a_model_against_itself_differs_by_zero() -> None:
    scores, issame, id1, id2 = _pair_set(n_ids=30, n_genuine=200, n_impostor=800, seed=3)
    for record in paired_bootstrap(scores, scores, issame, id1, id2, fars=(1e-2, 0.1), n_boot=100, seed=0):
        assert record["difference"] == 0.0
        assert record["ci_low"] == 0.0 and record["ci_high"] == 0.0
        assert record["skipped"] == 0


def test_a_clearly_better_model_has_an_interval_above_zero() -> None:
    scores_a, issame, id1, id2 = _pair_set(n_ids=60, n_genuine=600, n_impostor=3000, seed=9)
    scores_b = scores_a + 1.5 * issame
    records = paired_bootstrap(scores_a, scores_b, issame, id1, id2, fars=(1e-2,), n_boot=200, seed=1)
    assert [r["metric"] for r in records] == ["auc", "tar@1e-2"]
    for record in records:
        assert record["difference"] == record["b"] - record["a"] > 0
        assert 0 < record["ci_low"] <= record["difference"] <= record["ci_high"]
    # and the other way round the interval lies below zero
    for record in paired_bootstrap(scores_b, scores_a, issame, id1, id2, fars=(1e-2,), n_boot=200, seed=1):
        assert record["ci_low"] <= record["ci_high"] < 0


def test_paired_bootstrap_is_deterministic_in_the_seed() -> None:
    scores_a, issame, id1, id2 = _pair_set(n_ids=20, n_genuine=100, n_impostor=400, seed=2)
    scores_b = scores_a + np.random.default_rng(3).normal(scale=0.5, size=issame.size)
    run = [paired_bootstrap(scores_a, scores_b, issame, id1, id2, fars=(0.05,), n_boot=50, seed=s) for s in (4, 4, 5)]
    assert run[0] == run[1]
    assert run[0] != run[2]
    assert [r["difference"] for r in run[0]] == [r["difference"] for r in run[2]]  # the full set is seed-free


def test_paired_bootstrap_refuses_bad_inputs() -> None:
    scores, issame, id1, id2 = _pair_set(n_ids=5, n_genuine=10, n_impostor=20, seed=0)
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap(scores, scores[:-1], issame, id1, id2)
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap(scores, scores, issame, id1, id2, n_boot=0)
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap(np.where(issame, np.nan, scores), scores, issame, id1, id2)
