"""`pair_cosines`: genuine and impostor mean cosines from pair scores, against cosines computed directly."""
from __future__ import annotations

import numpy as np
import pytest

from evaluation.collapse import COLLAPSE_IMPOSTOR_COSINE, pair_cosine_gap, pair_cosines
from evaluation.protocol import squared_l2_distance


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_means_equal_direct_cosines() -> None:
    rng = np.random.default_rng(0)
    e1, e2 = _unit(rng.normal(size=(40, 8))), _unit(rng.normal(size=(40, 8)))
    issame = rng.random(40) < 0.3
    got = pair_cosines(-squared_l2_distance(e1, e2), issame)
    cos = [float(a @ b) for a, b in zip(e1, e2, strict=True)]
    assert got["genuine_mean"] == pytest.approx(np.mean([c for c, s in zip(cos, issame, strict=True) if s]))
    assert got["impostor_mean"] == pytest.approx(np.mean([c for c, s in zip(cos, issame, strict=True) if not s]))
    assert got["collapsed"] is False


def test_a_collapsed_embedding_is_flagged() -> None:
    rng = np.random.default_rng(1)
    centre = rng.normal(size=8)
    e1 = _unit(centre + 0.2 * rng.normal(size=(30, 8)))  # every face near one point
    e2 = _unit(centre + 0.2 * rng.normal(size=(30, 8)))
    issame = np.arange(30) % 2 == 0
    got = pair_cosines(-squared_l2_distance(e1, e2), issame)
    assert got["impostor_mean"] > COLLAPSE_IMPOSTOR_COSINE and got["collapsed"] is True


def test_a_set_without_impostors_has_no_impostor_mean() -> None:
    e = _unit(np.ones((3, 4)))
    got = pair_cosines(-squared_l2_distance(e, e), np.ones(3, dtype=bool))
    assert got == {"genuine_mean": pytest.approx(1.0), "impostor_mean": None, "collapsed": False}


def test_gap_to_the_teacher_is_the_mean_absolute_cosine_difference() -> None:
    rng = np.random.default_rng(2)
    t1, t2, s1, s2 = (_unit(rng.normal(size=(25, 6))) for _ in range(4))
    got = pair_cosine_gap(-squared_l2_distance(s1, s2), -squared_l2_distance(t1, t2))
    want = np.mean([abs(float(a @ b) - float(c @ d)) for a, b, c, d in zip(s1, s2, t1, t2, strict=True)])
    assert got == pytest.approx(want)
    assert pair_cosine_gap(-squared_l2_distance(t1, t2), -squared_l2_distance(t1, t2)) == 0.0
    with pytest.raises(ValueError, match="pair_cosine_gap"):
        pair_cosine_gap(np.zeros(3), np.zeros(4))
