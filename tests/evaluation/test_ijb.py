"""IJB-B / IJB-C 1:1 verification (`evaluation.ijb`) against straightforward loops written here.

`write_ijb_root` makes a small release in insightface's layout from synthetic faces: each loose crop is a
112x112 face warped by a known similarity into a larger canvas, with the template mapped by the same
similarity as its landmarks. The stage test of `evaluate` uses it too.
"""
from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignment.warp import ARCFACE_TEMPLATE, align_face
from common.errors import ConfigError, PipelineError
from evaluation.ijb import IjbOptions, detect_ijb_name, evaluate_ijb, read_ijb_layout
from evaluation.ijb.embed import embed_in_chunks
from evaluation.ijb.metrics import IJB_FARS, ijb_metrics, thin_roc
from evaluation.ijb.pooling import image_features, template_features
from evaluation.ijb.scores import cosine_scores, template_rows
from readers.synthetic import SyntheticDataset
from tests.alignment.test_warp import apply, forward_warp, similarity

FAR_KEYS = ["1e-6", "1e-5", "1e-4", "1e-3", "1e-2", "1e-1"]
ALL_OPTIONS = list(itertools.product([True, False], repeat=3))


@dataclass
class WrittenIjb:
    root: Path
    lines: list[tuple[str, int, int]]  # tid_mid: (image, template, media)
    landmarks: dict[str, np.ndarray]
    scores: dict[str, float]
    pairs: list[tuple[int, int, int]]
    identity_of_template: dict[int, int]


def write_ijb_root(root: Path, name: str = "ijbc", identities: int = 8, templates_per_identity: int = 3,
                   seed: int = 0) -> WrittenIjb:
    """A release with `identities` x `templates_per_identity` templates of 1-3 media of 1-3 images each,
    every template pair listed (label = same identity). One image belongs to two templates, media ids
    are shared between templates of one identity, and the landmark file is in another order."""
    rng = np.random.default_rng(seed)
    faces = SyntheticDataset(identities, 6, 112, seed=1000 + seed, difficulty=1.0)
    (root / "loose_crop").mkdir(parents=True)
    (root / "meta").mkdir()
    lines: list[tuple[str, int, int]] = []
    landmarks: dict[str, np.ndarray] = {}
    scores: dict[str, float] = {}
    identity_of_template: dict[int, int] = {}
    for ident in range(identities):
        for k in range(templates_per_identity):
            template = 100 + 7 * (ident * templates_per_identity + k)
            identity_of_template[template] = ident
            for m in range(int(rng.integers(1, 4))):
                media = 5000 + 10 * ident + (m if k % 2 else m + 1)  # shared by the templates of an identity
                for _ in range(int(rng.integers(1, 4))):
                    image = f"{len(landmarks) + 1}.png"
                    s_matrix = similarity(rng.uniform(1.2, 1.6), rng.uniform(-20, 20), rng.uniform(55, 70),
                                          rng.uniform(20, 35))
                    crop = forward_warp(faces.render(ident, int(rng.integers(6))), s_matrix, (240, 240))
                    Image.fromarray(crop).save(root / "loose_crop" / image)
                    landmarks[image] = apply(s_matrix, ARCFACE_TEMPLATE) + rng.normal(0, 0.3, (5, 2))
                    scores[image] = float(rng.uniform(0.3, 1.0))
                    lines.append((image, template, media))
    first = lines[0][0]
    lines.append((first, lines[-1][1], lines[-1][2]))  # one image in two templates
    templates = list(identity_of_template)
    pairs = [(a, b, int(identity_of_template[a] == identity_of_template[b]))
             for a, b in itertools.combinations(templates, 2)]
    (root / "meta" / f"{name}_face_tid_mid.txt").write_text("".join(f"{i} {t} {m}\n" for i, t, m in lines))
    (root / "meta" / f"{name}_template_pair_label.txt").write_text("".join(f"{a} {b} {c}\n" for a, b, c in pairs))
    order = rng.permutation(list(landmarks))
    (root / "meta" / f"{name}_name_5pts_score.txt").write_text("".join(
        f"{n} " + " ".join(f"{v:.4f}" for v in landmarks[n].ravel()) + f" {scores[n]:.4f}\n" for n in order))
    landmarks = {n: np.round(p, 4) for n, p in landmarks.items()}
    scores = {n: round(s, 4) for n, s in scores.items()}
    return WrittenIjb(root, lines, landmarks, scores, pairs, identity_of_template)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> WrittenIjb:
    return write_ijb_root(tmp_path_factory.mktemp("IJBC"))


