"""`extract` end to end through click's CliRunner on a tiny synthetic set."""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.conftest import REPO, invoke, tiny_settings


def test_extract_writes_complete_cache_and_summary(extracted: tuple[Path, list[str], dict]) -> None:
    run, _settings, summary = extracted
    assert summary["rows"] == 48 and summary["skipped"] == 0
    assert Path(summary["index"]).exists() and Path(summary["report"]).exists()
    assert json.loads((run / "extract.json").read_text()) == summary
    with h5py.File(summary["cache"], "r") as f:
        emb = f["embeddings"][...]
        assert emb.shape == (48, 2, 32)
        assert np.allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)
        assert f["done"][...].all()
        assert f["positives"].shape == (48, 3)
        assert "config_hash" in f.attrs


def test_extract_again_reuses_finished_cache(extracted: tuple[Path, list[str], dict]) -> None:
    _run, settings, first = extracted
    code, out, summary = invoke("extract", settings)
    assert code == 0, out
    assert summary["reused"] is True and summary["cache"] == first["cache"]


def test_extract_usage_errors_exit_2(tmp_path: Path, teacher_weights: Path) -> None:
    code, out, _ = invoke("extract", tiny_settings(tmp_path / "a", tmp_path / "missing.pth"))
    assert code == 2 and "teacher.weights" in out
    code, out, _ = invoke("extract", tiny_settings(tmp_path / "b", teacher_weights) + ["teacher.embedding_size=64"])
    assert code == 2 and "teacher.embedding_size" in out
    (tmp_path / "empty").mkdir()
    code, out, _ = invoke("extract", tiny_settings(tmp_path / "c", teacher_weights)
                          + ["data.format=folder", f"data.root={tmp_path / 'empty'}"])
    assert code == 2 and "empty" in out
    code, out, _ = invoke("extract", tiny_settings(tmp_path / "d", teacher_weights) + ["train.nosuch=1"])
    assert code == 2 and "train.nosuch" in out
    assert not list(tmp_path.rglob("teacher.h5"))


def test_extract_skips_corrupt_image_unless_strict(tmp_path: Path, teacher_weights: Path) -> None:
    from readers.synthetic import SyntheticDataset, write_pair_set

    source = SyntheticDataset(6, 4, 16, seed=5, difficulty=1.0)
    faces = Path(write_pair_set(source, tmp_path / "faces", 20, seed=0)).parent
    (faces / "pairs.txt").unlink()
    bad = sorted(faces.glob("*/*.png"))[5]
    bad.write_bytes(b"not an image")
    key = bad.relative_to(faces).as_posix()
    settings = tiny_settings(tmp_path / "run", teacher_weights) + ["data.format=folder", f"data.root={faces}",
                                                                   "train.batch_size=8"]
    code, out, _ = invoke("extract", settings + [f"run.dir={tmp_path / 'strict'}",
                                                 f"cache.path={tmp_path / 'strict' / 't.h5'}"], "--strict")
    assert code == 1 and key in out and "not an image" in out
    assert not (tmp_path / "strict" / "t.h5").exists()
    code, out, summary = invoke("extract", settings)
    assert code == 0, out
    assert summary["rows"] == 23 and summary["skipped"] == 1
    assert f"skipping unreadable image: row 5, key {key}: not an image" in out
    report = json.loads(Path(summary["report"]).read_text())
    assert key in json.dumps(report["skipped"])
    with h5py.File(summary["cache"], "r") as f:
        done = f["done"][...]
        keys = [k.decode() if isinstance(k, bytes) else k for k in f["keys"][...]]
    assert not done[keys.index(key)] and done.sum() == 23
    code, out, summary = invoke("distill", settings + [f"run.dir={tmp_path / 'd'}", "train.steps=2",
                                                       f"cache.path={tmp_path / 'run' / 'cache' / 'teacher.h5'}"])
    assert code == 0, out


def test_extract_rebuilds_missing_index_without_redoing_the_cache(extracted: tuple[Path, list[str], dict]) -> None:
    _run, settings, first = extracted
    before = Path(first["cache"]).stat().st_mtime_ns
    Path(first["index"]).unlink()
    code, out, summary = invoke("extract", settings)
    assert code == 0, out
    assert summary["reused"] is True and Path(summary["index"]).exists()
    assert Path(first["cache"]).stat().st_mtime_ns == before


