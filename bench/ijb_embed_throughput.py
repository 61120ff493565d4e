"""IJB embedding throughput: `evaluate`'s IJB path (read, decode, align, teacher) against the bare teacher forward.

    python bench/ijb_embed_throughput.py [--images 2000] [--batch-size 256] [--workers 2] [--repeats 3]
        [--teacher ../shared/models/mobileface.onnx] [--faces ../shared/data/lfw_devtrain] [--threads 0]
        [--seed 0] [--workdir DIR]

The project's target: images/s of the IJB embedding path >= 0.9 x the bare teacher forward on the same
images. Set-up (untimed):

- faces: the first `--images` real aligned 112x112 faces of `--faces` (LFW DevTrain, `train.rec`), or the
  project's synthetic faces (`readers.SyntheticDataset`, 112 px) where that folder is absent;
- an IJB-C-layout root (`loose_crop/`, `meta/ijbc_*.txt`): each face warped by a random similarity (scale
  1.2 .. 2.4, rotation +-25 degrees, shift) into a larger loose crop (side 1.5 x the scaled face, 200 ..
  400 px), saved as JPEG quality 95 like IJB's crops; its landmarks are the ArcFace template mapped by
  that similarity plus N(0, 1 px) noise, so alignment does a real warp; templates of up to 3 images of
  one person, a media per two images, template pairs of neighbouring templates;
- the teacher as `evaluate` builds it (`stages.evaluate.embedders.build_embedder(cfg, "teacher")`): the
  ONNX teacher `--teacher` with its preprocessing (NHWC, raw 0..255 pixels, 256-d), or a random-weight
  backbone (`bench.common.save_random_backbone`, 512-d) for `--teacher random:<arch>` (e.g.
  `random:iresnet50`, the usual size of an IJB model) and, where the ONNX file is absent, MobileFaceNet;
- the aligned faces decoded and aligned once into memory by the same loader, in this thread (timed for
  information: `load_align_images_per_s_one_thread`).

Timed with `time.perf_counter()`, each pass over all images; a repeat is bare, ijb, ijb, bare (ijb, bare,
bare, ijb in odd repeats), so that a load change on a shared machine hits both variants alike:

- bare: `embed_views` (`embedder.embed_views(images).numpy()`, image + flip, as `evaluate` passes it) on
  the in-memory aligned faces, `--batch-size` per call, in order;
- ijb: `evaluation.ijb.embed.embed_in_chunks(verify.aligned_loader(layout), ...)` exactly as
  `verify.evaluate_ijb` calls it (chunk size `stages.evaluate.command.IJB_CHUNK_IMAGES`, `--batch-size`,
  `--workers` = `data.workers` loader threads, its fingerprint) into a fresh work folder: reading files,
  decoding, aligning, the same `embed_views`, checks and atomic chunk writes;
- then, once per repeat, `verify.evaluate_ijb` on the work folder the last ijb pass left (every chunk
  already there: layout reading, chunk checks, pooling, scores, metrics), added to each ijb pass for
  the whole call's images/s and ratio.

ratio = bare seconds / ijb seconds of a repeat (its two passes each), median over repeats; target >= 0.9.
The ijb views are compared with the bare ones (the same model on the same aligned pixels). One
untimed warm-up of both batch shapes runs first. The loose crops were just written, so they are read
from the page cache. `--threads 0` (default) leaves torch at its default thread count, as `evaluate`
runs; onnxruntime picks its own. CPU ms/image is the process's CPU time (all threads) per image: where
other work keeps every core busy, the throughput ratio tends to the ratio of these. Defaults take about
4 minutes on the 2-core CPU (shared with other work).
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import preamble
import torch
from PIL import Image
from preamble import REPO
from skimage.transform import SimilarityTransform, warp

from alignment.warp import ALIGNED_SIZE, ARCFACE_TEMPLATE
from bench.common import (
    emit_json,
    machine_info,
    median,
    pick_device,
    print_table,
    quiet,
    rss_peak_mb,
    save_random_backbone,
    set_threads,
)
from config import load_config
from evaluation.ijb import evaluate_ijb, read_ijb_layout
from evaluation.ijb.embed import PREFETCH_BATCHES, ViewsFn, embed_in_chunks
from evaluation.ijb.layout import IjbLayout
from evaluation.ijb.verify import aligned_loader
from readers import FaceDataset, SyntheticDataset
from readers.recordio import RecordIODataset
from stages.evaluate.command import IJB_CHUNK_IMAGES
from stages.evaluate.embedders import build_embedder

DEFAULT_TEACHER = REPO.parent / "shared" / "models" / "mobileface.onnx"
DEFAULT_FACES = REPO.parent / "shared" / "data" / "lfw_devtrain"
TARGET_RATIO = 0.9
RANDOM_PREFIX = "random:"
SCALES = (1.2, 2.4)  # face scale in the loose crop
MARGIN = 1.5  # loose crop side / scaled face side
MAX_DEGREES = 25.0
LANDMARK_NOISE = 1.0  # px, in the loose crop
TEMPLATE_IMAGES = 3


def parse_args() -> argparse.Namespace:
    ap = preamble.parser(__doc__)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=256, help="eval.batch_size (default: its default, 256)")
    ap.add_argument("--workers", type=int, default=2, help="data.workers: loader threads (default: its default, 2)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--teacher", default=str(DEFAULT_TEACHER),
                    help="ONNX teacher (NHWC, 0..255 input), or random:<arch> for a random-weight backbone")
    ap.add_argument("--faces", default=str(DEFAULT_FACES), help="insightface .rec folder of aligned 112 px faces")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default, as evaluate)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="", help="where the IJB root and work folders go (default: a temp dir)")
    args = ap.parse_args()
    if args.images < 2 or args.batch_size < 1 or args.repeats < 1 or args.workers < 0:
        ap.error("need --images >= 2, --batch-size >= 1, --repeats >= 1, --workers >= 0")
    return args


def similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    """3x3 matrix of x -> scale * R(degrees) x + (tx, ty)."""
    c, s = scale * math.cos(math.radians(degrees)), scale * math.sin(math.radians(degrees))
    return np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def faces_source(path: str, count: int, seed: int) -> tuple[FaceDataset, str]:
    """Real aligned faces from a `.rec` folder where it exists, else synthetic 112 px faces."""
    if (Path(path) / "train.rec").is_file():
        faces: FaceDataset = RecordIODataset(path, ALIGNED_SIZE)
        if len(faces) < count:
            raise SystemExit(f"{path} holds {len(faces)} faces, fewer than --images {count}")
        return faces, f"rec:{path}"
    per_identity = 6
    return (SyntheticDataset(-(-count // per_identity), per_identity, ALIGNED_SIZE, seed, 1.0),
            "synthetic (the .rec folder is absent)")


def write_loose_crop(face: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(loose crop uint8 [S, S, 3], landmarks [5, 2]): the face warped by a random similarity into a larger canvas."""
    scale = rng.uniform(*SCALES)
    side = int(round(ALIGNED_SIZE * scale * MARGIN))
    matrix = similarity(scale, rng.uniform(-MAX_DEGREES, MAX_DEGREES), 0.0, 0.0)
    centre = np.array([ALIGNED_SIZE / 2, ALIGNED_SIZE / 2, 1.0])
    matrix[:2, 2] = rng.uniform(0.45, 0.55, 2) * side - (matrix @ centre)[:2]  # the face's centre near the crop's
    crop = warp(face, SimilarityTransform(matrix=np.linalg.inv(matrix)), output_shape=(side, side), order=1,
                preserve_range=True)
    landmarks = (np.c_[ARCFACE_TEMPLATE, np.ones(5)] @ matrix.T)[:, :2] + rng.normal(0, LANDMARK_NOISE, (5, 2))
    return np.clip(np.rint(crop), 0, 255).astype(np.uint8), landmarks


