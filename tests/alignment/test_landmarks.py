"""`alignment.landmarks`: 68 -> 5 points and the template fit residual."""
from __future__ import annotations

import numpy as np
import pytest

from alignment.landmarks import fit_residual, five_points
from alignment.warp import ARCFACE_TEMPLATE, similarity_to_template


def test_five_points_are_eye_means_nose_tip_and_mouth_corners() -> None:
    rng = np.random.default_rng(0)
    p68 = rng.uniform(0, 200, (68, 2))
    five = five_points(p68)
    naive = [np.mean([p68[i] for i in range(36, 42)], axis=0), np.mean([p68[i] for i in range(42, 48)], axis=0),
             p68[30], p68[48], p68[54]]
    assert np.allclose(five, np.array(naive))
    with pytest.raises(ValueError):
        five_points(p68[:67])


def test_residual_is_zero_for_a_template_shaped_face_and_grows_with_distortion() -> None:
    angle, scale, shift = 0.3, 2.2, np.array([40.0, 15.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    face = ARCFACE_TEMPLATE @ rot.T + shift
    assert fit_residual(face, similarity_to_template(face), ARCFACE_TEMPLATE) == pytest.approx(0.0, abs=1e-9)
    bent = face.copy()
    bent[2] += [30.0, 0.0]  # the nose far to one side: a profile
    residual = fit_residual(bent, similarity_to_template(bent), ARCFACE_TEMPLATE)
    mapped = np.c_[bent, np.ones(5)] @ similarity_to_template(bent).T
    naive = np.sqrt(np.mean([np.sum((mapped[i, :2] - ARCFACE_TEMPLATE[i]) ** 2) for i in range(5)]))
    assert residual == pytest.approx(naive) and residual > 2.0
