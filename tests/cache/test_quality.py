"""`cache.quality`: the quality report finds an injected mislabeled row."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cache import build_index, quality_report


def test_quality_report_finds_an_injected_mislabeled_row() -> None:
    rng = np.random.default_rng(11)
    centres = rng.standard_normal((6, 32))
    labels = np.repeat(np.arange(6), 12)
    emb = centres[labels] + 0.6 * rng.standard_normal((72, 32))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    keys = [f"id{lab}/{i}.jpg" for i, lab in enumerate(labels)]
    noisy = labels.copy()
    noisy[30] = 4  # an image of identity 2 filed under identity 4
    index = build_index(emb)
    report = quality_report(emb, noisy, keys, index=index, skipped_keys=["id5/bad.jpg"])
    json.dumps(report)
    assert report["rows"] == 72 and report["identities"] == 6
    assert report["skipped"] == ["id5/bad.jpg"] and report["skipped_count"] == 1
    assert report["suspected_count"] == 1
    (suspect,) = report["suspected_label_noise"]
    assert suspect["key"] == keys[30] and suspect["label"] == 4 and suspect["nearest_label"] == 2
    assert suspect["nearest_cosine"] > suspect["own_cosine"]
    assert suspect["neighbour_agreement"] < 0.5
    table = {row["label"]: row for row in report["identity_compactness"]}
    assert table[4]["count"] == 13 and table[2]["count"] == 11
    assert table[4]["compactness"] < table[2]["compactness"]
    want = np.mean([np.mean(emb[noisy == c] @ (s := emb[noisy == c].sum(0)) / np.linalg.norm(s)) for c in range(6)])
    assert report["mean_compactness"] == pytest.approx(want, abs=1e-4)


def _noisy_faces(seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, 32))
    labels = np.repeat(np.arange(30), 8)
    emb = centres[labels] + 0.7 * rng.standard_normal((240, 32))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    noisy = labels.copy()
    noisy[[5, 77, 150]] = [9, 20, 3]
    return emb, noisy, [f"k{i}" for i in range(240)]


def test_streamed_report_from_a_file_view_equals_the_array_report() -> None:
    from cache.rows import ViewRows

    emb, labels, keys = _noisy_faces(3)
    labels[[40, 41]] = -1  # skipped rows are left out of everything
    want = quality_report(np.delete(emb, [40, 41], 0), np.delete(labels, [40, 41]),
                          [k for i, k in enumerate(keys) if i not in (40, 41)])
    views = np.stack([emb, emb], axis=1)
    got = quality_report(ViewRows(views, chunk_rows=16), labels, keys, block_rows=17)
    assert got == want
    assert got["rows"] == 238 and got["suspected_count"] >= 3


def test_ivf_centre_search_finds_the_same_suspects_here() -> None:
    emb, labels, keys = _noisy_faces(4)
    exact = quality_report(emb, labels, keys)
    approx = quality_report(emb, labels, keys, exact_centres=1)
    assert {s["key"] for s in exact["suspected_label_noise"]} >= {"k5", "k77", "k150"}
    assert approx["suspected_label_noise"] == exact["suspected_label_noise"]


def test_pca_ivf_centre_search_above_the_exact_limit_finds_mislabeled_rows() -> None:
    rng = np.random.default_rng(6)
    groups = rng.standard_normal((8, 144))
    centres = groups[rng.integers(0, 8, 300)] + 0.5 * rng.standard_normal((300, 144))
    labels = np.repeat(np.arange(300), 4)
    emb = centres[labels] + 0.3 * rng.standard_normal((1200, 144))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    noisy = labels.copy()
    noisy[[3, 500, 1001]] = [150, 7, 299]
    keys = [f"k{i}" for i in range(1200)]
    exact = quality_report(emb, noisy, keys)
    approx = quality_report(emb, noisy, keys, exact_centres=100)
    found = {s["key"] for s in approx["suspected_label_noise"]}
    assert {"k3", "k500", "k1001"} <= found <= {s["key"] for s in exact["suspected_label_noise"]}
    assert approx["identity_compactness"] == exact["identity_compactness"]


def test_single_image_identities_are_neither_scored_nor_suspected() -> None:
    """A lone row's leave-one-out centre is nothing; float rounding must not turn it into a suspect (it did:
    own_cosine -0.0001 for 2,056 of 4,799 LFW rows)."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((40, 64))
    labels = np.r_[np.repeat(np.arange(10), 6), np.arange(10, 40)]  # 10 identities x 6, then 30 singletons
    emb = centres[labels] + 0.4 * rng.standard_normal((len(labels), 64))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)
    report = quality_report(emb, labels, [str(i) for i in range(len(labels))])
    assert report["identities"] == 40 and report["single_image_identities"] == 30
    assert {row["label"] for row in report["identity_compactness"]} == set(range(10))
    assert all(s["label"] < 10 for s in report["suspected_label_noise"])
    sums = [emb[labels == c].sum(0) for c in range(10)]
    want = np.mean([np.mean(emb[labels == c] @ s / np.linalg.norm(s)) for c, s in enumerate(sums)])
    assert report["mean_compactness"] == pytest.approx(want, abs=1e-4)


def test_mean_pairwise_cosine_against_a_loop() -> None:
    from cache.quality import mean_pairwise_cosine, spread_rows

    rng = np.random.default_rng(0)
    e = rng.standard_normal((7, 5))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    naive = np.mean([e[i] @ e[j] for i in range(7) for j in range(7) if i != j])
    assert mean_pairwise_cosine(e) == pytest.approx(naive, abs=1e-12)
    assert mean_pairwise_cosine(np.tile(e[:1], (4, 1))) == pytest.approx(1.0)
    assert np.isnan(mean_pairwise_cosine(e[:1]))
    assert spread_rows(10, 4).tolist() == [0, 3, 6, 9] and spread_rows(3, 10).tolist() == [0, 1, 2]


def test_the_report_states_the_teachers_spread() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(20), 3)
    good = rng.standard_normal((60, 16)).astype(np.float32)
    good /= np.linalg.norm(good, axis=1, keepdims=True)
    collapsed = good * 0.01 + 1.0
    collapsed /= np.linalg.norm(collapsed, axis=1, keepdims=True)
    keys = [str(i) for i in range(60)]
    assert abs(quality_report(good, labels, keys)["mean_pairwise_cosine"]) < 0.2
    assert quality_report(collapsed, labels, keys)["mean_pairwise_cosine"] > 0.99
