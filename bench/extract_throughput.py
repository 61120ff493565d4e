"""Stage-one throughput: `run_extract` against the bare teacher forward pass, same batches, same run.

    python bench/extract_throughput.py [--arch ARCH] [--image-size 112] [--identities N]
        [--per-identity M] [--batch-size B] [--workers 2] [--repeats R] [--threads T] [--device auto]

- bare: every image decoded into memory first; only `teacher.embed(images)` and
  `teacher.embed(flipped images)` are timed, batch by batch, with the teacher built exactly as
  extract builds it (`models.build_teacher` on the same config) and the same batches (rows in order,
  `teacher.batch_size` per batch).
- extract: `stages.extract.run_extract` writing a fresh cache each time (DataLoader workers decode
  while the main process runs the teacher and writes HDF5). Two timings: loop-only, the stage's own
  timer around the decode -> teacher -> HDF5 loop (worker start-up included); total, the whole call
  (teacher build and weight hashing, cache creation, loop, positives, FAISS index, quality report).
- ratio = extract loop images/s / bare images/s (target >= 0.9).

The teacher is a random-weight backbone with BatchNorm statistics calibrated on a few synthetic faces
(`bench.common.save_random_backbone`; raw initial weights overflow or underflow, which distorts CPU
timings), saved to a temporary `backbone.pth`. One untimed warm-up batch (full and last-batch shapes)
runs first, so neither variant pays one-off kernel set-up. The variants alternate (bare, extract, then
extract, bare, ...) and the reported figures are medians over repeats; the ratio is the median of
per-repeat ratios.
On CUDA the peak allocated memory is reported per variant (the extract figure includes the bare
variant's teacher weights, which stay allocated).

Defaults: on CUDA iresnet50 at 112 px, 64 x 32 images, batch 128, 3 repeats; on this 2-core CPU
iresnet18 at 112 px, 16 x 8 = 128 images, batch 32, 2 repeats, one torch thread (see
`bench.common.set_threads`; the two decode workers use the second core), about 1-2 minutes.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import preamble
import torch

from bench.common import (
    emit_json,
    gpu_peak_mb,
    machine_info,
    median,
    pick_device,
    print_table,
    quiet,
    reset_gpu_peak,
    save_random_backbone,
    set_threads,
    timed,
)
from config import PipelineConfig, load_config
from models import build_teacher
from readers import build_dataset
from stages.extract import run_extract


def parse_args() -> argparse.Namespace:
    ap = preamble.parser(__doc__)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--arch", default="", help="teacher arch (default: iresnet50 on CUDA, iresnet18 on CPU)")
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--identities", type=int, default=0, help="synthetic identities (default: 64 CUDA, 16 CPU)")
    ap.add_argument("--per-identity", type=int, default=0, help="images per identity (default: 32 CUDA, 8 CPU)")
    ap.add_argument("--batch-size", type=int, default=0, help="teacher.batch_size (default: 128 CUDA, 32 CPU)")
    ap.add_argument("--workers", type=int, default=2, help="data.workers for extract")
    ap.add_argument("--embedding-size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=0, help="bare/extract pairs (default: 3 CUDA, 2 CPU)")
    ap.add_argument("--threads", type=int, default=-1,
                    help="torch intra-op threads (default -1: 1 on CPU, torch default on CUDA; 0: torch default)")
    ap.add_argument("--workdir", default="", help="where temporary caches go (default: a temp dir)")
    args = ap.parse_args()
    cuda = pick_device(args.device).type == "cuda"
    defaults = {"arch": ("iresnet50", "iresnet18"), "identities": (64, 16), "per_identity": (32, 8),
                "batch_size": (128, 32), "repeats": (3, 2)}
    for name, (on_gpu, on_cpu) in defaults.items():
        if not getattr(args, name):
            setattr(args, name, on_gpu if cuda else on_cpu)
    return args


def make_config(args: argparse.Namespace, device: torch.device, weights: Path, run_dir: Path) -> PipelineConfig:
    return load_config(None, [
        f"run.dir={run_dir}", "run.seed=0", f"run.device={device}",
        "data.format=synthetic", f"data.image_size={args.image_size}", f"data.workers={args.workers}",
        f"data.synthetic.identities={args.identities}", f"data.synthetic.images_per_identity={args.per_identity}",
        f"teacher.arch={args.arch}", f"teacher.weights={weights}", f"teacher.embedding_size={args.embedding_size}",
        f"teacher.batch_size={args.batch_size}",
        f"cache.path={run_dir / 'cache' / 'teacher.h5'}", "cache.dtype=float16",
    ])


def bare_pass(teacher: Any, batches: list[torch.Tensor], device: torch.device) -> float:
    """Seconds spent in `teacher.embed` on each batch and its horizontal flip (summed over batches)."""
    times: list[float] = []
    for images in batches:
        with timed(device, times):
            teacher.embed(images)
            teacher.embed(images.flip(2))
    return float(sum(times))


def extract_pass(cfg: PipelineConfig, device: torch.device, n: int) -> tuple[float, float]:
    """(loop seconds from the stage's own timer, total seconds of the call); removes the cache after."""
    run_dir = Path(cfg.run.dir)
    times: list[float] = []
    with timed(device, times):
        summary = run_extract(cfg)
    if summary.get("reused") or summary["rows"] != n:
        raise RuntimeError(f"extract did not write a fresh complete cache of {n} rows: {summary}")
    shutil.rmtree(run_dir, ignore_errors=True)
    return float(summary["seconds"]), times[0]


def main() -> None:
    args = parse_args()
    quiet()
    device = pick_device(args.device)
    set_threads(args.threads, device)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_extract_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        weights = save_random_backbone(args.arch, args.embedding_size, args.image_size, work / "backbone.pth")
        base_cfg = make_config(args, device, weights, work / "bare")
        dataset = build_dataset(base_cfg.data)
        n = len(dataset)
        t0 = time.perf_counter()
        images = torch.from_numpy(np.stack([dataset.load(i) for i in range(n)]))
        decode_s = time.perf_counter() - t0
        batches = [images[i:i + args.batch_size] for i in range(0, n, args.batch_size)]
        teacher = build_teacher(base_cfg.teacher, args.image_size, str(device))
        for warm in {len(batches[0]): batches[0], len(batches[-1]): batches[-1]}.values():
            teacher.embed(warm)

        bare_ips: list[float] = []
        loop_ips: list[float] = []
        total_ips: list[float] = []
        ratios: list[float] = []
        peaks: dict[str, list[float]] = {"bare": [], "extract": []}
        for rep in range(args.repeats):
            order = ("bare", "extract") if rep % 2 == 0 else ("extract", "bare")
            result: dict[str, Any] = {}
            for variant in order:
                reset_gpu_peak(device)
                if variant == "bare":
                    result["bare"] = n / bare_pass(teacher, batches, device)
                else:
                    cfg = make_config(args, device, weights, work / f"extract_{rep}")
                    result["loop"], result["total"] = (n / s for s in extract_pass(cfg, device, n))
                peak = gpu_peak_mb(device)
                if peak is not None:
                    peaks[variant].append(peak)
            bare_ips.append(result["bare"])
            loop_ips.append(result["loop"])
            total_ips.append(result["total"])
            ratios.append(result["loop"] / result["bare"])
            print(f"repeat {rep + 1}/{args.repeats}: bare {result['bare']:.1f} img/s, extract loop "
                  f"{result['loop']:.1f} img/s, extract total {result['total']:.1f} img/s, "
                  f"ratio {ratios[-1]:.3f}", file=sys.stderr, flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    ratio = median(ratios)
    total_ratio = median([t / b for t, b in zip(total_ips, bare_ips, strict=True)])
    rows = [
        ["bare teacher.embed x2 (decoded in RAM)", median(bare_ips), 1.0, max(peaks["bare"], default=None)],
        ["extract loop (decode + teacher + HDF5)", median(loop_ips), ratio, max(peaks["extract"], default=None)],
        ["extract total (+ build, positives, index, report)", median(total_ips), total_ratio, None],
    ]
    print_table(f"extract throughput: {args.arch} teacher, {n} synthetic images at {args.image_size}px, "
                f"batch {args.batch_size}, workers {args.workers}, device {device}, medians of {args.repeats}",
                ["variant", "images/s", "ratio to bare", "peak GPU MiB"], rows)
    verdict = "meets" if ratio >= 0.9 else "misses"
    print(f"extract loop / bare = {ratio:.3f} ({verdict} the >= 0.9 target); "
          f"decoding {n} images in the main process took {decode_s:.2f}s")
    emit_json({
        "benchmark": "extract_throughput",
        "arch": args.arch, "image_size": args.image_size, "images": n, "batch_size": args.batch_size,
        "workers": args.workers, "repeats": args.repeats,
        "bare_images_per_s": round(median(bare_ips), 2),
        "extract_loop_images_per_s": round(median(loop_ips), 2),
        "extract_total_images_per_s": round(median(total_ips), 2),
        "ratio_loop_to_bare": round(ratio, 4),
        "ratio_total_to_bare": round(total_ratio, 4),
        "per_repeat": {"bare": [round(v, 2) for v in bare_ips], "loop": [round(v, 2) for v in loop_ips],
                       "total": [round(v, 2) for v in total_ips]},
        "decode_images_per_s_main_process": round(n / decode_s, 1),
        "peak_gpu_mb": {k: round(max(v), 1) for k, v in peaks.items() if v} or None,
        "target_ratio": 0.9,
        "meets_target": ratio >= 0.9,
        **machine_info(device),
    })


if __name__ == "__main__":
    main()
