"""Face alignment: a photo (or loose crop) and its five landmarks -> the ArcFace 112x112 aligned face.

The one home of the template, the transform and the warp, used by `align` (photos, after detection)
and by IJB evaluation (loose crops with given landmarks). As insightface aligns IJB crops: the
similarity transform (rotation, uniform scale, shift) that maps the five landmarks onto the ArcFace
reference points in the least-squares sense (Umeyama's estimate, by
`skimage.transform.SimilarityTransform`), then a bilinear warp with a constant black border. insightface
warps with OpenCV's `warpAffine`, whose fixed-point bilinear weights can differ from this float warp by
one grey level; pixel centres are at integer coordinates in both. `align` may shrink a photo first
(`shrink_for_warp`) so that a bilinear warp never samples a face much larger than 112 px too sparsely.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from skimage.transform import SimilarityTransform, warp

from common.errors import ConfigError
from readers.base import MAX_IMAGE_PIXELS

ALIGNED_SIZE = 112
WINDOW_MARGIN = 2  # pixels kept around the input window that an aligned face samples (`warp_similarity`)
# ArcFace's five reference points (x, y) in pixels of the 112x112 aligned face: left eye, right eye,
# nose tip, left and right mouth corners.
ARCFACE_TEMPLATE = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)


def similarity_to_template(landmarks: np.ndarray, template: np.ndarray = ARCFACE_TEMPLATE) -> np.ndarray:
    """The least-squares similarity from landmark to template coordinates, as a 3x3 matrix (float64).

    landmarks, template: [5, 2] (x, y) in pixels; returns M with [x', y', 1] = M @ [x, y, 1], x, y in the
    loose crop and x', y' in the aligned face. ValueError when the points do not determine a
    similarity (e.g. all five equal, or not finite).
    """
    src = np.asarray(landmarks, dtype=np.float64)
    dst = np.asarray(template, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2:
        raise ValueError(f"landmarks {src.shape} and template {dst.shape} must both be [K, 2]")
    if not np.isfinite(src).all():
        raise ValueError("landmarks must be finite")
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        tform = SimilarityTransform.from_estimate(src, dst)
        ok = bool(tform)
    else:  # pragma: no cover - scikit-image 0.22 .. 0.25
        tform = SimilarityTransform()
        ok = bool(tform.estimate(src, dst))
    params = getattr(tform, "params", None)
    if not ok or params is None or not np.isfinite(params).all() or abs(np.linalg.det(params[:2, :2])) < 1e-12:
        raise ValueError(f"cannot estimate a similarity transform from landmarks {src.tolist()}")
    return np.array(params, dtype=np.float64)


def _source_window(matrix: np.ndarray, shape: tuple[int, ...], size: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the input pixels that output [size, size] of `matrix` can sample, with a margin.

    The box around M^-1 of the output's corner pixel centres (an affine map sends the output square to
    a parallelogram spanned by them), widened by WINDOW_MARGIN pixels and clipped to the image. Empty
    (x1 <= x0 or y1 <= y0) when the output lies wholly outside the image.
    """
    last = size - 1
    corners = np.array([[0.0, 0.0, 1.0], [last, 0.0, 1.0], [0.0, last, 1.0], [last, last, 1.0]])
    corners = corners @ np.linalg.inv(matrix).T
    height, width = shape[0], shape[1]
    x0 = max(math.floor(corners[:, 0].min()) - WINDOW_MARGIN, 0)
    y0 = max(math.floor(corners[:, 1].min()) - WINDOW_MARGIN, 0)
    x1 = min(math.ceil(corners[:, 0].max()) + WINDOW_MARGIN + 1, width)
    y1 = min(math.ceil(corners[:, 1].max()) + WINDOW_MARGIN + 1, height)
    return x0, y0, x1, y1