def pixel_embedder(dim: int = 24, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A fixed random projection of 4x4-pooled pixels, for images and flips: uint8 [B, 112, 112, 3] -> [B, 2, dim]."""
    proj = np.random.default_rng(seed).normal(size=(28 * 28 * 3, dim)).astype(np.float32)

    def embed(images: np.ndarray) -> np.ndarray:
        def one(x: np.ndarray) -> np.ndarray:
            pooled = x.astype(np.float32).reshape(len(x), 28, 4, 28, 4, 3).mean(axis=(2, 4)) / 255.0
            return (pooled.reshape(len(x), -1) - 0.5) @ proj
        return np.stack([one(images), one(images[:, :, ::-1])], axis=1)

    return embed


# ---- reference loops --------------------------------------------------------------------------------------

def loop_image_feature(v0: np.ndarray, v1: np.ndarray, score: float, flip: bool, norm: bool, det: bool) -> np.ndarray:
    f = (v0 + v1) if flip else v0.copy()
    if not norm:
        f = f / np.linalg.norm(f)
    if det:
        f = f * score
    return f.astype(np.float64)


def loop_template_features(feats: np.ndarray, templates: list[int], medias: list[int]) -> dict[int, np.ndarray]:
    """Per template: the mean of each media's features, summed over media, then unit length."""
    out = {}
    for t in sorted(set(templates)):
        rows = [i for i, tt in enumerate(templates) if tt == t]
        total = np.zeros(feats.shape[1])
        for m in sorted({medias[i] for i in rows}):
            total += np.mean([feats[i] for i in rows if medias[i] == m], axis=0)
        out[t] = total / np.linalg.norm(total)
    return out


def loop_tar(scores: np.ndarray, labels: np.ndarray, far: float) -> float | None:
    impostors = sorted((float(s) for s, y in zip(scores, labels, strict=True) if not y), reverse=True)
    genuine = [float(s) for s, y in zip(scores, labels, strict=True) if y]
    k = int(math.floor(far * len(impostors) + 1e-9))
    if k < 1:
        return None
    return sum(g > impostors[k] for g in genuine) / len(genuine)


def loop_roc(scores: np.ndarray, labels: np.ndarray) -> list[tuple[float, float]]:
    """(fpr, tpr) for every threshold t in the distinct scores, accepting score >= t, from (0, 0)."""
    genuine = sorted(float(s) for s, y in zip(scores, labels, strict=True) if y)
    impostor = sorted(float(s) for s, y in zip(scores, labels, strict=True) if not y)
    points = [(0.0, 0.0)]
    for t in sorted({float(s) for s in scores}, reverse=True):
        points.append(((len(impostor) - bisect.bisect_left(impostor, t)) / len(impostor),
                       (len(genuine) - bisect.bisect_left(genuine, t)) / len(genuine)))
    return points


def loop_eval_ijbc_readout(scores: np.ndarray, labels: np.ndarray, fars: tuple[float, ...]) -> list[float]:
    """insightface's eval_ijbc.py read-out, written out: scikit-learn's roc_curve (one point per distinct
    score from the highest, collinear points dropped, (0, 0) first), both arrays flipped, then for each FAR
    `min(zip(abs(fpr - far), range(len(fpr))))` and the TPR at that index."""
    pairs = sorted(zip((float(s) for s in scores), (bool(y) for y in labels), strict=True), key=lambda p: -p[0])
    fps, tps, tp, fp = [], [], 0, 0
    for i, (score, same) in enumerate(pairs):
        tp, fp = tp + same, fp + (not same)
        if i == len(pairs) - 1 or pairs[i + 1][0] != score:
            fps.append(fp)
            tps.append(tp)
    keep = [0] + [i for i in range(1, len(fps) - 1)
                  if fps[i - 1] - 2 * fps[i] + fps[i + 1] != 0 or tps[i - 1] - 2 * tps[i] + tps[i + 1] != 0]
    keep.append(len(fps) - 1)
    fpr = [0.0] + [fps[i] / fps[-1] for i in keep]
    tpr = [0.0] + [tps[i] / tps[-1] for i in keep]
    fpr, tpr = fpr[::-1], tpr[::-1]
    out = []
    for far in fars:
        _, index = min(zip([abs(f - far) for f in fpr], range(len(fpr)), strict=True))
        out.append(tpr[index])
    return out


def loop_record(views: np.ndarray, written: WrittenIjb, names: list[str], flip: bool, norm: bool, det: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) by the loops, from views [N, 2, D] of `names`."""
    index = {n: i for i, n in enumerate(names)}
    feats = np.stack([loop_image_feature(views[index[n], 0], views[index[n], 1], written.scores[n], flip, norm, det)
                      for n, _, _ in written.lines])
    tfeats = loop_template_features(feats, [t for _, t, _ in written.lines], [m for _, _, m in written.lines])
    scores = np.array([float(tfeats[a] @ tfeats[b]) for a, b, _ in written.pairs])
    return scores, np.array([c == 1 for _, _, c in written.pairs])


# ---- layout -----------------------------------------------------------------------------------------------

def test_layout_is_read_as_written(written: WrittenIjb) -> None:
    layout = read_ijb_layout(written.root)
    assert layout.name == "ijbc" == detect_ijb_name(written.root)
    assert len(layout.images) == len(written.landmarks) == len(written.lines) - 1
    assert [layout.images[i] for i in layout.image_index] == [n for n, _, _ in written.lines]
    assert layout.templates.tolist() == [t for _, t, _ in written.lines]
    assert layout.medias.tolist() == [m for _, _, m in written.lines]
    for k, name in enumerate(layout.images):
        np.testing.assert_allclose(layout.landmarks[k], written.landmarks[name], atol=1e-9)
        assert layout.detector_scores[k] == pytest.approx(written.scores[name])
    assert list(zip(layout.pair_t1.tolist(), layout.pair_t2.tolist(), layout.pair_labels.astype(int).tolist(),
                    strict=True)) == written.pairs


def _copy_meta(written: WrittenIjb, dest: Path) -> Path:
    (dest / "loose_crop").mkdir(parents=True)
    (dest / "meta").mkdir()
    for p in (written.root / "meta").iterdir():
        (dest / "meta" / p.name).write_bytes(p.read_bytes())
    return dest


def test_a_root_with_neither_or_both_names_is_refused(written: WrittenIjb, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"'{tmp_path}'.*neither"):
        detect_ijb_name(tmp_path)
    both = _copy_meta(written, tmp_path / "both")
    (both / "meta" / "ijbb_face_tid_mid.txt").write_text("1.png 1 1\n")
    with pytest.raises(ConfigError, match="both"):
        read_ijb_layout(both)
    no_crops = tmp_path / "no_crops"
    (no_crops / "meta").mkdir(parents=True)
    (no_crops / "meta" / "ijbb_face_tid_mid.txt").write_text("1.png 1 1\n")
    with pytest.raises(ConfigError, match="loose_crop"):
        read_ijb_layout(no_crops)


@pytest.mark.parametrize("file, content, message", [
    ("ijbc_template_pair_label.txt", "100 107 1\n100 114\n", "line 2"),
    ("ijbc_template_pair_label.txt", "100 107 1\n\n100 x 0\n", "line 3.*template_id_2"),
    ("ijbc_template_pair_label.txt", "100 107 2\n", "line 1: label must be 0 or 1"),
    ("ijbc_template_pair_label.txt", "100 107 1\n100 99999 0\n", "template 99999"),
    ("ijbc_face_tid_mid.txt", "1.png 100 5000\n2.png 100\n", "line 2"),
    ("ijbc_face_tid_mid.txt", "1.png 100 5000\n../x.png 100 5000\n", "line 2.*inside"),
    ("ijbc_face_tid_mid.txt", "1.png 100 5000\nnope.png 100 5000\n", "line 2: image 'nope.png' has no landmarks"),
    ("ijbc_name_5pts_score.txt", "1.png 1 2 3 4 5 6 7 8 9 10\n", "line 1"),
    ("ijbc_name_5pts_score.txt", "1.png 1 2 3 4 5 6 7 8 9 nan 0.9\n", "line 1.*finite"),
])
def test_malformed_meta_lines_are_named(written: WrittenIjb, tmp_path: Path, file: str, content: str,
                                        message: str) -> None:
    root = _copy_meta(written, tmp_path / "root")
    (root / "meta" / file).write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        read_ijb_layout(root)
    assert file in str(info.value)


# ---- pooling and scores -----------------------------------------------------------------------------------

@pytest.mark.parametrize("flip, norm, det", ALL_OPTIONS)
def test_pooling_and_scores_match_the_loop(flip: bool, norm: bool, det: bool) -> None:
    rng = np.random.default_rng(7)
    n, dim = 300, 16
    views = rng.normal(size=(n, 2, dim)).astype(np.float32) * rng.uniform(0.5, 3.0, (n, 1, 1)).astype(np.float32)
    det_scores = rng.uniform(0.1, 1.0, n)
    templates = rng.choice(np.arange(10, 400, 13), n)
    medias = rng.integers(0, 12, n)  # the same media id recurs across templates
    feats = image_features(views, det_scores, flip, norm, det)
    expected_feats = np.stack([loop_image_feature(views[i, 0], views[i, 1], det_scores[i], flip, norm, det)
                               for i in range(n)])
    np.testing.assert_allclose(feats, expected_feats, rtol=1e-5, atol=1e-6)
    ids, unit = template_features(feats, templates, medias)
    expected = loop_template_features(expected_feats, templates.tolist(), medias.tolist())
    assert ids.tolist() == sorted(expected)
    np.testing.assert_allclose(unit, np.stack([expected[t] for t in ids.tolist()]), atol=1e-6)
    t1, t2 = rng.choice(ids, 500), rng.choice(ids, 500)
    scores = cosine_scores(unit, template_rows(ids, t1), template_rows(ids, t2), chunk=7)
    np.testing.assert_allclose(scores, [expected[a] @ expected[b] for a, b in zip(t1, t2, strict=True)], atol=1e-6)
    with pytest.raises(ValueError, match="template 5"):
        template_rows(ids, np.array([ids[0], 5]))


def test_a_zero_feature_stays_zero() -> None:
    views = np.zeros((2, 2, 4), np.float32)
    views[1] = 1.0
    feats = image_features(views, np.array([0.5, 0.0]), True, False, True)
    assert np.isfinite(feats).all() and not feats.any()
    _, unit = template_features(feats, np.array([1, 2]), np.array([0, 0]))
    assert not unit.any()


# ---- metrics ----------------------------------------------------------------------------------------------

def test_tar_at_far_keys_and_values_match_a_direct_computation() -> None:
    rng = np.random.default_rng(11)
    genuine = np.round(rng.normal(0.6, 0.15, 3000), 3)
    impostor = np.round(rng.normal(0.0, 0.12, 300_000), 3)  # rounded: many ties
    scores = np.r_[genuine, impostor]
    labels = np.r_[np.ones(genuine.size, bool), np.zeros(impostor.size, bool)]
    perm = rng.permutation(scores.size)
    scores, labels = scores[perm], labels[perm]
    record, fpr, tpr = ijb_metrics(scores, labels)
    assert list(record["tar_at_far"]) == FAR_KEYS == list(record["tar_at_far_bounded"])
    points = loop_roc(scores, labels)
    np.testing.assert_allclose(np.c_[fpr, tpr], points, atol=1e-12)
    insightface = loop_eval_ijbc_readout(scores, labels, IJB_FARS)
    for key, far, expected in zip(FAR_KEYS, IJB_FARS, insightface, strict=True):
        assert record["tar_at_far"][key] == expected, key  # every FAR, 1e-6 (below 1 / impostors) included
        bounded = record["tar_at_far_bounded"][key]
        if far * impostor.size < 1:
            assert bounded is None, key
            continue
        assert bounded == pytest.approx(loop_tar(scores, labels, far), abs=1e-12), key
        accepted_impostors = max(f for f, t in points if t == bounded and f <= far + 1e-12)
        assert accepted_impostors <= far  # the project's rule is an operating point at or below the FAR
    assert record["tar_at_far_bounded"]["1e-6"] is None and record["tar_at_far"]["1e-6"] is not None
    trapezoid = sum((f1 - f0) * (t1 + t0) / 2 for (f0, t0), (f1, t1) in itertools.pairwise(points))
    assert record["auc"] == pytest.approx(trapezoid, abs=1e-9)
    thin_f, thin_t = thin_roc(fpr, tpr, 400)
    assert thin_f.size <= 402 and thin_f[0] == 0 and thin_f[-1] == 1 and np.all(np.diff(thin_f) >= 0)


def test_insightface_reading_on_a_straight_run_of_the_roc_takes_the_later_point_of_sklearn_s_curve() -> None:
    # scores 0.9, 0.8, 0.7 each held by one genuine and one impostor pair, then 97 impostors: the ROC points
    # (1, 1), (2, 2), (3, 3) (counts) lie on one line, so scikit-learn keeps (1, 1) and (3, 3) only; at
    # FAR = 2 / 100 both are equally near and the flipped read-out takes (3, 3): TPR 3 / 3, where the
    # full curve's point (2, 2) would give 2 / 3
    scores = np.r_[[0.9, 0.9, 0.8, 0.8, 0.7, 0.7], np.linspace(0.5, 0.0, 97)]
    labels = np.r_[[True, False] * 3, np.zeros(97, bool)]
    record, _, _ = ijb_metrics(scores, labels, (0.02, 0.5))
    assert record["tar_at_far"] == {"2e-2": 1.0, "5e-1": 1.0}
    assert loop_eval_ijbc_readout(scores, labels, (0.02,)) == [1.0]
    assert record["tar_at_far_bounded"]["2e-2"] == pytest.approx(2 / 3)  # above 0.7: 2 impostors, 2 genuine


# ---- the whole protocol -----------------------------------------------------------------------------------

def _aligned_views(written: WrittenIjb, names: list[str]) -> np.ndarray:
    embed = pixel_embedder()
    images = np.stack([align_face(np.asarray(Image.open(written.root / "loose_crop" / n).convert("RGB")),
                                  written.landmarks[n]) for n in names])
    return embed(images)


@pytest.mark.parametrize("flip, norm, det", ALL_OPTIONS)
def test_evaluate_ijb_matches_the_loop(written: WrittenIjb, tmp_path_factory: pytest.TempPathFactory,
                                       flip: bool, norm: bool, det: bool) -> None:
    work = tmp_path_factory.getbasetemp() / "ijb_work_all_options"  # shared: the options do not change the chunks
    result = evaluate_ijb(written.root, pixel_embedder(), work, {"model": "pixels"}, IjbOptions(flip, norm, det),
                          chunk_size=10, batch_size=4)
    names = read_ijb_layout(written.root).images
    scores, labels = loop_record(_aligned_views(written, names), written, names, flip, norm, det)
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)
    record = result.record
    assert record["templates"] == len(written.identity_of_template) == 24
    assert record["template_pairs"] == len(written.pairs) == 276
    assert record["images"] == len(names)
    assert list(record["tar_at_far"]) == FAR_KEYS == list(record["tar_at_far_bounded"])
    n_neg = int((~labels).sum())
    insightface = loop_eval_ijbc_readout(result.scores, labels, IJB_FARS)
    for key, far, read in zip(FAR_KEYS, IJB_FARS, insightface, strict=True):
        assert record["tar_at_far"][key] == pytest.approx(read), key
        expected = loop_tar(result.scores, labels, far)
        assert record["tar_at_far_bounded"][key] == (None if far * n_neg < 1 else pytest.approx(expected)), key
    genuine, impostor = scores[labels], scores[~labels]
    mann_whitney = np.mean([(g > i) + 0.5 * (g == i) for g in genuine for i in impostor])
    assert record["auc"] == pytest.approx(mann_whitney, abs=1e-3)  # scores agree to 1e-5, not bit for bit
    assert record["auc"] > 0.6  # the synthetic identities are told apart


def test_embedding_resumes_with_the_missing_chunks_only(written: WrittenIjb, tmp_path: Path) -> None:
    embed = pixel_embedder()
    calls: list[int] = []

    def failing(images: np.ndarray) -> np.ndarray:
        if len(calls) == 2:
            raise RuntimeError("killed")
        calls.append(len(images))
        return embed(images)

    work = tmp_path / "work"
    with pytest.raises(RuntimeError, match="killed"):
        evaluate_ijb(written.root, failing, work, {"model": "pixels"}, chunk_size=8, batch_size=8)
    done = sorted(work.glob("chunk_*.npy"))
    assert [p.name for p in done] == ["chunk_000000.npy", "chunk_000001.npy"]
    stamps = [p.stat().st_mtime_ns for p in done]
    seen: list[int] = []

    def counting(images: np.ndarray) -> np.ndarray:
        seen.append(len(images))
        return embed(images)

    resumed = evaluate_ijb(written.root, counting, work, {"model": "pixels"}, chunk_size=8, batch_size=8)
    count = len(read_ijb_layout(written.root).images)
    assert sum(seen) == count - 16 and [p.stat().st_mtime_ns for p in done] == stamps
    fresh = evaluate_ijb(written.root, embed, tmp_path / "fresh", {"model": "pixels"}, chunk_size=8, batch_size=8,
                         workers=2)  # images loaded by two threads
    np.testing.assert_array_equal(resumed.scores, fresh.scores)
    assert resumed.record == fresh.record
    seen.clear()
    evaluate_ijb(written.root, counting, work, {"model": "pixels"}, chunk_size=8, batch_size=8)
    assert seen == []  # everything done: nothing embedded again
    evaluate_ijb(written.root, counting, work, {"model": "another"}, chunk_size=8, batch_size=8)
    assert sum(seen) == count  # another model: the old chunks are discarded


def test_model_outputs_are_checked(tmp_path: Path) -> None:
    def load(i: int) -> np.ndarray:
        return np.zeros((112, 112, 3), np.uint8)

    with pytest.raises(PipelineError, match=r"expected views \[4, 2, D\]"):
        embed_in_chunks(load, 4, lambda im: np.zeros((len(im), 8)), tmp_path / "a", {}, batch_size=4)
    with pytest.raises(PipelineError, match="not finite"):
        embed_in_chunks(load, 4, lambda im: np.full((len(im), 2, 8), np.nan), tmp_path / "b", {}, batch_size=4)


def test_a_byte_order_mark_is_allowed_in_ijb_text_files_as_in_list_files(tmp_path: Path) -> None:
    from evaluation.ijb.layout import read_landmarks, read_tid_mid

    marks = tmp_path / "ijbc_name_5pts_score.txt"
    marks.write_bytes("\ufeff1.jpg 1 2 3 4 5 6 7 8 9 10 0.9\n".encode())
    assert list(read_landmarks(marks)) == ["1.jpg"]
    tid_mid = tmp_path / "ijbc_face_tid_mid.txt"
    tid_mid.write_bytes("\ufeff1.jpg 1 2\n".encode())
    assert read_tid_mid(tid_mid)[0] == ["1.jpg"]
