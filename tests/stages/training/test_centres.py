"""`stages.training.centres`: MarginDistillation's teacher centres, from the cache once, then read back."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import stages.training.centres as centres_module
from cache import TeacherCache
from stages.training.centres import CENTRES_FILE, centres_key, compute_centres, read_centres, write_centres
from tests.conftest import invoke
from tests.stages.training.test_pairs import TableTargets


def _reference(table: np.ndarray, labels: np.ndarray, rows: np.ndarray, num_classes: int) -> np.ndarray:
    """normalize(mean over the class's rows and both views of normalize(t)), zero for a class without rows."""
    out = np.zeros((num_classes, table.shape[-1]))
    for c in range(num_classes):
        mine = [r for r in rows if labels[r] == c]
        if mine:
            t = table[mine].reshape(-1, table.shape[-1]).astype(np.float64)
            mean = (t / np.linalg.norm(t, axis=1, keepdims=True)).mean(axis=0)
            out[c] = mean / np.linalg.norm(mean)
    return out


def test_chunks_of_whole_classes_match_one_pass() -> None:
    torch.manual_seed(0)
    table = F.normalize(torch.randn(20, 2, 5), dim=-1)
    labels = np.array([3, 0, 1, 1, 0, 3, 3, 0, 1, 4, 4, 0, 1, 3, 0, 4, 1, 0, 3, 1])
    rows = np.array([0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 12, 14, 15, 17, 18])  # class 2 has no row at all
    want = _reference(table.numpy(), labels, rows, 5)
    for chunk in (1, 3, 7, 1000):
        got = compute_centres(TableTargets(table), rows, labels, 5, chunk_rows=chunk)
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f"chunk_rows={chunk}")
    assert not got[2].any()


def test_read_centres_refuses_another_key_shape_or_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / CENTRES_FILE
    assert read_centres(path, "k", (2, 3)) is None
    write_centres(path, np.ones((2, 3), dtype=np.float32), "k")
    assert read_centres(path, "k", (2, 3)) is not None
    assert read_centres(path, "other", (2, 3)) is None and read_centres(path, "k", (3, 3)) is None
    path.write_bytes(b"PK not a zip")
    assert read_centres(path, "k", (2, 3)) is None
    assert centres_key({"a": 1}, np.arange(3), np.zeros(3, np.int64), 1, 3) != \
        centres_key({"a": 2}, np.arange(3), np.zeros(3, np.int64), 1, 3)


def test_distill_computes_the_centres_once_from_the_cache_and_reuses_them(
        extracted: tuple[Path, list[str], dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import models

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the teacher was built")

    monkeypatch.setattr(models, "build_teacher", forbidden)
    run, settings, _ = extracted
    cache_path = run / "cache" / "teacher.h5"
    s = settings + [f"run.dir={tmp_path}", f"cache.path={cache_path}", 'loss.method="margindistillation"',
                    "train.steps=2", "train.checkpoint_every=1"]
    code, out, _ = invoke("distill", s)
    assert code == 0, out
    path = tmp_path / CENTRES_FILE
    with TeacherCache(cache_path) as cache:
        table = np.stack([cache.read_view(0), cache.read_view(1)], axis=1)
        labels, rows = np.asarray(cache.labels), np.flatnonzero(cache.done)
    with np.load(path) as z:
        stored, key = z["centres"], str(z["key"])
    np.testing.assert_allclose(stored, _reference(table, labels, rows, 8), atol=1e-5)

    def recompute(*args: object, **kwargs: object) -> None:
        raise AssertionError("the centres were computed again")

    monkeypatch.setattr(centres_module, "compute_centres", recompute)
    for extra in ("--overwrite", "--resume"):
        code, out, _ = invoke("distill", s + ["train.steps=3"] if extra == "--resume" else s, extra)
        assert code == 0, (extra, out)
    monkeypatch.undo()
    write_centres(path, np.zeros_like(stored), "another cache")
    code, out, _ = invoke("distill", s, "--overwrite")
    assert code == 0, out
    with np.load(path) as z:
        np.testing.assert_array_equal(z["centres"], stored)
        assert str(z["key"]) == key
