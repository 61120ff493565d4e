"""`cli.py extract` with a real teacher on real faces, against a bare onnxruntime loop over the same images.

    python bench/extract_real.py [--data ../shared/data/lfw_devtrain] [--onnx ../shared/models/mobileface.onnx]
        [--batch-size 64] [--workers 1] [--repeats 2]

- bare: one process that opens the `.rec` with the toolkit's reader (its JPEG decoding), and for each
  batch of `--batch-size` rows decodes the images, stacks them with their horizontal flips into one
  batch, scales the pixels as the model wants (NHWC, RGB, x / 255) and runs one onnxruntime
  `session.run`; timed from before the session is created to the last batch (model load included).
- extract: the whole command, `python cli.py extract` in a fresh process with the same teacher and
  data, timed from launch to exit (interpreter and imports, weight hashing, the decode -> teacher ->
  HDF5 loop with `--workers` decoding workers, positives, FAISS index, quality report).
- ratio = extract images/s / bare images/s (target >= 0.9).

The variants alternate (bare, extract, extract, bare, ...) and the figures are medians; the last stdout
line is one JSON object. On this 2-core machine onnxruntime uses its default threads in both variants.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import preamble
import torch
from preamble import REPO

from bench.common import emit_json, machine_info, median, print_table, quiet
from config.schema import DataConfig
from readers import build_dataset


def teacher_settings(onnx: Path, batch_size: int) -> list[str]:
    return ["teacher.arch=\"onnx\"", f"teacher.weights=\"{onnx}\"", "teacher.input_layout=\"NHWC\"",
            "teacher.color=\"RGB\"", "teacher.mean=[0.0, 0.0, 0.0]",
            f"teacher.std=[{1 / 255!r}, {1 / 255!r}, {1 / 255!r}]", "teacher.embedding_size=256",
            f"teacher.batch_size={batch_size}"]


def bare_pass(onnx: Path, data: Path, batch_size: int) -> tuple[float, int]:
    """(seconds, images) for decode + both views in one `session.run` per batch."""
    import onnxruntime as ort

    start = time.perf_counter()
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    dataset = build_dataset(DataConfig(format="rec", root=str(data), image_size=112, workers=0))
    n = len(dataset)
    for first in range(0, n, batch_size):
        images = np.stack([dataset.load(r) for r in range(first, min(first + batch_size, n))])
        both = np.concatenate([images, images[:, :, ::-1]]).astype(np.float32) / 255.0
        session.run(None, {name: both})
    return time.perf_counter() - start, n


def extract_pass(onnx: Path, data: Path, batch_size: int, workers: int) -> tuple[float, dict]:
    """(seconds, the command's JSON summary) for the whole `cli.py extract` in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="extract_real_") as tmp:
        settings = ["data.format=\"rec\"", f"data.root=\"{data}\"", f"data.workers={workers}",
                    f"run.dir=\"{tmp}\"", *teacher_settings(onnx, batch_size)]
        cmd = [sys.executable, str(REPO / "cli.py"), "extract", *[a for s in settings for a in ("--set", s)]]
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"extract failed ({done.returncode}):\n{done.stderr[-3000:]}")
        summary = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, summary


def main() -> None:
    ap = preamble.parser(__doc__)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "lfw_devtrain")
    ap.add_argument("--onnx", type=Path, default=REPO.parent / "shared" / "models" / "mobileface.onnx")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    quiet()
    for path in (args.data / "train.rec", args.onnx):
        if not path.is_file():
            raise SystemExit(f"{path} does not exist")
    bare_s, extract_s, ratios = [], [], []
    summary: dict = {}
    n = 0
    for r in range(args.repeats):
        order = ("bare", "extract") if r % 2 == 0 else ("extract", "bare")
        got: dict[str, float] = {}
        for variant in order:
            if variant == "bare":
                got["bare"], n = bare_pass(args.onnx, args.data.resolve(), args.batch_size)
            else:
                got["extract"], summary = extract_pass(args.onnx, args.data.resolve(), args.batch_size, args.workers)
            print(f"repeat {r} {variant}: {got[variant]:.1f} s", file=sys.stderr, flush=True)
        bare_s.append(got["bare"])
        extract_s.append(got["extract"])
        ratios.append(got["bare"] / got["extract"])
    rows = summary.get("rows", n) + summary.get("skipped", 0)
    figures = {
        "images": rows,
        "bare_seconds": round(median(bare_s), 2), "bare_images_per_s": round(rows / median(bare_s), 1),
        "extract_seconds": round(median(extract_s), 2), "extract_images_per_s": round(rows / median(extract_s), 1),
        "extract_loop_seconds": summary.get("seconds"), "ratio": round(median(ratios), 3),
        "batch_size": args.batch_size, "workers": args.workers, "repeats": args.repeats,
        "machine": machine_info(torch.device("cpu")),
    }
    print_table("extract vs bare onnxruntime (both views, one run per batch)", ["variant", "seconds", "images/s"],
                [["bare", figures["bare_seconds"], figures["bare_images_per_s"]],
                 ["extract (whole command)", figures["extract_seconds"], figures["extract_images_per_s"]]])
    emit_json(figures)


if __name__ == "__main__":
    main()
