"""Stage-two step cost, side by side: plain training, FCD alone, FCD + ICD and the other methods from the cache,
online teacher.

    python bench/distill_step.py [--student mobilefacenet|timm/<name>] [--image-size N] [--batch-size B]
        [--warmup-steps W] [--steps S] [--repeats R] [--workers K] [--online-bank memo|teacher] [--device auto]

Same student, same synthetic data, same batch size and config in all variants:
- plain: `stages.train.run_train` (what `python cli.py train` does: margin loss only);
- cache: `stages.distill.run_distill` (what `python cli.py distill` does) against a cache that this
  script first extracts with `stages.extract.run_extract` from the teacher below (not timed as a step);
- fcd: the same `run_distill` with `loss.method="fcd"` (FCD alone: no SDC term, no feature bank), so
  cache / fcd is what ICD's SDC term and bank add to a distillation step (target: <= 1.05);
- rkd, ekd, adadistill, margindistillation: the same `run_distill` with that `loss.method` (each at its
  published defaults, `stages.training.methods`), so <method> / fcd is what the method adds to a step
  with FCD alone (issue 11's target: <= 1.10 each; margindistillation's one-off teacher centres are
  computed in `build_run`, before the first step, so they are not in the step time);
- online: `stages.training.loop.run_loop` with `tests.helpers.online_targets.OnlineTargets`: the teacher (an
  IResNet-50 with random weights, built here only) runs on every batch. Feature-bank entries need
  teacher targets too; `--online-bank memo` (default) keeps each (row, flip)'s teacher embedding from
  the step that computed it, the cheap way an online trainer would keep them, so the online variant
  pays the teacher on the batch only; `--online-bank teacher` re-runs the teacher on the bank's rows
  as `OnlineTargets.lookup` does (much slower: up to bank_size x batch extra images per step).

How a step is timed: each variant runs with `train.log_every=1`, so the loop's own `images_per_s`
column in `metrics.csv` is batch / (time between two consecutive log points), i.e. one full step cycle:
waiting for the batch, forward, targets (cache read or teacher), loss, backward, optimiser, bank update,
metrics row. The sampler drops no row and pads the last batch, so every step has `batch_size` images and
step seconds = batch_size / images_per_s. The first `--warmup-steps` steps (worker start-up, allocator
and kernel set-up) are skipped; the median of the remaining per-step times is the variant's step time
(the median also ignores the DataLoader restart at an epoch boundary, a cost that is negligible in a
real epoch of thousands of steps; the mean is reported too). The target provider's calls are timed as
well (CUDA synchronised): in the online variant that is the teacher, whose share of the step the
target below uses; in the cache variant the feature bank's reads from the cache (the batch's own
targets are read inside the DataLoader workers). The cache variant's provider is timed by swapping
`stages.distill.CacheTargets` for a timing wrapper; `run_distill` itself runs unchanged.

Each variant of each repeat runs in a fresh subprocess, so the peak memory is per variant: ru_maxrss
of the training process (and the largest of its DataLoader workers) on CPU, and
torch.cuda.max_memory_allocated on CUDA. Variants alternate (plain, cache, online, then online, cache,
plain, ...); the figures are medians over repeats and the ratios medians of per-repeat ratios.
Targets: cache step <= 1.10 x plain step; cache (FCD + ICD) step <= 1.05 x fcd step; each other method's
step <= 1.10 x fcd step; online step - cache step >= the teacher's time per step.

Defaults: on this 2-core CPU image size 32, batch 64 (16 identities x 4), 48 x 8 synthetic images,
3 warm-up + 8 timed steps, 3 repeats, 2 loader workers, one torch thread (see
`bench.common.set_threads`); a few minutes, much of it process start-up and first-step set-up. On
CUDA image size 112, batch 128, 256 x 8 images, 10 + 40 steps, 3 repeats, 8 loader workers.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
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
    sync,
)
from config import PipelineConfig, load_config

METHOD_VARIANTS = ("rkd", "ekd", "adadistill", "margindistillation")  # loss.method values timed against "fcd"
VARIANTS = ("plain", "fcd", "cache", "online", *METHOD_VARIANTS)
DISTILL_VARIANTS = ("fcd", "cache", *METHOD_VARIANTS)  # `run_distill` against the extracted cache
VARIANT_SETTINGS = {"fcd": ['loss.method="fcd"'],  # on top of `overrides`
                    **{m: [f'loss.method="{m}"'] for m in METHOD_VARIANTS}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = preamble.parser(__doc__)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--student", default="mobilefacenet", help="student arch: mobilefacenet, iresnet18, timm/<name>")
    ap.add_argument("--student-dim", type=int, default=512, help="student embedding size (512: no projector)")
    ap.add_argument("--teacher", default="iresnet50", help="teacher arch for the cache and the online variant")
    ap.add_argument("--image-size", type=int, default=0, help="default: 112 on CUDA, 32 on CPU")
    ap.add_argument("--batch-size", type=int, default=0, help="default: 128 on CUDA, 64 on CPU")
    ap.add_argument("--images-per-identity", type=int, default=4, help="train.images_per_identity (M)")
    ap.add_argument("--identities", type=int, default=0, help="synthetic identities (default: 256 CUDA, 48 CPU)")
    ap.add_argument("--per-identity", type=int, default=8, help="synthetic images per identity")
    ap.add_argument("--warmup-steps", type=int, default=0, help="untimed first steps (default: 10 CUDA, 3 CPU)")
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default: 40 CUDA, 8 CPU)")
    ap.add_argument("--repeats", type=int, default=0, help="rounds over the variants (default: 3)")
    ap.add_argument("--workers", type=int, default=-1, help="data.workers (default: 8 CUDA, 2 CPU)")
    ap.add_argument("--threads", type=int, default=-1,
                    help="torch intra-op threads (default -1: 1 on CPU, torch default on CUDA; 0: torch default)")
    ap.add_argument("--online-bank", choices=("memo", "teacher"), default="memo")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    ap.add_argument("--workdir", default="", help="where the cache and runs go (default: a temp dir)")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--worker-spec", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cuda = pick_device(args.device).type == "cuda"
    defaults = {"image_size": (112, 32), "batch_size": (128, 64), "identities": (256, 48),
                "warmup_steps": (10, 3), "steps": (40, 8), "repeats": (3, 3)}
    for name, (on_gpu, on_cpu) in defaults.items():
        if not getattr(args, name):
            setattr(args, name, on_gpu if cuda else on_cpu)
    if args.workers < 0:
        args.workers = min(8, os.cpu_count() or 2) if cuda else 2
    return args


def overrides(spec: dict[str, Any], run_dir: Path) -> list[str]:
    """The `--set` list shared by the extraction and all variants."""
    return [
        f"run.dir={run_dir}", "run.seed=0", f"run.device={spec['device']}",
        "data.format=synthetic", f"data.image_size={spec['image_size']}", f"data.workers={spec['workers']}",
        f"data.synthetic.identities={spec['identities']}", f"data.synthetic.images_per_identity={spec['per_identity']}",
        f"teacher.arch={spec['teacher']}", f"teacher.weights={spec['weights']}", "teacher.embedding_size=512",
        f"cache.path={spec['cache']}",
        f"student.arch={spec['student']}", f"student.embedding_size={spec['student_dim']}",
        f"train.steps={spec['warmup_steps'] + spec['steps']}", f"train.batch_size={spec['batch_size']}",
        f"train.images_per_identity={spec['images_per_identity']}", "train.lr=0.01", "train.warmup_steps=0",
        "train.log_every=1", "train.checkpoint_every=1000000000",
    ]


class TimedTargets:
    """Wraps a target provider and times its calls per step (CUDA synchronised).

    The loop calls `batch_targets` once per distillation step, then `lookup` for feature-bank entries;
    entry i of `seconds` is step i + 1's time in both (teacher runs for the online provider; for the
    cache provider, bank reads from the cache, the batch's targets having been read in the workers).
    """

    def __init__(self, inner: Any, device: torch.device) -> None:
        self.inner = inner
        self.embedding_size = inner.embedding_size
        self.device = device
        self.seconds: list[float] = []

    def _timed(self, fn: Any, *a: Any) -> tuple[torch.Tensor, float]:
        sync(self.device)
        start = time.perf_counter()
        out = fn(*a)
        sync(self.device)
        return out, time.perf_counter() - start

    def batch_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out, seconds = self._timed(self.inner.batch_targets, batch)
        self.seconds.append(seconds)
        return out

    def lookup(self, rows: np.ndarray, flips: np.ndarray) -> torch.Tensor:
        out, seconds = self._timed(self.inner.lookup, rows, flips)
        if self.seconds:
            self.seconds[-1] += seconds
        return out


class MemoOnlineTargets:
    """`OnlineTargets` that remembers each (row, flip)'s teacher embedding for feature-bank lookups.

    `memo=False` re-embeds bank rows with the teacher as `OnlineTargets.lookup` does.
    """

    def __init__(self, teacher: Any, dataset: Any, memo: bool) -> None:
        from tests.helpers.online_targets import OnlineTargets

        self.online = OnlineTargets(teacher, dataset)
        self.embedding_size = self.online.embedding_size
        self.store = torch.zeros(len(dataset), 2, self.embedding_size) if memo else None
        self.known = np.zeros((len(dataset), 2), dtype=bool)
        self.recomputed_rows = 0

    def batch_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.online.batch_targets(batch)
        if self.store is not None:
            rows, flips = batch["rows"], batch["flips"]
            self.store[rows, flips] = out.float().cpu()
            self.known[rows.numpy(), flips.numpy()] = True
        return out

    def lookup(self, rows: np.ndarray, flips: np.ndarray) -> torch.Tensor:
        flips = flips.astype(np.int64)
        if self.store is not None and self.known[rows, flips].all():
            return self.store[torch.from_numpy(rows), torch.from_numpy(flips)]
        self.recomputed_rows += len(rows)
        return self.online.lookup(rows, flips)


def run_worker(args: argparse.Namespace) -> None:
    """One variant in this (fresh) process; prints its per-step times and memory peaks as a JSON line."""
    spec = json.loads(args.worker_spec)
    quiet()
    device = pick_device(spec["device"])
    set_threads(spec["threads"], device)
    run_dir = Path(spec["run_dir"])
    cfg = load_config(None, overrides(spec, run_dir) + VARIANT_SETTINGS.get(args.worker, []))
    reset_gpu_peak(device)
    timed_providers: list[TimedTargets] = []
    recomputed = 0
    if args.worker == "plain":
        from stages.train import run_train

        summary = run_train(cfg)
    elif args.worker in DISTILL_VARIANTS:
        import stages.distill
        from stages.training.targets import CacheTargets

        def timed_cache_targets(cache: Any) -> TimedTargets:
            timed_providers.append(TimedTargets(CacheTargets(cache), device))
            return timed_providers[-1]

        stages.distill.CacheTargets = timed_cache_targets  # run_distill unchanged, its provider timed
        summary = stages.distill.run_distill(cfg)
    else:
        summary, provider, memo = run_online(cfg, device, spec["online_bank"] == "memo")
        timed_providers.append(provider)
        recomputed = memo.recomputed_rows
    step_seconds = read_step_seconds(run_dir / "metrics.csv", spec["batch_size"])
    emit_json({
        "variant": args.worker,
        "step_seconds": step_seconds,
        "target_seconds": timed_providers[0].seconds if timed_providers else [],
        "bank_rows_recomputed": recomputed,
        "loop_images_per_s": summary["images_per_s"],
        "steps": summary["steps"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "peak_rss_loader_workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0,
        "peak_gpu_mb": gpu_peak_mb(device),
    })


def run_online(cfg: PipelineConfig, device: torch.device,
               memo: bool) -> tuple[dict[str, Any], TimedTargets, MemoOnlineTargets]:
    """The distillation loop with the teacher run on every batch (no cache)."""
    from models import build_teacher
    from readers import build_dataset
    from stages.training.loop import run_loop
    from stages.training.state import TrainInputs

    dataset = build_dataset(cfg.data)
    teacher = build_teacher(cfg.teacher, cfg.data.image_size, str(device))
    online = MemoOnlineTargets(teacher, dataset, memo)
    provider = TimedTargets(online, device)
    inputs = TrainInputs(dataset=dataset, rows=np.arange(len(dataset), dtype=np.int64), provider=provider,
                         teacher_dim=provider.embedding_size)
    return run_loop(cfg, inputs, command="distill"), provider, online


def read_step_seconds(metrics: Path, batch_size: int) -> list[float]:
    """Per-step wall time from the loop's `images_per_s` column (logged every step)."""
    with open(metrics, newline="") as fh:
        return [batch_size / float(row["images_per_s"]) for row in csv.DictReader(fh)]