def test_extract_refuses_a_finished_cache_with_corrupted_embeddings(tmp_path: Path, teacher_weights: Path) -> None:
    settings = tiny_settings(tmp_path / "run", teacher_weights) + ["cache.chunk_rows=8"]
    code, out, summary = invoke("extract", settings)
    assert code == 0, out
    with h5py.File(summary["cache"], "r+") as f:  # a row of norm 5 instead of 1: the bytes changed on disk
        f["embeddings"][30] = 5.0 * f["embeddings"][30]
    code, out, _ = invoke("extract", settings)
    assert code == 2, out
    assert summary["cache"] in out and "rows 24..31" in out and "delete it" in out
    assert "Traceback" not in out


def test_extract_rebuilds_an_index_of_random_bytes(extracted: tuple[Path, list[str], dict]) -> None:
    from cache import load_index

    _run, settings, first = extracted
    before = Path(first["cache"]).stat().st_mtime_ns
    Path(first["index"]).write_bytes(np.random.default_rng(0).bytes(4096))
    code, out, summary = invoke("extract", settings)
    assert code == 0, out
    assert summary["reused"] is True and "nothing to do" not in out
    assert load_index(summary["index"]).ntotal == 48
    assert Path(first["cache"]).stat().st_mtime_ns == before


def test_extract_removes_temporaries_left_by_killed_writers(extracted: tuple[Path, list[str], dict]) -> None:
    import subprocess
    import sys

    _run, settings, first = extracted
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    folder = Path(first["cache"]).parent
    stale = folder / f".teacher.h5.{child.pid}.x.tmp"
    live = folder / f".teacher.h5.{os.getpid()}.y.tmp"
    for p in (stale, live):
        p.write_bytes(b"\0" * 4096)
    code, out, _ = invoke("extract", settings)
    assert code == 0, out
    assert not stale.exists() and live.exists()
    live.unlink()


