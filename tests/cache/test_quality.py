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
