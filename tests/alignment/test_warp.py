"""`alignment.warp`: similarity estimate to the ArcFace template and the 112x112 warp."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.transform import ProjectiveTransform, warp

from alignment.warp import (
    ARCFACE_TEMPLATE,
    CENTRE_CROP_Y,
    align_face,
    align_photo,
    centre_crop_matrix,
    decode_rgb,
    load_rgb,
    shrink_for_warp,
    similarity_to_template,
    warp_similarity,
)
from common.errors import ConfigError


def similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    """3x3 matrix of x -> scale * R(degrees) x + (tx, ty)."""
    c, s = scale * math.cos(math.radians(degrees)), scale * math.sin(math.radians(degrees))
    return np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return (np.c_[points, np.ones(len(points))] @ matrix.T)[:, :2]


def smooth_image(height: int, width: int) -> np.ndarray:
    """A low-frequency colour pattern: bilinear interpolation of it is nearly exact."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = [np.sin(x / 9.0) * np.cos(y / 11.0), np.sin((x + y) / 13.0), np.cos((x - 2 * y) / 17.0)]
    return np.clip(np.rint(127.5 + 100 * np.stack(channels, -1)), 0, 255).astype(np.uint8)


def forward_warp(image: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The test's own loose crop: output(p) = image(matrix^-1 p), bilinear."""
    out = warp(image, ProjectiveTransform(matrix=np.linalg.inv(matrix)), output_shape=shape, order=1,
               preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def test_identity_landmarks_leave_an_aligned_face_unchanged() -> None:
    face = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    np.testing.assert_allclose(similarity_to_template(ARCFACE_TEMPLATE), np.eye(3), atol=1e-9)
    np.testing.assert_array_equal(align_face(face, ARCFACE_TEMPLATE), face)


@pytest.mark.parametrize("params", [(1.6, 25.0, 30.0, 12.0), (0.7, -40.0, 5.0, 60.0), (2.3, 170.0, 300.0, 40.0)])
def test_landmarks_of_a_known_similarity_map_back_to_the_template(params: tuple[float, float, float, float]) -> None:
    s_matrix = similarity(*params)
    landmarks = apply(s_matrix, ARCFACE_TEMPLATE)
    estimated = similarity_to_template(landmarks)
    np.testing.assert_allclose(estimated, np.linalg.inv(s_matrix), atol=1e-9)
    np.testing.assert_allclose(apply(estimated, landmarks), ARCFACE_TEMPLATE, atol=1e-9)


def test_aligning_a_warped_face_gives_the_face_back() -> None:
    face = smooth_image(112, 112)
    s_matrix = similarity(1.7, 20.0, 80.0, 25.0)  # the whole face inside the crop
    loose = forward_warp(face, s_matrix, (280, 270))
    aligned = align_face(loose, apply(s_matrix, ARCFACE_TEMPLATE))
    inner = (slice(1, -1), slice(1, -1))  # the outermost pixels mix in the black beyond the warped face
    diff = np.abs(aligned[inner].astype(int) - face[inner].astype(int))
    assert diff.mean() < 0.1 and diff.max() <= 2


def test_the_warp_equals_scikit_image_s_warp_of_the_whole_loose_crop() -> None:
    """`warp_similarity` reads only the window of the crop the face samples; the result is the whole crop's warp
    bit for bit: faces inside, across an edge or a corner, wholly outside, shrunk, enlarged, any rotation."""
    rng = np.random.default_rng(21)
    kinds = {"inside": 0, "across an edge": 0, "outside": 0}
    for case in range(90):
        height, width = (int(v) for v in rng.integers(80, 420, 2))
        crop = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)  # noise: every neighbour matters
        size = np.array([width, height])
        if case % 3 == 0:  # inside: the rotated face's diagonal fits in the crop
            scale = float(rng.uniform(0.4, min(width, height) / (112 * 1.45)))
            centre = size / 2 + rng.uniform(-2, 2, 2)
        elif case % 3 == 1:  # across an edge or a corner
            scale = float(rng.uniform(0.4, 3.5))
            centre = rng.uniform(0.0, 1.0, 2) * size
            axis = int(rng.integers(2))
            centre[axis] = rng.choice([0.0, 1.0]) * size[axis]
        else:  # wholly outside
            scale = float(rng.uniform(0.4, 3.5))
            centre = size / 2 + rng.choice([-1, 1], 2) * (size / 2 + 112 * scale)
        s_matrix = similarity(scale, float(rng.uniform(-180, 180)), 0.0, 0.0)
        s_matrix[:2, 2] = centre - s_matrix[:2, :2] @ [55.5, 55.5]  # aligned face -> crop, its centre at `centre`
        matrix = np.linalg.inv(s_matrix)  # crop -> aligned face, as `align_face` estimates it
        expected = forward_warp(crop, matrix, (112, 112))
        np.testing.assert_array_equal(warp_similarity(crop, matrix), expected)
        box = apply(s_matrix, np.array([[0.0, 0.0], [111, 0], [0, 111], [111, 111]]))
        inside = (box.min(0) >= 0).all() and (box.max(0) <= [width - 1, height - 1]).all()
        outside = (box.max(0) < -1).any() or (box.min(0) > [width, height]).any()
        kinds["inside" if inside else "outside" if outside else "across an edge"] += 1
        if outside:
            assert not expected.any()
    assert min(kinds.values()) >= 20, kinds


def test_dots_at_the_landmarks_land_on_the_template() -> None:
    """Gaussian dots drawn at the loose-crop landmarks end up at the template points after alignment."""
    s_matrix = similarity(1.4, -15.0, 20.0, 35.0)
    landmarks = apply(s_matrix, ARCFACE_TEMPLATE)
    y, x = np.mgrid[0:230, 0:220].astype(np.float64)
    sigma = 1.4 * 1.5  # 1.5 px after alignment
    dots = sum(np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * sigma ** 2)) for px, py in landmarks)
    loose = np.repeat(np.rint(255 * np.clip(dots, 0, 1))[..., None], 3, axis=2).astype(np.uint8)
    aligned = align_face(loose, landmarks)[..., 0].astype(np.float64)
    ay, ax = np.mgrid[0:112, 0:112].astype(np.float64)
    for tx, ty in ARCFACE_TEMPLATE:
        window = (np.abs(ax - tx) <= 5) & (np.abs(ay - ty) <= 5)
        weight = aligned * window
        centre = np.array([(weight * ax).sum(), (weight * ay).sum()]) / weight.sum()
        assert np.linalg.norm(centre - [tx, ty]) < 0.25


