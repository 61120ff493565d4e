"""One photo -> its aligned face and a manifest record: detect, pick, 68 -> 5 landmarks, warp.

A plain function of the photo's bytes and the settings, so that `align` can run it in worker processes;
the record holds everything a person needs to check the result (the manifest's one line per photo).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from alignment.detect import DlibFaces, Face
from alignment.landmarks import fit_residual, five_points
from alignment.pick import NO_FACE, OFF_CENTRE, TOO_SMALL, ranked_faces
from alignment.warp import (
    ALIGNED_SIZE,
    ARCFACE_TEMPLATE,
    CENTRE_CROP_SIDE,
    align_photo,
    centre_crop_matrix,
    decode_rgb,
    warp_similarity,
)
from common.errors import ConfigError

ALIGNED = "aligned"
FALLBACK = "fallback"
SKIPPED = "skipped"
UNREADABLE = "unreadable"
NO_LANDMARKS = "no_landmarks"  # --landmarks given, but no line for this photo
BAD_LANDMARKS = "bad_landmarks"  # the given or found points determine no similarity
DETECTOR_ERROR = "detector_error"  # dlib raised on this photo
MAX_CANDIDATES = 4  # pick = "consensus": faces of one photo aligned for the choice by agreement
# when no detector gives a qualifying face, the reason that got furthest: a face off centre says more
# than a face too small, which says more than no face at all
_REASON_ORDER = (NO_FACE, TOO_SMALL, OFF_CENTRE)


@dataclass(frozen=True)
class AlignSettings:
    """The `[align]` keys a photo's alignment depends on (plain values; config.schema.AlignConfig)."""

    detector: str = "hog+cnn"
    pick: str = "center"
    min_face: float = 0.2
    center_gate: float = 0.2
    fallback: str = "skip"
    crop_side: float = CENTRE_CROP_SIDE
    max_shrink: float = 1.5
    format: str = "png"
    jpeg_quality: int = 95


def encode(face: np.ndarray, fmt: str, quality: int) -> bytes:
    """uint8 [112, 112, 3] RGB -> PNG, or JPEG at `quality` (Pillow's default 4:2:0 chroma subsampling)."""
    buf = io.BytesIO()
    im = Image.fromarray(face, "RGB")
    if fmt == "png":
        im.save(buf, format="PNG")
    else:
        im.save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def _round(values: Any, digits: int = 3) -> Any:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def _find_faces(faces: DlibFaces, rgb: np.ndarray, s: AlignSettings) -> tuple[list[Face], int, str | None]:
    """(qualifying faces best first, faces the deciding detector found, None), or ([], most faces found,
    why none qualifies): each detector of `s.detector` in turn until one gives a qualifying face."""
    height, width = rgb.shape[:2]
    reason, found = NO_FACE, 0
    for detector in s.detector.split("+"):
        candidates = faces.detect(rgb, detector)
        ranked, why = ranked_faces(candidates, width, height, s.pick, s.min_face, s.center_gate)
        if ranked:
            return ranked, len(candidates), None
        found = max(found, len(candidates))
        if why is not None and _REASON_ORDER.index(why) > _REASON_ORDER.index(reason):
            reason = why
    return [], found, reason


def _face_record(rgb: np.ndarray, points: np.ndarray, max_shrink: float) -> tuple[dict[str, Any], np.ndarray]:
    """The aligned face of `points` ([5, 2]) and its record fields (landmarks, matrix, residual);
    ValueError when the points determine no similarity."""
    aligned, matrix = align_photo(rgb, points, max_shrink, ALIGNED_SIZE)
    fields = {"landmarks": _round(points, 2), "matrix": _round(matrix[:2], 6),
              "residual": round(fit_residual(points, matrix, ARCFACE_TEMPLATE), 3)}
    return fields, aligned


def skipped_record(reason: str | None) -> dict[str, Any]:
    """A manifest record (without source and output) of a photo that gave no face, for `reason`."""
    return {"status": SKIPPED, "reason": reason, "detector": None, "score": None, "box": None, "faces": 0,
            "landmarks": None, "matrix": None, "residual": None, "size": None}


Candidate = tuple[dict[str, Any], np.ndarray]  # (record fields: detector .. residual, aligned uint8 [112, 112, 3])


def align_one(data: bytes, name: str, settings: AlignSettings, faces: DlibFaces | None,
              given: tuple[np.ndarray, float] | None) -> tuple[dict[str, Any], bytes | None, list[Candidate]]:
    """A photo's bytes -> (its manifest record without source and output, the encoded face or None,
    the candidates).

    `faces` detects (None when landmarks are given); `given`: (landmarks [5, 2], score) from a
    landmark file, or None. Record keys: status (aligned | fallback | skipped), reason (why skipped),
    detector, score, box [l, t, r, b], faces (found by the detector that decided), landmarks [5, 2],
    matrix (2x3, photo -> face pixels), residual (RMS template pixels), size [w, h]. Candidates: with
    `pick = "consensus"` and several qualifying faces, each of them (the chosen one first, at most
    MAX_CANDIDATES) for the stage to choose among by agreement; else empty.
    """
    record = skipped_record(None)
    try:
        rgb = decode_rgb(data, name, upright=True)
    except ConfigError as e:
        record["reason"] = f"{UNREADABLE}: {e}"
        return record, None, []
    height, width = rgb.shape[:2]
    record["size"] = [width, height]
    if given is not None:
        points, score = given
        record.update(detector="landmarks", score=round(float(score), 4), faces=1)
        try:
            fields, aligned = _face_record(rgb, points, settings.max_shrink)
        except ValueError:
            record["reason"] = BAD_LANDMARKS
            return record, None, []
        record.update(status=ALIGNED, **fields)
        return record, encode(aligned, settings.format, settings.jpeg_quality), []
    assert faces is not None
    try:
        ranked, found, reason = _find_faces(faces, rgb, settings)
    except RuntimeError as e:  # dlib refusing an image (a size or format it cannot scan): this photo only
        record["reason"] = f"{DETECTOR_ERROR}: {e}"
        return record, None, []
    record["faces"] = found
    if not ranked:
        if settings.fallback == "center_crop":
            matrix = centre_crop_matrix(width, height, settings.crop_side)
            record.update(status=FALLBACK, reason=reason, matrix=_round(matrix[:2]))
            return record, encode(warp_similarity(rgb, matrix), settings.format, settings.jpeg_quality), []
        record["reason"] = reason
        return record, None, []
    keep = ranked[:MAX_CANDIDATES] if settings.pick == "consensus" else ranked[:1]
    candidates: list[Candidate] = []
    for face in keep:
        try:
            fields, aligned = _face_record(rgb, five_points(faces.landmarks(rgb, face)), settings.max_shrink)
        except (ValueError, RuntimeError):  # points that determine no similarity; dlib refusing the box
            continue
        candidates.append(({"detector": face.detector, "score": round(face.score, 4), "box": _round(face.box, 1),
                            **fields}, aligned))
    if not candidates:
        record["reason"] = BAD_LANDMARKS
        return record, None, []
    record.update(status=ALIGNED, **candidates[0][0])
    face_bytes = encode(candidates[0][1], settings.format, settings.jpeg_quality)
    return record, face_bytes, (candidates if len(candidates) > 1 else [])
