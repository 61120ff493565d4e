"""`evaluation.ijb.embed`: batches in order and within chunks, loading overlapped with the model, errors, resume.

The whole IJB protocol through `embed_in_chunks` (and its resume after a crash) is tested in test_ijb.py;
here the loader and `embed_views` are instrumented fakes. Image i is uint8 [2, 2, 3] holding i in its
first two bytes, and the fake model returns i as both views, so every chunk can be checked row by row.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError
from evaluation.ijb.embed import PREFETCH_BATCHES, chunk_path, embed_in_chunks

WAIT_S = 10.0  # how long a fake model waits for a load that prefetching must have started


def image(i: int) -> np.ndarray:
    out = np.zeros((2, 2, 3), np.uint8)
    out[0, 0, 0], out[0, 0, 1] = i % 256, i // 256
    return out


def index_of(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, 0].astype(np.int64) + 256 * images[:, 0, 0, 1].astype(np.int64)


def views_of(images: np.ndarray) -> np.ndarray:
    idx = index_of(images).astype(np.float32)
    return np.stack([idx, -idx], axis=1)[:, :, None] + np.zeros((1, 1, 3), np.float32)


def chunk_rows(work: Path, chunks: int) -> list[int]:
    return [int(v) for c in range(chunks) for v in np.load(chunk_path(work, c))[:, 0, 0]]


class Recorder:
    """`load` and `embed_views` that log what was loaded by the time each model call starts."""

    def __init__(self, wait_for_next: int = 0) -> None:
        self.lock = threading.Lock()
        self.started: list[int] = []  # image indices whose load started, in order
        self.calls: list[tuple[list[int], set[int]]] = []  # (images of the call, loads started before it ended)
        self.wait_for_next = wait_for_next  # the image count: each call but the last waits for the next batch
        self.next_started = threading.Condition(self.lock)

    def load(self, i: int) -> np.ndarray:
        with self.lock:
            self.started.append(i)
            self.next_started.notify_all()
        return image(i)

    def embed(self, images: np.ndarray) -> np.ndarray:
        batch = index_of(images).tolist()
        if batch[-1] + 1 < self.wait_for_next:  # the next batch must start loading while this call runs
            with self.lock:
                self.next_started.wait_for(lambda: any(i > batch[-1] for i in self.started), timeout=WAIT_S)
        with self.lock:
            self.calls.append((batch, set(self.started)))
        return views_of(images)


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_batches_are_in_order_and_never_span_two_chunks(tmp_path: Path, workers: int) -> None:
    rec = Recorder()
    files = embed_in_chunks(rec.load, 23, rec.embed, tmp_path, {}, chunk_size=10, batch_size=4, workers=workers)
    assert files == [chunk_path(tmp_path, c) for c in range(3)]
    assert [b for b, _ in rec.calls] == [list(range(s, min(s + 4, e))) for c0, e in ((0, 10), (10, 20), (20, 23))
                                         for s in range(c0, e, 4)]
    assert chunk_rows(tmp_path, 3) == list(range(23))
    assert [np.load(f).shape for f in files] == [(10, 2, 3), (10, 2, 3), (3, 2, 3)]
    assert sorted(rec.started) == list(range(23))  # every image loaded once


@pytest.mark.parametrize("workers", [1, 2])
def test_the_next_batch_loads_while_the_model_runs(tmp_path: Path, workers: int) -> None:
    """Prefetching: during each model call but the last, the next batch (also across a chunk end) is loading,
    and no more than PREFETCH_BATCHES batches ahead have been started (memory stays bounded)."""
    rec = Recorder(wait_for_next=20)
    embed_in_chunks(rec.load, 20, rec.embed, tmp_path, {}, chunk_size=8, batch_size=4, workers=workers)
    assert [b[0] for b, _ in rec.calls] == [0, 4, 8, 12, 16]
    for batch, started in rec.calls[:-1]:
        assert max(started) > batch[-1], f"nothing after image {batch[-1]} was loading during its batch"
        assert max(started) < batch[-1] + 1 + 4 * PREFETCH_BATCHES, f"loaded too far ahead of batch {batch}"
    assert chunk_rows(tmp_path, 3) == list(range(20))


def test_without_workers_images_load_between_the_model_calls(tmp_path: Path) -> None:
    rec = Recorder()
    embed_in_chunks(rec.load, 12, rec.embed, tmp_path, {}, chunk_size=12, batch_size=4, workers=0)
    assert [max(started) for _, started in rec.calls] == [3, 7, 11]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failing_load_raises_and_keeps_the_finished_chunks(tmp_path: Path, workers: int) -> None:
    def load(i: int) -> np.ndarray:
        if i == 13:
            raise ConfigError("image 13 cannot be read")
        return image(i)

    before = threading.active_count()
    with pytest.raises(ConfigError, match="image 13"):
        embed_in_chunks(load, 30, views_of, tmp_path, {}, chunk_size=8, batch_size=4, workers=workers)
    assert sorted(p.name for p in tmp_path.glob("chunk_*.npy")) == ["chunk_000000.npy"]
    assert chunk_rows(tmp_path, 1) == list(range(8))
    assert threading.active_count() == before  # the loader threads are gone


def test_a_failing_model_call_with_loads_in_flight_raises_and_stops_the_loaders(tmp_path: Path) -> None:
    calls: list[int] = []

    def embed(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        if len(calls) == 3:
            raise RuntimeError("model failed")
        return views_of(images)

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="model failed"):
        embed_in_chunks(image, 40, embed, tmp_path, {}, chunk_size=8, batch_size=4, workers=2)
    assert [p.name for p in tmp_path.glob("chunk_*.npy")] == ["chunk_000000.npy"]
    assert threading.active_count() == before


def test_a_resume_loads_only_the_missing_chunks(tmp_path: Path) -> None:
    embed_in_chunks(image, 20, views_of, tmp_path, {"m": 1}, chunk_size=8, batch_size=4, workers=2)
    chunk_path(tmp_path, 1).unlink()
    rec = Recorder()
    embed_in_chunks(rec.load, 20, rec.embed, tmp_path, {"m": 1}, chunk_size=8, batch_size=4, workers=2)
    assert sorted(rec.started) == list(range(8, 16))
    assert chunk_rows(tmp_path, 3) == list(range(20))


def test_a_reused_chunk_that_is_not_finite_is_embedded_again(tmp_path: Path) -> None:
    embed_in_chunks(image, 20, views_of, tmp_path, {"m": 1}, chunk_size=8, batch_size=4, workers=2)
    broken = np.load(chunk_path(tmp_path, 1))
    np.save(chunk_path(tmp_path, 1), np.full_like(broken, np.nan))  # a chunk a broken model wrote
    rec = Recorder()
    embed_in_chunks(rec.load, 20, rec.embed, tmp_path, {"m": 1}, chunk_size=8, batch_size=4, workers=2)
    assert sorted(rec.started) == list(range(8, 16))
    assert chunk_rows(tmp_path, 3) == list(range(20))