def write_ijb_root(root: Path, faces: FaceDataset, count: int, seed: int) -> dict[str, Any]:
    """An IJB-C-layout release of `count` loose crops (module docstring); returns what was written."""
    rng = np.random.default_rng(seed)
    (root / "loose_crop").mkdir(parents=True)
    (root / "meta").mkdir()
    tid_mid, pts, sides = [], [], []
    template_person: list[int] = []
    last_person, in_template = -1, 0
    for k in range(count):
        person = int(faces.labels[k])
        if person != last_person or in_template == TEMPLATE_IMAGES:
            template_person.append(person)
            last_person, in_template = person, 0
        template = len(template_person)
        crop, landmarks = write_loose_crop(faces.load(k), rng)
        name = f"{k + 1}.jpg"
        Image.fromarray(crop).save(root / "loose_crop" / name, quality=95)
        sides.append(crop.shape[0])
        tid_mid.append(f"{name} {template} {template * 10 + in_template // 2}\n")
        pts.append(f"{name} " + " ".join(f"{v:.3f}" for v in landmarks.ravel()) + f" {rng.uniform(0.5, 1.0):.4f}\n")
        in_template += 1
    pairs = [f"{t} {t + 1} {int(template_person[t - 1] == template_person[t])}\n"
             for t in range(1, len(template_person))]
    pairs += [f"{t} {t + 2} {int(template_person[t - 1] == template_person[t + 1])}\n"
              for t in range(1, len(template_person) - 1)]
    (root / "meta" / "ijbc_face_tid_mid.txt").write_text("".join(tid_mid))
    (root / "meta" / "ijbc_name_5pts_score.txt").write_text("".join(pts))
    (root / "meta" / "ijbc_template_pair_label.txt").write_text("".join(pairs))
    genuine = sum(p.endswith(" 1\n") for p in pairs)
    return {"templates": len(template_person), "template_pairs": len(pairs), "genuine_pairs": genuine,
            "crop_side_mean": float(np.mean(sides)), "crop_side_range": [int(min(sides)), int(max(sides))]}