def test_noisy_landmarks_give_the_least_squares_similarity() -> None:
    """x' = a x - b y + tx, y' = b x + a y + ty fitted by linear least squares (the test's own solver)."""
    rng = np.random.default_rng(3)
    landmarks = apply(similarity(1.3, 10.0, 15.0, 9.0), ARCFACE_TEMPLATE) + rng.normal(0, 2.0, (5, 2))
    rows, rhs = [], []
    for (x, y), (u, v) in zip(landmarks, ARCFACE_TEMPLATE, strict=True):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    expected = np.array([[a, -b, tx], [b, a, ty], [0, 0, 1]])
    np.testing.assert_allclose(similarity_to_template(landmarks), expected, atol=1e-9)


@pytest.mark.parametrize("mode, suffix", [("RGB", ".png"), ("RGB", ".jpg"), ("L", ".png"), ("RGBA", ".png"),
                                           ("P", ".png"), ("CMYK", ".jpg")])
def test_images_of_any_mode_load_as_rgb(tmp_path: Path, mode: str, suffix: str) -> None:
    pixels = smooth_image(30, 40)
    path = tmp_path / f"face{suffix}"
    Image.fromarray(pixels).convert(mode).save(path)
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB"))
    loaded = load_rgb(path)
    assert loaded.dtype == np.uint8 and loaded.shape == (30, 40, 3)
    np.testing.assert_array_equal(loaded, expected)