def warp_similarity(image: np.ndarray, matrix: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """Warp uint8 [H, W, 3] by `matrix` (3x3, input -> output pixel coordinates) to uint8 [size, size, 3].

    Output pixel (x', y') takes the bilinear interpolation of the input at M^-1 [x', y', 1]; outside the
    input it is 0. Values are rounded to the nearest integer.

    Only the window of the input that the output can sample (`_source_window`) is passed to the warp,
    with the matrix shifted to match: every output pixel reads the same four neighbours, with the same
    weights and the same out-of-image zeros (the window's edges are the image's edges or lie at least
    WINDOW_MARGIN pixels beyond any sample), so the result is the whole image's warp while the cost no
    longer grows with the size of the loose crop. The warp's own clip to the input range is skipped: a
    bilinear value of integer pixels lies within their range, so after rounding it changes nothing.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    x0, y0, x1, y1 = _source_window(matrix, image.shape, size)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), dtype=np.uint8)
    shifted = matrix @ np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])  # window -> output
    inverse = SimilarityTransform(matrix=np.linalg.inv(shifted))
    out = warp(image[y0:y1, x0:x1], inverse, output_shape=(size, size), order=1, mode="constant", cval=0.0,
               preserve_range=True, clip=False)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """A loose crop uint8 [H, W, 3] RGB and its landmarks [5, 2] (x, y pixels) -> aligned uint8 [size, size, 3].

    The template is ARCFACE_TEMPLATE scaled by size / 112 (insightface's rule for other sizes).
    """
    matrix = similarity_to_template(landmarks, ARCFACE_TEMPLATE * (size / ALIGNED_SIZE))
    return warp_similarity(image, matrix, size)


def matrix_scale(matrix: np.ndarray) -> float:
    """The uniform scale of a similarity (3x3): output pixels per input pixel."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:2, :2]))))


def shrink_for_warp(image: np.ndarray, matrix: np.ndarray, max_shrink: float, size: int = ALIGNED_SIZE
                    ) -> tuple[np.ndarray, np.ndarray]:
    """When `matrix` shrinks the face by more than `max_shrink` (scale < 1 / max_shrink), area-average the
    window the warp samples down so that the warp itself scales by about 1 / max_shrink.

    A bilinear warp reads 4 input pixels per output pixel, so a face shrunk 3x would be sampled, not
    averaged (aliasing). Returns (image, matrix) to warp instead: the same face at the same place of the
    output. The area filter is Pillow's BOX (OpenCV's INTER_AREA for shrinking). Unchanged when the
    scale is already at least 1 / max_shrink or max_shrink <= 0.
    """
    scale = matrix_scale(matrix)
    if max_shrink <= 0 or scale * max_shrink >= 1.0:
        return image, matrix
    x0, y0, x1, y1 = _source_window(matrix, image.shape, size)
    if x1 <= x0 or y1 <= y0:
        return image, matrix
    factor = scale * max_shrink
    window = image[y0:y1, x0:x1]
    width, height = max(1, round((x1 - x0) * factor)), max(1, round((y1 - y0) * factor))
    small = np.asarray(Image.fromarray(window).resize((width, height), Image.Resampling.BOX), dtype=np.uint8)
    # small pixel (u, v) covers window pixels around ((u + 0.5) / fx - 0.5, (v + 0.5) / fy - 0.5)
    fx, fy = width / (x1 - x0), height / (y1 - y0)
    small_to_image = np.array([[1.0 / fx, 0.0, x0 + 0.5 / fx - 0.5], [0.0, 1.0 / fy, y0 + 0.5 / fy - 0.5],
                               [0.0, 0.0, 1.0]])
    return small, np.asarray(matrix) @ small_to_image


def align_photo(image: np.ndarray, landmarks: np.ndarray, max_shrink: float, size: int = ALIGNED_SIZE
                ) -> tuple[np.ndarray, np.ndarray]:
    """`align_face` for a whole photo: (aligned uint8 [size, size, 3], the 3x3 photo -> face matrix),
    shrinking the photo first where the face is more than `max_shrink` times too large (`shrink_for_warp`)."""
    matrix = similarity_to_template(landmarks, ARCFACE_TEMPLATE * (size / ALIGNED_SIZE))
    small, small_matrix = shrink_for_warp(image, matrix, max_shrink, size)
    return warp_similarity(small, small_matrix, size), matrix


# The fixed crop for a photo with no qualifying face (`align.fallback = "center_crop"`): a square of side
# `align.crop_side` x the photo's shorter side, centred horizontally and with its centre CENTRE_CROP_Y of
# the shorter side from the top. The defaults are LFW's frames (250 px: x0 = 60.9, y0 = 53.3, side 128.3,
# where a centred face sits roughly in the template); tight face crops (CFP) want a side near 1.
CENTRE_CROP_SIDE = 0.5132
CENTRE_CROP_Y = 0.4698


def centre_crop_matrix(width: int, height: int, side_fraction: float = CENTRE_CROP_SIDE,
                       size: int = ALIGNED_SIZE) -> np.ndarray:
    """The 3x3 matrix (scale and shift only) that maps the fixed centre square of a width x height photo
    (side `side_fraction` of the shorter side) onto the size x size output."""
    short = float(min(width, height))
    side = side_fraction * short
    x0 = width / 2.0 - side / 2.0
    y0 = CENTRE_CROP_Y * short + (height - short) / 2.0 - side / 2.0
    scale = size / side
    return np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale], [0.0, 0.0, 1.0]])


def decode_rgb(data: bytes, name: str, max_pixels: int | None = None, upright: bool = False) -> np.ndarray:
    """Encoded image bytes as uint8 [H, W, 3] RGB at their own size; `name` is what errors call the image.

    upright: turn the image as its EXIF orientation tag says (phone photos; OpenCV's imread does the
    same). ConfigError naming the image when it cannot be decoded or has more than `max_pixels` pixels
    (default `readers.base.MAX_IMAGE_PIXELS`, checked from the header before decoding).
    """
    limit = MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > limit:
                raise ConfigError(f"image {name} is too large: {width} x {height} pixels > {limit}")
            im.load()
            turned = ImageOps.exif_transpose(im) if upright else im
            rgb = np.asarray(turned if turned.mode == "RGB" else turned.convert("RGB"), dtype=np.uint8)
    except ConfigError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise ConfigError(f"image {name} cannot be read or decoded: {e}") from None
    return rgb


def load_rgb(path: str | os.PathLike[str], max_pixels: int | None = None) -> np.ndarray:
    """An image file as uint8 [H, W, 3] RGB at its own size (`decode_rgb`; ConfigError naming the file)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"image {path} cannot be read or decoded: {e.strerror or e}") from None
    return decode_rgb(data, str(path), max_pixels)
