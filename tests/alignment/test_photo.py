"""`alignment.photo`: one photo's record with a stand-in detector (no dlib needed)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from alignment.detect import Face
from alignment.photo import AlignSettings, align_one
from alignment.warp import ARCFACE_TEMPLATE


def _png(width: int = 200, height: int = 160) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class Faces:
    """Finds the given faces with every detector and returns template-shaped landmarks in each box."""

    def __init__(self, faces: list[Face], fail: bool = False) -> None:
        self.faces, self.fail, self.calls = faces, fail, []

    def detect(self, rgb: np.ndarray, detector: str) -> list[Face]:
        self.calls.append(detector)
        if self.fail:
            raise RuntimeError("Unsupported image type")
        return [f for f in self.faces if f.detector == detector]

    def landmarks(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        left, top, right, _ = face.box
        five = ARCFACE_TEMPLATE * (right - left) / 112 + np.array([left, top])
        points = np.zeros((68, 2))
        points[36:42], points[42:48], points[30], points[48], points[54] = five[0], five[1], five[2], five[3], five[4]
        return points


def test_the_cnn_is_asked_only_when_hog_gives_no_qualifying_face() -> None:
    centred = Face((70.0, 50.0, 130.0, 110.0), 0.9, "cnn")
    faces = Faces([Face((0.0, 0.0, 60.0, 60.0), 2.0, "hog"), centred])  # HOG's face is off the centre gate
    record, data, candidates = align_one(_png(), "p.png", AlignSettings(), faces, None)  # type: ignore[arg-type]
    assert faces.calls == ["hog", "cnn"] and record["detector"] == "cnn" and record["box"] == list(centred.box)
    assert record["status"] == "aligned" and data is not None and candidates == []
    assert record["residual"] < 0.01  # template-shaped landmarks fit exactly


def test_a_detector_error_skips_that_photo_with_the_reason() -> None:
    record, data, _ = align_one(_png(), "p.png", AlignSettings(), Faces([], fail=True), None)  # type: ignore[arg-type]
    assert record["status"] == "skipped" and record["reason"].startswith("detector_error") and data is None


def test_consensus_keeps_every_qualifying_face_nearest_the_centre_first() -> None:
    near, far = Face((75.0, 55.0, 125.0, 105.0), 1.0, "hog"), Face((130.0, 10.0, 190.0, 70.0), 1.0, "hog")
    settings = AlignSettings(pick="consensus")
    record, _, candidates = align_one(_png(), "p.png", settings, Faces([far, near]), None)  # type: ignore[arg-type]
    assert record["box"] == list(near.box) and [c[0]["box"] for c in candidates] == [list(near.box), list(far.box)]
    assert all(c[1].shape == (112, 112, 3) for c in candidates)