def teacher_overrides(args: argparse.Namespace, work: Path) -> tuple[list[str], str]:
    """`--set` values for `[teacher]`: the ONNX teacher, or a random-weight backbone (`random:<arch>`, or
    MobileFaceNet where the ONNX file is absent)."""
    if not args.teacher.startswith(RANDOM_PREFIX) and Path(args.teacher).is_file():
        return [
            "teacher.arch=onnx", f"teacher.weights={args.teacher}", "teacher.input_layout=NHWC",
            "teacher.mean=[0, 0, 0]", f"teacher.std=[{1 / 255!r}, {1 / 255!r}, {1 / 255!r}]",
            "teacher.embedding_size=256",
        ], f"onnx:{args.teacher}"
    arch = args.teacher[len(RANDOM_PREFIX):] if args.teacher.startswith(RANDOM_PREFIX) else "mobilefacenet"
    weights = save_random_backbone(arch, 512, ALIGNED_SIZE, work / "backbone.pth", seed=args.seed)
    why = "" if args.teacher.startswith(RANDOM_PREFIX) else " (the ONNX teacher is absent)"
    return [f"teacher.arch={arch}", f"teacher.weights={weights}", "teacher.embedding_size=512"], \
        f"random-weight {arch}, 512-d{why}"


def bare_pass(embed_views: ViewsFn, aligned: np.ndarray, batch_size: int) -> tuple[float, np.ndarray]:
    """(seconds, views [N, 2, D]) of `embed_views` over the in-memory aligned faces, batch by batch."""
    parts = []
    start = time.perf_counter()
    for s in range(0, len(aligned), batch_size):
        parts.append(embed_views(aligned[s:s + batch_size]))
    seconds = time.perf_counter() - start
    return seconds, np.concatenate(parts)


@dataclass
class Setup:
    """What the timed variants share: the written root, its layout and loader, the teacher, the aligned faces."""

    root: Path
    layout: IjbLayout
    load: Callable[[int], np.ndarray]
    embed_views: ViewsFn
    fingerprint: dict[str, Any]
    aligned: np.ndarray
    embedding_size: int
    info: dict[str, Any]


