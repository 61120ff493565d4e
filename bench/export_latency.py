"""An exported student against the torch module: CPU images/s of onnxruntime (float32, float16) and torch.

    python bench/export_latency.py [--arch mobilefacenet] [--embedding-size 512] [--image-size 112]
        [--batch-sizes 1 32] [--seconds 3] [--repeats 3] [--threads 1] [--out FILE]

Set-up (untimed): a random-weight `--arch` student (`models.build_student`) whose BatchNorm statistics are
set by 3 train-mode passes over 40 synthetic faces (with the initial statistics the float16 model's
cosine to torch is only 0.995: activations grow layer by layer; with statistics as training leaves
them it is 0.99995), exported by `deploy.onnx_export` in float32 and float16, exactly as `icdface export`
writes it, and verified (`verify_onnx`). Timed: for each
batch size, a repeat runs torch, onnx float32, onnx float16, then the reverse order, each for `--seconds`
of back-to-back forward passes on the same normalised input; images/s is passes x batch / seconds, median
over repeats. Ratios are of the same repeat. torch runs under `torch.inference_mode()`; both use `--threads`
intra-op threads (1: steady figures on a shared 2-core machine). Defaults take about a minute.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import preamble
import torch

from bench.common import calibrate_batchnorm, emit_json, machine_info, median, print_table, quiet
from config.schema import StudentConfig
from deploy.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx, verify_onnx
from models import build_student
from readers import SyntheticDataset

VARIANTS = ("torch", "onnx_float32", "onnx_float16")


def _rate(run: Callable[[], Any], batch: int, seconds: float) -> float:
    passes, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run()
        passes += 1
    return passes * batch / (time.perf_counter() - start)


def measure(module: torch.nn.Module, sessions: dict[str, Any], batch: int,
            args: argparse.Namespace) -> dict[str, float]:
    """Median images/s of each variant at `batch`, and each ONNX variant's ratio to torch in the same repeat."""
    x = torch.randn(batch, 3, args.image_size, args.image_size)
    feeds = {d: {INPUT_NAME: x.numpy().astype(d)} for d in ("float32", "float16")}

    def torch_pass() -> Any:
        with torch.inference_mode():
            return module(x)

    runs: dict[str, Callable[[], Any]] = {
        "torch": torch_pass,
        "onnx_float32": lambda: sessions["float32"].run([OUTPUT_NAME], feeds["float32"]),
        "onnx_float16": lambda: sessions["float16"].run([OUTPUT_NAME], feeds["float16"]),
    }
    for run in runs.values():
        run()  # warm-up
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    ratios: dict[str, list[float]] = {"onnx_float32": [], "onnx_float16": []}
    for r in range(args.repeats):
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        got = {v: _rate(runs[v], batch, args.seconds) for v in order}
        for v in VARIANTS:
            rates[v].append(got[v])
        for v in ratios:
            ratios[v].append(got[v] / got["torch"])
    record = {f"{v}_images_per_s": median(rates[v]) for v in VARIANTS}
    return record | {f"{v}_over_torch": median(ratios[v]) for v in ratios}


def main() -> None:
    p = preamble.parser(__doc__)
    p.add_argument("--arch", default="mobilefacenet")
    p.add_argument("--embedding-size", type=int, default=512)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    quiet()
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    module = build_student(StudentConfig(arch=args.arch, embedding_size=args.embedding_size), args.image_size).eval()
    faces = SyntheticDataset(20, 2, args.image_size, seed=0, difficulty=1.0)
    images = np.stack([faces.load(i) for i in range(40)])
    calibrate_batchnorm(module, images, passes=3)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = args.threads
    sessions, checks = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "float16"):
            path = Path(tmp) / f"{dtype}.onnx"
            export_onnx(module, path, args.image_size, {}, opset=17, dtype=dtype)
            checks[dtype] = verify_onnx(path, module, images[:7], dtype).min_cosine
            sessions[dtype] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    figures: dict[str, Any] = {"config": vars(args) | {"out": str(args.out)}, "verification_min_cosine": checks,
                               "machine": machine_info(torch.device("cpu")), "batch": {}}
    rows = []
    for batch in args.batch_sizes:
        record = measure(module, sessions, batch, args)
        figures["batch"][str(batch)] = record
        rows.append([batch, *(record[f"{v}_images_per_s"] for v in VARIANTS),
                     record["onnx_float32_over_torch"], record["onnx_float16_over_torch"]])
    print_table(f"{args.arch} {args.embedding_size}-d at {args.image_size} px, {args.threads} thread(s), images/s",
                ["batch", *VARIANTS, "fp32/torch", "fp16/torch"], rows)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1, default=str) + "\n")
    emit_json(figures)


if __name__ == "__main__":
    main()
