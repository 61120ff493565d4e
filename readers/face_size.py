"""Are the stored images aligned face crops of the model's input size? A check on a sample of image headers.

Face-recognition models take faces aligned to the ArcFace five-point template at a fixed square side
(insightface: 112 x 112). Images of another size or shape are resized, not aligned: whole photos resized
to 112 lose most of the teacher's accuracy (the MobileFace teacher on LFW DevTrain: 0.941 on aligned crops,
0.669 on the raw 250 x 250 photos), and nothing fails. `face_size_warning` says so, and what fixes it.
"""
from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from readers.base import FaceDataset

log = logging.getLogger(__name__)

SAMPLE = 16  # images whose headers are read (first, last, and evenly spread between)
ALIGN_HINT = ("faces must be crops aligned to the ArcFace five-point template at the model's input side "
              "(insightface's 112 x 112 norm_crop); align the photos first (a detector's five landmarks and a "
              "similarity transform), then point data.root at the crops (`icdface convert` makes a .rec)")


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header, without decoding its pixels; None if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.size[0]), int(im.size[1])
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None


def sample_sizes(count: int, encoded: Callable[[int], bytes], sample: int = SAMPLE) -> list[tuple[int, int]]:
    """Header sizes of up to `sample` of `count` stored images (`encoded(i)` gives image i's bytes), spread
    evenly from the first to the last; unreadable ones are left out."""
    if count <= 0:
        return []
    picks = np.unique(np.linspace(0, count - 1, num=min(sample, count)).round().astype(np.int64))
    sizes = []
    for i in picks.tolist():
        try:
            size = header_size(encoded(i))
        except Exception:  # an unreadable image is the readers' business, reported where it is decoded
            size = None
        if size is not None:
            sizes.append(size)
    return sizes


def face_size_warning(source: str, sizes: Sequence[tuple[int, int]], side: int) -> str | None:
    """The warning for stored image `sizes` (width, height) read by a model of input side `side`: None when
    every one is `side` x `side`, else what was found and how to make aligned crops."""
    odd = [s for s in sizes if s != (side, side)]
    if not odd:
        return None
    (w, h), n = Counter(odd).most_common(1)[0]
    shape = "not square, " if any(a != b for a, b in odd) else ""
    return (f"{source}: {len(odd)} of {len(sizes)} sampled images are {shape}not {side} x {side} (most often "
            f"{w} x {h}); they are resized to {side} x {side}, which keeps aligned crops usable but turns whole "
            f"photos into poor faces (a teacher's LFW accuracy fell from 0.941 to 0.669 that way): {ALIGN_HINT}")


def warn_face_size(dataset: FaceDataset, side: int) -> str | None:
    """Log `face_size_warning` for a data set read by a model of input side `side`, and return it; the synthetic
    generator renders at the asked side and is not checked."""
    if dataset.fmt == "synthetic":
        return None
    warning = face_size_warning(f"{dataset.fmt} data set '{dataset.root}'",
                                sample_sizes(len(dataset), dataset.encoded), side)
    if warning:
        log.warning("%s", warning)
    return warning
