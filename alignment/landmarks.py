"""dlib's 68 facial landmarks -> the five points of the ArcFace template, and how well they fit it."""
from __future__ import annotations

import numpy as np

# iBUG 300-W 68-point indices (dlib's shape_predictor_68_face_landmarks): the eyes' six points each, the
# nose tip and the outer mouth corners
LEFT_EYE = slice(36, 42)  # the subject's right eye, on the image's left, as ArcFace's first point
RIGHT_EYE = slice(42, 48)
NOSE_TIP = 30
MOUTH_LEFT = 48
MOUTH_RIGHT = 54


def five_points(points68: np.ndarray) -> np.ndarray:
    """[68, 2] landmark pixels (x, y) -> [5, 2] float64 ArcFace points: left eye centre, right eye centre,
    nose tip, left and right mouth corners (eye centres are the means of points 36-41 and 42-47).

    The reduction the aligned LFW DevTrain set was made with, and insightface's 5-point order.
    """
    p = np.asarray(points68, dtype=np.float64)
    if p.shape != (68, 2):
        raise ValueError(f"expected [68, 2] landmarks, got {p.shape}")
    return np.stack([p[LEFT_EYE].mean(0), p[RIGHT_EYE].mean(0), p[NOSE_TIP], p[MOUTH_LEFT], p[MOUTH_RIGHT]])


def fit_residual(landmarks: np.ndarray, matrix: np.ndarray, template: np.ndarray) -> float:
    """Root-mean-square distance (template pixels) between the landmarks mapped by `matrix` (3x3) and the
    template's points ([5, 2] each): how far the face is from the template's shape; large for profiles,
    wrong landmarks and faces that are not faces."""
    pts = np.c_[np.asarray(landmarks, dtype=np.float64), np.ones(len(landmarks))] @ np.asarray(matrix).T
    return float(np.sqrt(np.mean(np.sum((pts[:, :2] - template) ** 2, axis=1))))
