"""Stage one (`python cli.py extract`): run the teacher once, write the HDF5 cache and the FAISS index.

Decoding runs in DataLoader workers while the main process runs the teacher; embeddings of the image
and of its horizontal flip are written in blocks, with the `done` mask making the run resumable.

Under `torchrun --nproc_per_node N` each rank runs the teacher over its own contiguous share of rows
(`shard_range`: shares are whole teacher batches, so every image meets the same batch as in one
process) into its own shard work file, `teacher.shard<r>-of-<N>.h5.partial`, resumable like the single
file. When every rank is done, rank 0 merges the shards into the one cache file (a plain HDF5 file, no
virtual datasets: readers and checksums stay as they are), builds positives, index and report once,
and deletes the shards. The cache then equals a one-process extraction's bit for bit.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cache import (
    CacheWriter,
    TeacherCache,
    build_index,
    build_positives,
    cache_file,
    config_path,
    identity_csr,
    index_path,
    load_index,
    partial_path,
    quality_path,
    quality_report,
    save_index,
    shard_path,
)
from cache.index import resolve_kind
from cache.quality import COLLAPSED_COSINE, SPREAD_SAMPLE, mean_pairwise_cosine
from cache.rows import SubsetRows
from cache.shards import merge_shard, shard_range
from checkpoints import seed_everything
from common.atomic import atomic_write_text, remove_stale_temporaries
from common.distributed import Dist, device_for
from common.errors import ConfigError, PipelineError
from common.progress import progress
from common.version import VERSION
from config import PipelineConfig, config_hash, save_resolved
from models import Embedder, build_teacher
from models.device import resolve_device
from readers import build_dataset
from readers.face_size import warn_face_size
from readers.torch_rows import ImageRows

log = logging.getLogger(__name__)

TOOL_VERSION = VERSION


def cache_fingerprint(cfg: PipelineConfig, dataset_info: dict[str, Any],
                      teacher_info: dict[str, Any]) -> dict[str, Any]:
    """The attributes a cache must share with a later run: teacher, data listing, dimension, dtype."""
    return {
        "teacher": teacher_info,
        "dataset": dataset_info,
        "embedding_dim": cfg.teacher.embedding_size,
        "dtype": cfg.cache.dtype,
    }


def cache_attrs(cfg: PipelineConfig, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The attributes a new cache (or shard) is written with: its fingerprint, the config hash, the tool version."""
    return dict(fingerprint, config_hash=config_hash(cfg), tool_version=TOOL_VERSION)


