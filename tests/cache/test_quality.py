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