def prepare(args: argparse.Namespace, work: Path, device: torch.device) -> Setup:
    """Write the IJB root, build the teacher as `evaluate` does, align every face once into memory, warm up."""
    t0 = time.perf_counter()
    faces, source = faces_source(args.faces, args.images, args.seed)
    root = work / "IJBC"
    shutil.rmtree(root, ignore_errors=True)
    info = write_ijb_root(root, faces, args.images, args.seed)
    info.update(faces=source, setup_seconds=round(time.perf_counter() - t0, 1))
    print(f"wrote {args.images} loose crops in {info['setup_seconds']}s", file=sys.stderr, flush=True)

    overrides, info["teacher"] = teacher_overrides(args, work)
    cfg = load_config(None, [f"run.dir={work / 'run'}", f"run.device={device}",
                             f"eval.batch_size={args.batch_size}", f"data.workers={args.workers}", *overrides])
    embedder, _ = build_embedder(cfg, "teacher", str(device))
    if embedder is None:
        raise RuntimeError("eval.model = teacher gave no embedder")

    def embed_views(images: np.ndarray) -> np.ndarray:  # as stages/evaluate/command.py passes it
        return embedder.embed_views(images).numpy()

    layout = read_ijb_layout(root)
    load = aligned_loader(layout)
    t0 = time.perf_counter()
    aligned = np.stack([load(k) for k in range(args.images)])
    info["load_align_images_per_s_one_thread"] = round(args.images / (time.perf_counter() - t0), 1)
    last = args.images % args.batch_size or args.batch_size
    for warm in (aligned[:args.batch_size], aligned[-last:]):  # both batch shapes, untimed
        embed_views(warm)
    return Setup(root, layout, load, embed_views, embedder.fingerprint(), aligned, embedder.embedding_size, info)


def ijb_pass(setup: Setup, args: argparse.Namespace, out: Path) -> tuple[float, np.ndarray]:
    """(seconds, views [N, 2, D]) of `embed_in_chunks` as `verify.evaluate_ijb` calls it, into a fresh `out`."""
    layout = setup.layout
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    files = embed_in_chunks(setup.load, args.images, setup.embed_views, out,
                            {"model": setup.fingerprint, "set": layout.name, "layout": layout.fingerprint(),
                             "aligned_size": ALIGNED_SIZE}, chunk_size=IJB_CHUNK_IMAGES,
                            batch_size=args.batch_size, workers=args.workers, desc=layout.name)
    seconds = time.perf_counter() - start
    return seconds, np.concatenate([np.load(p) for p in files])


def after_embedding_pass(setup: Setup, args: argparse.Namespace, out: Path) -> float:
    """Seconds of `verify.evaluate_ijb` on a work folder that holds every chunk (nothing left to embed)."""
    def refuse(images: np.ndarray) -> np.ndarray:
        raise RuntimeError("evaluate_ijb embedded images again: its chunk fingerprint is not the bench's")

    start = time.perf_counter()
    result = evaluate_ijb(setup.root, refuse, out, setup.fingerprint, chunk_size=IJB_CHUNK_IMAGES,
                          batch_size=args.batch_size, workers=args.workers)
    seconds = time.perf_counter() - start
    if result.record["images"] != args.images:
        raise RuntimeError(f"evaluate_ijb covered {result.record['images']} images, not {args.images}")
    return seconds


