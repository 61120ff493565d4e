"""`alignment.consensus`: reference direction and the choice by agreement, against naive loops."""
from __future__ import annotations

import math

import numpy as np

from alignment.consensus import identity_reference, most_agreeing


def test_reference_is_the_unit_mean_of_unit_rows() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(size=(5, 8)) * rng.uniform(0.5, 9, (5, 1))  # norms must not weigh
    naive = [0.0] * 8
    for row in e:
        n = math.sqrt(sum(v * v for v in row))
        naive = [a + v / n / 5 for a, v in zip(naive, row, strict=True)]
    norm = math.sqrt(sum(v * v for v in naive))
    assert np.allclose(identity_reference(e), [v / norm for v in naive])
    assert identity_reference(np.zeros((0, 8))) is None
    assert identity_reference(np.array([[1.0, 0.0], [-1.0, 0.0]])) is None


def test_the_candidate_closest_in_angle_wins_and_ties_keep_the_first() -> None:
    reference = np.array([1.0, 0.0, 0.0])
    candidates = np.array([[0.0, 5.0, 0.0], [3.0, 3.1, 0.0], [0.9, 0.0, 0.1]])  # length must not matter
    index, cosines = most_agreeing(reference, candidates)
    assert index == 2 and np.allclose(cosines, [0.0, 3 / math.hypot(3, 3.1), 0.9 / math.hypot(0.9, 0.1)])
    assert most_agreeing(reference, np.array([[2.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))[0] == 0