def test_degenerate_landmarks_and_bad_images_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        similarity_to_template(np.full((5, 2), 7.0))
    with pytest.raises(ValueError):
        similarity_to_template(np.full((5, 2), np.nan))
    bad = tmp_path / "1.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="1.jpg"):
        load_rgb(bad)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_rgb(tmp_path / "missing.jpg")


def test_shrinking_first_keeps_the_geometry_and_averages_what_a_bare_warp_would_alias() -> None:
    # a face 4x too large: the template scaled by 4 and shifted into a 600 x 600 photo
    matrix = similarity(0.25, 10.0, -20.0, -15.0)  # photo -> face
    landmarks = apply(np.linalg.inv(matrix), ARCFACE_TEMPLATE)
    smooth = np.kron(smooth_image(150, 150), np.ones((4, 4, 1), np.uint8))  # low frequency at the photo's scale
    shrunk, _ = align_photo(smooth, landmarks, max_shrink=1.5)
    bare, estimated = align_photo(smooth, landmarks, max_shrink=0.0)
    assert np.allclose(estimated, matrix, atol=1e-9)
    assert np.abs(shrunk.astype(int) - bare.astype(int)).mean() < 2.0  # same place, same content
    checker = np.where((np.add.outer(np.arange(600), np.arange(600)) % 2)[..., None], 255, 0).astype(np.uint8)
    checker = np.repeat(checker, 3, axis=2)
    averaged, _ = align_photo(checker, landmarks, max_shrink=1.5)
    aliased, _ = align_photo(checker, landmarks, max_shrink=0.0)
    inner = (slice(20, 92), slice(20, 92))
    assert np.abs(averaged[inner].astype(float) - 127.5).mean() < 10  # an even grey, as an area filter gives
    assert np.abs(aliased[inner].astype(float) - 127.5).mean() > 30  # samples of black and white
    small, same = shrink_for_warp(smooth, similarity(0.8, 0.0, 0.0, 0.0), 1.5)
    assert small is smooth and np.array_equal(same, similarity(0.8, 0.0, 0.0, 0.0))  # 1 / 0.8 < 1.5: untouched


def test_centre_crop_maps_the_fixed_square_onto_the_output() -> None:
    m = centre_crop_matrix(250, 250)
    x0, y0, side = 60.9, 53.3, 128.3  # the crop the aligned LFW DevTrain set used, in its 250 px frames
    corners = apply(m, np.array([[x0, y0], [x0 + side, y0 + side]]))
    assert np.allclose(corners, [[0, 0], [112, 112]], atol=0.05)
    wide = centre_crop_matrix(400, 250)  # centred horizontally on a wide photo
    assert np.allclose(apply(wide, np.array([[x0 + 75, y0]])), [[0, 0]], atol=0.05)
    whole = centre_crop_matrix(200, 200, 1.0)  # a tight face crop: nearly the whole photo
    assert np.allclose(apply(whole, np.array([[0.0, 200 * (CENTRE_CROP_Y - 0.5)], [200, 200 * (CENTRE_CROP_Y + 0.5)]])),
                       [[0, 0], [112, 112]])


def test_decode_turns_a_photo_upright_by_its_exif_orientation() -> None:
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :20] = 255  # left half white
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif, quality=100)
    assert decode_rgb(buf.getvalue(), "x.jpg").shape == (20, 40, 3)
    upright = decode_rgb(buf.getvalue(), "x.jpg", upright=True)
    assert upright.shape == (40, 20, 3) and upright[:20].mean() > 200 and upright[20:].mean() < 50
    with pytest.raises(ConfigError, match="x.jpg"):
        decode_rgb(b"not an image", "x.jpg")