def measure(setup: Setup, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Seconds of every pass, per-repeat ratios and the largest difference between the ijb and bare views."""
    seconds: dict[str, list[float]] = {"bare": [], "ijb": [], "after_embedding": []}
    cpu: dict[str, list[float]] = {"bare": [], "ijb": []}  # process CPU seconds (every thread) per pass
    ratios: list[float] = []
    whole_ratios: list[float] = []
    max_diff = 0.0
    out = work / "work"
    for rep in range(args.repeats):
        order = ["bare", "ijb", "ijb", "bare"] if rep % 2 == 0 else ["ijb", "bare", "bare", "ijb"]
        spent = {"bare": 0.0, "ijb": 0.0}
        for variant in order:
            cpu_start = time.process_time()
            if variant == "bare":
                t, bare_views = bare_pass(setup.embed_views, setup.aligned, args.batch_size)
            else:
                t, ijb_views = ijb_pass(setup, args, out)
            cpu[variant].append(time.process_time() - cpu_start)
            seconds[variant].append(t)
            spent[variant] += t
        max_diff = max(max_diff, float(np.abs(ijb_views - bare_views).max()))
        seconds["after_embedding"].append(after_embedding_pass(setup, args, out))
        ratios.append(spent["bare"] / spent["ijb"])
        whole_ratios.append(spent["bare"] / (spent["ijb"] + 2 * seconds["after_embedding"][-1]))
        print(f"repeat {rep + 1}/{args.repeats} ({', '.join(order)}): bare "
              + ", ".join(f"{args.images / t:.1f}" for t in seconds["bare"][-2:]) + " img/s, ijb "
              + ", ".join(f"{args.images / t:.1f}" for t in seconds["ijb"][-2:])
              + f" img/s, ratio {ratios[-1]:.3f}, after embedding {seconds['after_embedding'][-1]:.2f}s; "
              f"load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    shutil.rmtree(out, ignore_errors=True)
    if max_diff > 1e-3:
        raise RuntimeError(f"the IJB path's views differ from the bare forward's by {max_diff}")
    n = args.images
    ijb_s, rest_s = median(seconds["ijb"]), median(seconds["after_embedding"])
    return {"bare_ips": n / median(seconds["bare"]), "ijb_ips": n / ijb_s, "ratio": median(ratios),
            "whole_ips": n / (ijb_s + rest_s), "whole_ratio": median(whole_ratios), "after_embedding_s": rest_s,
            "per_pass_ips": {v: [round(n / t, 2) for t in seconds[v]] for v in ("bare", "ijb")},
            "per_repeat_ratio": [round(r, 4) for r in ratios], "max_diff": max_diff,
            "cpu_ms_per_image": {v: round(1e3 * median(c) / n, 3) for v, c in cpu.items()}}


def main() -> None:
    args = parse_args()
    quiet()
    device = pick_device(args.device)
    threads = set_threads(args.threads, device)
    load_start = round(os.getloadavg()[0], 2)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_ijb_embed_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        setup = prepare(args, work, device)
        m = measure(setup, args, work)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    info, ratio, cpu = setup.info, m["ratio"], m["cpu_ms_per_image"]
    peak_mb = rss_peak_mb()
    print_table(f"IJB embedding throughput: {args.images} loose crops (side {info['crop_side_mean']:.0f} px mean) "
                f"of {info['faces']}, teacher {info['teacher']}, batch {args.batch_size}, workers {args.workers}, "
                f"medians of {args.repeats} repeats", ["variant", "images/s", "ratio to bare", "CPU ms/image"], [
                    ["bare embed_views (image + flip, aligned faces in RAM)", m["bare_ips"], 1.0, cpu["bare"]],
                    ["ijb: embed_in_chunks(aligned_loader): read, decode, align, embed, write", m["ijb_ips"], ratio,
                     cpu["ijb"]],
                    [f"whole evaluate_ijb (+ {m['after_embedding_s']:.2f}s layout, pooling, scores, metrics)",
                     m["whole_ips"], m["whole_ratio"], None],
                    ["decode + align alone, one thread", info["load_align_images_per_s_one_thread"], None,
                     1e3 / info["load_align_images_per_s_one_thread"]],
                ])
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    print(f"ijb / bare = {ratio:.3f} ({verdict} the >= {TARGET_RATIO} target); CPU work bare / ijb = "
          f"{cpu['bare'] / cpu['ijb']:.3f}; peak RSS {peak_mb:.0f} MiB")
    emit_json({
        "benchmark": "ijb_embed_throughput",
        "images": args.images, "batch_size": args.batch_size, "workers": args.workers, "repeats": args.repeats,
        "chunk_size": IJB_CHUNK_IMAGES, "prefetch_batches": PREFETCH_BATCHES, "embedding_size": setup.embedding_size,
        **info,
        "bare_images_per_s": round(m["bare_ips"], 2),
        "ijb_images_per_s": round(m["ijb_ips"], 2),
        "ratio_ijb_to_bare": round(ratio, 4),
        "whole_evaluate_ijb_images_per_s": round(m["whole_ips"], 2),
        "ratio_whole_evaluate_ijb_to_bare": round(m["whole_ratio"], 4),
        "after_embedding_seconds": round(m["after_embedding_s"], 3),
        "per_pass_images_per_s": m["per_pass_ips"],
        "per_repeat_ratio": m["per_repeat_ratio"],
        "max_abs_view_difference": m["max_diff"],
        "cpu_ms_per_image": cpu,
        "cpu_ratio_bare_to_ijb": round(cpu["bare"] / cpu["ijb"], 4),
        "peak_rss_mb": round(peak_mb, 1),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "load_avg_1min_start": load_start,
        **machine_info(device),  # load_avg_1min: at the end
        "torch_threads": threads,
    })


if __name__ == "__main__":
    main()