def launch(variant: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one variant in a fresh Python process; returns its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--worker-spec", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          cwd=str(Path(__file__).resolve().parents[1]))
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"variant {variant} failed (exit {proc.returncode})")
    return json.loads(lines[-1])


def extract_cache(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    from stages.extract import run_extract

    return run_extract(load_config(None, overrides(spec, work / "extract_run")))


def main() -> None:
    args = parse_args()
    if args.worker:
        run_worker(args)
        return
    quiet()
    device = pick_device(args.device)
    set_threads(args.threads, device)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(sorted(unknown))} (choose from {', '.join(VARIANTS)})")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_distill_"))
    work.mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {
        "device": str(device), "threads": args.threads, "image_size": args.image_size, "workers": args.workers,
        "identities": args.identities, "per_identity": args.per_identity, "teacher": args.teacher,
        "weights": str(work / "teacher_backbone.pth"), "cache": str(work / "cache" / "teacher.h5"),
        "student": args.student, "student_dim": args.student_dim, "warmup_steps": args.warmup_steps,
        "steps": args.steps, "batch_size": args.batch_size, "images_per_identity": args.images_per_identity,
        "online_bank": args.online_bank,
    }
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    try:
        save_random_backbone(args.teacher, 512, args.image_size, Path(spec["weights"]))
        extract = extract_cache(spec, work) if set(DISTILL_VARIANTS) & set(variants) else None
        if extract is not None:
            print(f"cache extracted: {extract['rows']} rows at {extract['images_per_s']} img/s", file=sys.stderr)
        for rep in range(args.repeats):
            for variant in (variants if rep % 2 == 0 else variants[::-1]):
                run_dir = work / f"run_{variant}_{rep}"
                res = launch(variant, dict(spec, run_dir=str(run_dir)))
                shutil.rmtree(run_dir, ignore_errors=True)
                results[variant].append(res)
                timed_steps = res["step_seconds"][args.warmup_steps:]
                print(f"repeat {rep + 1}/{args.repeats} {variant}: median step {median(timed_steps):.3f}s "
                      f"over {len(timed_steps)} steps", file=sys.stderr, flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    report(args, device, variants, results, extract)


def summarise(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-variant medians over repeats of each run's median (and mean) timed step."""
    w = args.warmup_steps
    medians = [median(r["step_seconds"][w:]) for r in runs]
    means = [float(np.mean(r["step_seconds"][w:])) for r in runs]
    targets = [median(r["target_seconds"][w:]) for r in runs if r["target_seconds"][w:]]
    gpu = [r["peak_gpu_mb"] for r in runs if r["peak_gpu_mb"] is not None]
    return {
        "step_s": median(medians), "step_s_mean": median(means), "per_repeat_step_s": medians,
        "images_per_s": args.batch_size / median(medians),
        "targets_s": median(targets) if targets else None,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "peak_rss_loader_workers_mb": max(r["peak_rss_loader_workers_mb"] for r in runs),
        "peak_gpu_mb": max(gpu) if gpu else None,
        "bank_rows_recomputed": sum(r["bank_rows_recomputed"] for r in runs),
    }


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, x in values.items():
        out[key] = round(x, 4) if isinstance(x, float) else [round(y, 4) for y in x] if isinstance(x, list) else x
    return out


def report(args: argparse.Namespace, device: torch.device, variants: list[str],
           results: dict[str, list[dict[str, Any]]], extract: dict[str, Any] | None) -> None:
    s = {v: summarise(args, results[v]) for v in variants}

    def per_repeat_ratio(a: str, b: str) -> float | None:
        if a not in s or b not in s:
            return None
        return median([x / y for x, y in zip(s[a]["per_repeat_step_s"], s[b]["per_repeat_step_s"], strict=False)])

    cache_vs_plain = per_repeat_ratio("cache", "plain")
    online_vs_cache = per_repeat_ratio("online", "cache")
    icd_vs_fcd = per_repeat_ratio("cache", "fcd")
    methods_vs_fcd = {m: r for m in METHOD_VARIANTS if (r := per_repeat_ratio(m, "fcd")) is not None}
    rows = []
    for v in variants:
        base = s["plain"]["step_s"] if "plain" in s else None
        rows.append([v, s[v]["step_s"], s[v]["step_s_mean"], s[v]["images_per_s"],
                     None if base is None else s[v]["step_s"] / base, s[v]["targets_s"],
                     s[v]["peak_rss_mb"], s[v]["peak_rss_loader_workers_mb"], s[v]["peak_gpu_mb"]])
    print_table(f"stage-two step: student {args.student}, teacher {args.teacher}, {args.image_size}px, batch "
                f"{args.batch_size}, {args.identities}x{args.per_identity} synthetic images, workers {args.workers}, "
                f"device {device}, {args.steps} timed steps after {args.warmup_steps}, medians of {args.repeats}",
                ["variant", "step s (median)", "step s (mean)", "images/s", "vs plain", "targets s/step",
                 "peak RSS MiB", "loader RSS MiB", "peak GPU MiB"], rows)
    figures: dict[str, Any] = {
        "benchmark": "distill_step",
        "student": args.student, "student_dim": args.student_dim, "teacher": args.teacher,
        "image_size": args.image_size, "batch_size": args.batch_size, "identities": args.identities,
        "per_identity": args.per_identity, "warmup_steps": args.warmup_steps, "timed_steps": args.steps,
        "repeats": args.repeats, "workers": args.workers, "online_bank": args.online_bank,
        "variants": {v: _rounded(s[v]) for v in variants},
        "extract_images_per_s": None if extract is None else extract["images_per_s"],
        "cache_over_plain": None if cache_vs_plain is None else round(cache_vs_plain, 4),
        "online_over_cache": None if online_vs_cache is None else round(online_vs_cache, 4),
        "icd_over_fcd": None if icd_vs_fcd is None else round(icd_vs_fcd, 4),
        "method_over_fcd": {m: round(r, 4) for m, r in methods_vs_fcd.items()},
        "methods_meet_plus_10pct": {m: r <= 1.10 for m, r in methods_vs_fcd.items()},
    }
    if cache_vs_plain is not None:
        ok = cache_vs_plain <= 1.10
        figures["cache_meets_plus_10pct"] = ok
        print(f"cache / plain step time = {cache_vs_plain:.3f} ({'meets' if ok else 'misses'} the <= 1.10 target)")
    if icd_vs_fcd is not None:
        ok = icd_vs_fcd <= 1.05
        figures["icd_meets_plus_5pct"] = ok
        print(f"FCD + ICD (cache) / FCD alone step time = {icd_vs_fcd:.3f} ({'meets' if ok else 'misses'} the <= 1.05 "
              "target)")
    for m, r in methods_vs_fcd.items():
        print(f"{m} / FCD alone step time = {r:.3f} ({'meets' if r <= 1.10 else 'misses'} the <= 1.10 target)")
    print("targets s/step: time in the target provider per step (online: the teacher; cache: bank reads)")
    if "online" in s and "cache" in s and s["online"]["targets_s"]:
        online, cache, teacher = s["online"]["step_s"], s["cache"]["step_s"], s["online"]["targets_s"]
        saving, share = (online - cache) / online, teacher / online
        ok = online - cache >= teacher
        figures.update(online_saving_fraction=round(saving, 4), teacher_share_of_online_step=round(share, 4),
                       saving_over_teacher_time=round((online - cache) / teacher, 4), cache_meets_teacher_share=ok)
        print(f"online / cache step time = {online_vs_cache:.3f}; cache saves {saving:.1%} of the online step, "
              f"the teacher takes {share:.1%} of it ({'meets' if ok else 'misses'}: saving >= teacher share)")
    if "online" in s and s["online"]["bank_rows_recomputed"]:
        print(f"online: {s['online']['bank_rows_recomputed']} bank rows were re-embedded by the teacher")
    figures.update(machine_info(device))
    emit_json(figures)


if __name__ == "__main__":
    main()
