"""Which face of a photo is the labelled person's: the `align.pick` policies.

Gates are fractions of the photo's shorter side, so one setting serves photos of any size: on LFW's
250 x 250 frames the defaults (0.2, 0.2) are the 50 px width and 50 px centre distance the aligned
DevTrain set was made with.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from alignment.detect import Face
from config.choices import ALIGN_PICKS as PICKS

NO_FACE = "no_face"  # the detector found nothing
TOO_SMALL = "too_small"  # every face narrower than the size gate
OFF_CENTRE = "off_centre"  # faces large enough, none within the centre gate


def centre_distance(face: Face, width: int, height: int) -> float:
    """Distance (pixels) from the face box's centre to the photo's centre."""
    cx, cy = face.centre
    return math.hypot(cx - width / 2.0, cy - height / 2.0)


def qualifying(faces: Sequence[Face], width: int, height: int, min_face: float, center_gate: float,
               gate_centre: bool) -> tuple[list[Face], str | None]:
    """The faces that pass the gates, and when none does, the reason (NO_FACE, TOO_SMALL, OFF_CENTRE).

    min_face: the least box width, as a fraction of min(width, height); center_gate: the largest distance
    of the box centre from the photo centre, same units (checked only when `gate_centre`)."""
    side = float(min(width, height))
    if not faces:
        return [], NO_FACE
    large = [f for f in faces if f.width >= min_face * side]
    if not large:
        return [], TOO_SMALL
    if not gate_centre:
        return large, None
    near = [f for f in large if centre_distance(f, width, height) <= center_gate * side]
    return near, (None if near else OFF_CENTRE)


def ranked_faces(faces: Sequence[Face], width: int, height: int, policy: str, min_face: float,
                 center_gate: float) -> tuple[list[Face], str | None]:
    """The faces that qualify under `policy`, best first, or ([], the reason none qualifies).

    "center": faces at least `min_face` wide whose centre lies within `center_gate` of the photo's
    centre, nearest the centre first (photos framed on their subject: LFW, CFP, ID photos);
    "largest": faces at least `min_face` wide anywhere, widest first; "consensus": faces at least
    `min_face` wide anywhere, nearest the centre first, for the stage to choose among by how well each
    agrees with the identity's other photos (`alignment.consensus`).
    """
    if policy not in PICKS:
        raise ValueError(f"unknown pick policy {policy!r}; one of {PICKS}")
    ok, reason = qualifying(faces, width, height, min_face, center_gate, gate_centre=policy == "center")
    if policy == "largest":
        return sorted(ok, key=lambda f: (-f.width, centre_distance(f, width, height))), reason
    return sorted(ok, key=lambda f: (centre_distance(f, width, height), -f.width)), reason


def pick_face(faces: Sequence[Face], width: int, height: int, policy: str, min_face: float,
              center_gate: float) -> tuple[Face | None, str | None]:
    """(the best face under `policy`, None) or (None, the reason none qualifies); see `ranked_faces`."""
    ranked, reason = ranked_faces(faces, width, height, policy, min_face, center_gate)
    return (ranked[0], None) if ranked else (None, reason)
