"""`alignment.pick`: the size and centre gates and the two policies."""
from __future__ import annotations

import pytest

from alignment.detect import Face
from alignment.pick import NO_FACE, OFF_CENTRE, TOO_SMALL, pick_face


def face(cx: float, cy: float, width: float) -> Face:
    return Face((cx - width / 2, cy - width / 2, cx + width / 2, cy + width / 2), 1.0, "hog")


def test_center_takes_the_nearest_face_within_the_gates_as_the_lfw_recipe() -> None:
    # a 250 x 250 frame: gates 0.2 x 250 = 50 px for the width and for the centre distance
    centred, near, big_far = face(130, 130, 60), face(100, 125, 100), face(40, 40, 120)
    chosen, why = pick_face([big_far, near, centred], 250, 250, "center", 0.2, 0.2)
    assert chosen is centred and why is None
    chosen, why = pick_face([big_far], 250, 250, "center", 0.2, 0.2)
    assert chosen is None and why == OFF_CENTRE
    assert pick_face([face(125, 125, 49.9)], 250, 250, "center", 0.2, 0.2) == (None, TOO_SMALL)
    assert pick_face([face(125 + 50.0, 125, 60)], 250, 250, "center", 0.2, 0.2)[0] is not None  # on the gate
    assert pick_face([face(125 + 50.1, 125, 60)], 250, 250, "center", 0.2, 0.2) == (None, OFF_CENTRE)
    assert pick_face([], 250, 250, "center", 0.2, 0.2) == (None, NO_FACE)


def test_gates_scale_with_the_shorter_side() -> None:
    small = face(500, 300, 100)  # 100 px on a 1000 x 600 photo: 0.167 of 600
    assert pick_face([small], 1000, 600, "center", 0.2, 0.2) == (None, TOO_SMALL)
    assert pick_face([small], 1000, 600, "center", 0.15, 0.2)[0] is small


def test_largest_ignores_the_centre() -> None:
    centred, big_far = face(125, 125, 60), face(40, 40, 120)
    assert pick_face([centred, big_far], 250, 250, "largest", 0.2, 0.2)[0] is big_far
    with pytest.raises(ValueError):
        pick_face([centred], 250, 250, "biggest", 0.2, 0.2)