@pytest.mark.parametrize("value", [0.0, float("nan")])
def test_a_teacher_giving_zero_or_nan_outputs_is_named(tmp_path: Path, teacher_weights: Path, value: float,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import models.embedder

    real = models.embedder.TorchEmbedder._forward

    def broken(self: models.embedder.TorchEmbedder, batch: torch.Tensor) -> torch.Tensor:
        out = real(self, batch)
        return torch.full_like(out, value) if batch.shape[0] > 1 else out  # the one-image probe stays fine

    monkeypatch.setattr(models.embedder.TorchEmbedder, "_forward", broken)
    code, out, _ = invoke("extract", tiny_settings(tmp_path, teacher_weights))
    assert code == 1, out
    assert "output for row 0" in out and "view norms" in out and "Traceback" not in out


def test_a_pq_size_that_does_not_divide_the_embedding_is_refused_before_the_teacher_runs(
        tmp_path: Path, teacher_weights: Path) -> None:
    code, out, _ = invoke("extract", tiny_settings(tmp_path, teacher_weights)
                          + ['cache.index="ivfpq"', "cache.pq_m=7"])
    assert code == 2 and "cache.pq_m" in out and "32" in out
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_a_two_process_extract_equals_the_one_process_cache_bit_for_bit(tmp_path: Path, teacher_weights: Path) -> None:
    from cache import cache_file
    from common.distributed import Dist
    from config import load_config
    from models import build_teacher
    from readers import build_dataset
    from stages.extract import cache_attrs, cache_fingerprint, extract_shard
    from tests.helpers.torchrun import summaries, torchrun

    def settings(name: str) -> list[str]:
        return tiny_settings(tmp_path / name, teacher_weights) + ["cache.dtype=float16", "teacher.batch_size=8"]

    code, out, one = invoke("extract", settings("one"))
    assert code == 0, out
    # rank 1's share written before the launch, as an interrupted launch leaves it: the launch resumes it
    cfg = load_config(REPO / "pipeline.toml", settings("two"))
    dataset, teacher = build_dataset(cfg.data), build_teacher(cfg.teacher, cfg.data.image_size, "cpu")
    attrs = cache_attrs(cfg, cache_fingerprint(cfg, dict(dataset.describe(), image_size=cfg.data.image_size),
                                               teacher.fingerprint()))
    out_file = cache_file(cfg.cache.path, cfg.run.dir)
    assert extract_shard(cfg, dataset, attrs, teacher, out_file, Dist(1, 2), torch.device("cpu"), False) == 24
    done = torchrun("extract", settings("two"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rows 24..47, 0 pending" in done.stderr  # rank 1 found its share done
    found = summaries(done.stdout)
    assert len(found) == 1 and found[0]["rows"] == one["rows"] == 48
    two = tmp_path / "two" / "cache"
    assert sorted(p.name for p in two.iterdir() if "shard" in p.name) == []  # shards merged and removed
    with h5py.File(one["cache"], "r") as a, h5py.File(found[0]["cache"], "r") as b:
        assert set(a) == set(b)
        for name in a:
            assert a[name].dtype == b[name].dtype and np.array_equal(a[name][()], b[name][()]), name
        for attr in ("teacher", "dataset", "embedding_dim", "dtype"):  # the fingerprint (run.dir differs)
            assert a.attrs[attr] == b.attrs[attr], attr
    assert Path(found[0]["index"]).exists() and Path(found[0]["report"]).exists()


def test_extract_writes_its_log_and_a_quality_summary(extracted: tuple[Path, list[str], dict]) -> None:
    run, _settings, summary = extracted
    text = (run / "extract.log").read_text()
    assert "quality report" in text and "mean pairwise cosine" in text and "wrote" in text
    report = json.loads(Path(summary["report"]).read_text())
    assert report["single_image_identities"] == 0 and report["mean_pairwise_cosine"] < 0.9


def _collapsed_teacher(path: Path) -> Path:
    """A TorchScript 'teacher' whose output hardly depends on the image, as a mis-preprocessed one behaves."""

    class Collapsed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones(x.shape[0], 32) + 1e-3 * x.flatten(1)[:, :32]

    torch.jit.script(Collapsed()).save(str(path))
    return path


def test_a_teacher_that_tells_no_faces_apart_is_named_and_refused_under_strict(tmp_path: Path) -> None:
    weights = _collapsed_teacher(tmp_path / "collapsed.pt")
    settings = tiny_settings(tmp_path / "run", weights) + ["teacher.arch=torchscript"]
    code, out, _ = invoke("extract", settings)
    assert code == 0, out
    warning = [ln for ln in out.splitlines() if "nearly identical across images" in ln]
    assert len(warning) == 2  # after the first batch, and on the whole cache's sample
    for key in ("teacher.mean", "teacher.std", "teacher.color", "teacher.input_layout", "--strict"):
        assert key in warning[0]
    code, out, _ = invoke("extract", tiny_settings(tmp_path / "strict", weights) + ["teacher.arch=torchscript"],
                          "--strict")
    assert code == 1 and "nearly identical" in out and "Traceback" not in out
    assert not (tmp_path / "strict" / "cache" / "teacher.h5").exists()
    last = (tmp_path / "strict" / "extract.log").read_text().strip().splitlines()[-1]
    assert " ERROR " in last and "nearly identical" in last  # the log file ends with why the command stopped


def test_a_working_teacher_gets_no_spread_warning(extracted: tuple[Path, list[str], dict]) -> None:
    run, _settings, _summary = extracted
    assert "nearly identical" not in (run / "extract.log").read_text()


def test_photos_of_another_size_are_named_with_the_fix(tmp_path: Path, teacher_weights: Path) -> None:
    from readers.synthetic import SyntheticDataset, write_pair_set

    faces = Path(write_pair_set(SyntheticDataset(4, 4, 32, seed=5, difficulty=1.0), tmp_path / "faces", 20,
                                seed=0)).parent
    (faces / "pairs.txt").unlink()
    settings = tiny_settings(tmp_path / "run", teacher_weights) + ["data.format=folder", f"data.root={faces}"]
    code, out, _ = invoke("extract", settings)
    assert code == 0, out
    assert "not 16 x 16 (most often 32 x 32)" in out and "aligned" in out