def _embed_views(teacher: Embedder, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm teacher views of the images and their horizontal flips, [B, 2, D], and their norms [B, 2]."""
    views = teacher.embed_views(images)
    norms = torch.linalg.vector_norm(views, dim=-1)
    return torch.nn.functional.normalize(views, dim=-1).numpy(), norms.numpy()


def run_extract(cfg: PipelineConfig, strict: bool = False) -> dict[str, Any]:
    """Extract (or resume, or reuse) the teacher cache described by `cfg`; returns the JSON summary."""
    seed_everything(cfg.run.seed)
    dataset = build_dataset(cfg.data)
    n = len(dataset)
    if n == 0:
        raise ConfigError(f"data set '{cfg.data.root or cfg.data.format}' (data.root) holds no images")
    resolve_kind(cfg.cache.index, n, cfg.teacher.embedding_size, cfg.cache.pq_m)  # refuse a bad pq_m now
    device = resolve_device(cfg.run.device)
    dist = Dist.from_env(device.type)
    device = device_for(device, dist)
    teacher = build_teacher(cfg.teacher, cfg.data.image_size, str(device))
    out = cache_file(cfg.cache.path, cfg.run.dir)
    idx_file = index_path(out)
    report_file = quality_path(out)
    fingerprint = cache_fingerprint(cfg, dict(dataset.describe(), image_size=cfg.data.image_size),
                                    teacher.fingerprint())

    if dist.main:
        warn_face_size(dataset, teacher.preprocessing.input_size)
        for final in (out, partial_path(out)):  # temporaries of killed writes (a finalisation copy: the cache's size)
            remove_stale_temporaries(final)
    if out.exists():
        dist.close()  # rank 0 checks and reuses it alone
        rows_done = _reuse(cfg, out, fingerprint, strict) if dist.main else 0
        return _summary(out, idx_file, report_file, rows_done, n - rows_done if dist.main else 0, 0.0, reused=True)

    attrs = cache_attrs(cfg, fingerprint)
    if dist.active:
        start = time.perf_counter()
        pending_n = extract_shard(cfg, dataset, attrs, teacher, out, dist, device, strict)
        elapsed = time.perf_counter() - start
        dist.close()  # every shard is written
        if not dist.main:
            return _summary(out, idx_file, report_file, 0, 0, elapsed, reused=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out.parent, config_path(out).name)
    writer = CacheWriter.open(out, n_rows=n, dim=cfg.teacher.embedding_size, dtype=cfg.cache.dtype,
                              labels=dataset.labels, keys=dataset.keys, attrs=attrs,
                              chunk_rows=cfg.cache.chunk_rows)
    try:
        if dist.active:
            for rank in range(dist.world):  # rank 0, once every rank has written its share
                start, stop = shard_range(n, dist.world, rank, cfg.teacher.batch_size)
                if start < stop:
                    merge_shard(writer, partial_path(shard_path(out, rank, dist.world)), start)
        else:
            pending = writer.pending_rows()
            pending_n = len(pending)
            log.info("extract: %d rows, %d pending, teacher %s on %s", n, len(pending), cfg.teacher.arch, device)
            start = time.perf_counter()
            embed_rows(writer, dataset, pending, teacher, cfg, device, strict)
            elapsed = time.perf_counter() - start
        done = finalize(writer, dataset, cfg)
    except BaseException:
        writer.close()
        raise
    for rank in range(dist.world if dist.active else 0):
        partial_path(shard_path(out, rank, dist.world)).unlink(missing_ok=True)
    _index_and_report(cfg, out, idx_file, report_file)
    log_quality(report_file, strict)
    rows_done = int(done.sum())
    log.info("wrote %s (%d rows, %d skipped) in %.1fs", out, rows_done, n - rows_done, elapsed)
    return _summary(out, idx_file, report_file, rows_done, n - rows_done, elapsed,
                    reused=False, images_per_s=pending_n * max(1, dist.world) / max(elapsed, 1e-9))


def _reuse(cfg: PipelineConfig, out: Path, fingerprint: dict[str, Any], strict: bool = False) -> int:
    """Check a finished cache fully against this run, rebuild a missing or changed index or report; rows done."""
    with TeacherCache(out, in_ram="never", verify="full") as existing:
        existing.check_matches(fingerprint)
        rows_done = existing.rows_done
    idx_file, report_file = index_path(out), quality_path(out)
    problem = _index_problem(idx_file)
    if problem or not report_file.exists():
        if problem:
            log.warning("%s; building it again from the cache", problem)
        _index_and_report(cfg, out, idx_file, report_file)
    else:
        log.info("cache %s is complete, intact and matches this teacher and data: nothing to do", out)
    log_quality(report_file, strict)
    return rows_done


def extract_shard(cfg: PipelineConfig, dataset: Any, attrs: dict[str, Any], teacher: Embedder, out: Path,
                  dist: Dist, device: torch.device, strict: bool) -> int:
    """This rank's share of the rows into its shard work file (resumable); returns the rows it embedded."""
    start, stop = shard_range(len(dataset), dist.world, dist.rank, cfg.teacher.batch_size)
    if start == stop:
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    shard = CacheWriter.open(shard_path(out, dist.rank, dist.world), n_rows=stop - start,
                             dim=cfg.teacher.embedding_size, dtype=cfg.cache.dtype,
                             labels=dataset.labels[start:stop], keys=dataset.keys[start:stop], attrs=attrs,
                             chunk_rows=cfg.cache.chunk_rows)
    pending = shard.pending_rows() + start
    log.log(logging.INFO if dist.main else logging.WARNING,  # other ranks' logs show warnings only
            "extract rank %d of %d: rows %d..%d, %d pending", dist.rank, dist.world, start, stop - 1, len(pending))
    try:
        embed_rows(shard, dataset, pending, teacher, cfg, device, strict, offset=start)
    finally:
        shard.close()
    return len(pending)


def embed_rows(writer: CacheWriter, dataset: Any, pending: np.ndarray, teacher: Embedder, cfg: PipelineConfig,
               device: torch.device, strict: bool, offset: int = 0) -> None:
    """Run the teacher over the `pending` dataset rows (decoded in `data.workers` workers) and write both views
    (at row - `offset` of the writer: a shard's rows start at its share's first row)."""
    if not len(pending):
        return
    loader = DataLoader(ImageRows(dataset, pending), batch_size=cfg.teacher.batch_size, shuffle=False,
                        num_workers=cfg.data.workers, pin_memory=device.type == "cuda")
    bar = progress(len(pending), "extract")
    checked = False
    for images, _labels, rows, ok, reasons in loader:
        ok = ok.bool()
        for k in torch.nonzero(~ok).flatten().tolist():
            r = int(rows[k])
            if strict:
                raise PipelineError(f"unreadable image at row {r} (key {dataset.keys[r]!r}): {reasons[k]}; "
                                    "--strict is set")
            log.warning("skipping unreadable image: row %d, key %s: %s", r, dataset.keys[r], reasons[k])
        if ok.any():
            units, norms = _embed_views(teacher, images[ok])
            check_outputs(norms, rows[ok].numpy(), dataset.keys)
            writer.write(rows[ok].numpy() - offset, units, norms)
            if not checked and len(units) >= 2:  # the first batch: a mis-preprocessed teacher shows at once
                check_spread(mean_pairwise_cosine(units[:, 0]), f"the first {len(units)} images", strict)
                checked = True
        bar.update(len(rows))
    bar.close()


def check_outputs(norms: np.ndarray, rows: np.ndarray, keys: list[str]) -> None:
    """PipelineError naming the first row whose teacher output is all zeros or not finite (norms [b, 2])."""
    bad = ~(np.isfinite(norms) & (norms > 0)).all(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        raise PipelineError(f"the teacher's output for row {int(rows[k])} (key {keys[int(rows[k])]!r}) is unusable: "
                            f"view norms {norms[k].tolist()} (all-zero or NaN embeddings); check teacher.weights "
                            "and the preprocessing keys (teacher.mean, teacher.std, teacher.color, input_layout)")


def check_spread(value: float | None, what: str, strict: bool) -> None:
    """Warn (`strict`: PipelineError) when the teacher's embeddings of different images are nearly identical:
    their mean pairwise cosine `value` over `what` is above `COLLAPSED_COSINE`, the mark of wrong preprocessing."""
    if value is None or not value > COLLAPSED_COSINE:
        return
    text = (f"the teacher's embeddings are nearly identical across images (mean pairwise cosine {value:.4f} over "
            f"{what}; a working face model gives about 0.0 to 0.3), so its input is probably preprocessed wrongly: "
            "check teacher.mean and teacher.std (model input = (pixel/255 - mean) / std; a model that wants raw "
            "0..255 pixels needs mean [0, 0, 0] and std [1/255, 1/255, 1/255]), teacher.color (RGB | BGR) and "
            "teacher.input_layout (NCHW | NHWC) against the model's documentation")
    if strict:
        raise PipelineError(f"{text}; --strict is set")
    log.warning("%s (extract --strict makes this an error)", text)


def log_quality(report_file: Path, strict: bool = False) -> None:
    """One log line summing up the data-quality report, and the teacher-spread watchdog on its sample."""
    report = json.loads(report_file.read_text(encoding="utf-8"))
    log.info("quality report %s: %d identities (%d with one image: not scored), mean compactness %s, "
             "%d suspected label-noise rows, mean pairwise cosine %s", report_file, report.get("identities", 0),
             report.get("single_image_identities", 0), report.get("mean_compactness"),
             report.get("suspected_count", 0), report.get("mean_pairwise_cosine"))
    check_spread(report.get("mean_pairwise_cosine"), f"{min(SPREAD_SAMPLE, report.get('rows', 0))} cached images",
                 strict)


def finalize(writer: CacheWriter, dataset: Any, cfg: PipelineConfig) -> np.ndarray:
    """Positives and identity table over the rows written, then publish the cache; returns the done mask."""
    done = writer.done_mask()
    if not done.any():
        raise PipelineError(f"no image of '{cfg.data.root or cfg.data.format}' could be read")
    masked_labels = np.where(done, dataset.labels, -1)
    positives, sims = build_positives(writer.view_rows(0), masked_labels, cfg.cache.positives_k)
    rows_csr, offsets = identity_csr(masked_labels, dataset.num_classes)
    writer.finalize(positives=positives, positive_sims=sims, identity_rows=rows_csr, identity_offsets=offsets)
    return done


def _index_problem(idx_file: Path) -> str:
    """Why the index cannot be reused (missing, changed since written, unreadable), or '' when it can."""
    if not idx_file.exists():
        return f"FAISS index '{idx_file}' does not exist"
    try:
        load_index(idx_file)
    except ConfigError as e:
        return str(e)
    return ""


def _index_and_report(cfg: PipelineConfig, cache_file: Path, idx_file: Path, report_file: Path) -> None:
    """Build the FAISS index (ids = cache rows) and the data-quality report from a finished cache.

    The cache was just written or fully checked by the caller, so it is opened without a new check.
    """
    with TeacherCache(cache_file, in_ram="never", verify="none") as cache:
        done = np.asarray(cache.done, dtype=bool)
        labels = np.where(done, cache.labels, -1)
        keys = cache.keys
        view = cache.view_rows(0)
        valid = np.flatnonzero(done)
        index = build_index(view if len(valid) == len(done) else SubsetRows(view, valid), kind=cfg.cache.index,
                            nlist=cfg.cache.ivf_nlist, nprobe=cfg.cache.ivf_nprobe, ids=valid, pq_m=cfg.cache.pq_m)
        save_index(index, idx_file)
        report = quality_report(view, labels, keys, skipped_keys=[keys[r] for r in np.flatnonzero(~done)])
    atomic_write_text(report_file, json.dumps(report, indent=1, default=float) + "\n")


def _summary(cache: Path, index: Path, report: Path, rows: int, skipped: int, seconds: float,
             reused: bool, images_per_s: float | None = None) -> dict[str, Any]:
    return {
        "command": "extract",
        "cache": str(cache),
        "index": str(index),
        "report": str(report),
        "rows": int(rows),
        "skipped": int(skipped),
        "seconds": round(seconds, 3),
        "images_per_s": None if images_per_s is None else round(images_per_s, 1),
        "reused": reused,
    }
