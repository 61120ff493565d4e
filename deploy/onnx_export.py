"""A student backbone -> an ONNX file with a dynamic batch axis and its preprocessing in the metadata.

Exported with torch's legacy TorchScript-based exporter (`dynamo=False`) at the opset given. The
input is float [batch, 3, S, S], the normalised face (`models.preprocess.student_input`); the output is
the raw embedding [batch, D], not L2-normalised. `verify_onnx` runs the file with onnxruntime and
compares it with the torch module image by image.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.errors import PipelineError
from config.choices import EXPORT_DTYPES
from models.preprocess import student_input

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
DTYPES = {name: getattr(torch, name) for name in EXPORT_DTYPES}
VERIFY_BATCH_SIZES = (1, 7)
MIN_COSINE = {"float32": 0.9999, "float16": 0.999}  # float16 weights round at about 1e-3 relative


def export_onnx(module: nn.Module, path: str | Path, input_size: int, metadata: dict[str, str],
                opset: int, dtype: str = "float32") -> None:
    """Write a copy of `module` (eval mode, CPU, `dtype`) as ONNX to `path`, `metadata` as its metadata_props.

    Inputs [batch, 3, input_size, input_size] named `INPUT_NAME`, output [batch, D] named `OUTPUT_NAME`;
    the batch axis is dynamic. The model is checked with `onnx.checker` before it is written.
    """
    import onnx

    net = copy.deepcopy(module).eval().cpu().to(DTYPES[dtype])
    dummy = torch.zeros(2, 3, input_size, input_size, dtype=DTYPES[dtype])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is chosen: no onnxscript here
        torch.onnx.export(net, (dummy,), str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "icdface-distill"
    onnx.checker.check_model(model)
    Path(path).write_bytes(model.SerializeToString())


@dataclass(frozen=True)
class Verification:
    """Per-image cosine between onnxruntime's and torch's embedding, lowest over each batch size."""

    min_cosine: dict[int, float]
    threshold: float

    @property
    def passed(self) -> bool:
        return all(c >= self.threshold for c in self.min_cosine.values())


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def verify_onnx(path: str | Path, module: nn.Module, images: np.ndarray, dtype: str = "float32") -> Verification:
    """Run the ONNX file at `path` on uint8 RGB faces [n, S, S, 3] at each of `VERIFY_BATCH_SIZES` and compare
    each image's embedding with the float32 torch `module`'s (a copy, eval mode, CPU), over the first
    max(VERIFY_BATCH_SIZES) images: at batch size 1 one call per image, at 7 one call for all."""
    import onnxruntime as ort

    count = max(VERIFY_BATCH_SIZES)
    if len(images) < count:
        raise ValueError(f"verify_onnx needs at least {count} images, got {len(images)}")
    x = student_input(torch.from_numpy(np.ascontiguousarray(images[:count])))
    with torch.no_grad():
        expected = copy.deepcopy(module).eval().cpu().float()(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = x.numpy().astype(np.float16 if dtype == "float16" else np.float32)
    lowest: dict[int, float] = {}
    for size in VERIFY_BATCH_SIZES:
        got = np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: feed[s:s + size]})[0]
                              for s in range(0, count, size)])
        if got.shape != expected[:len(got)].shape:
            raise PipelineError(f"ONNX model '{path}' gives output {list(got.shape)} for {len(got)} images, "
                                f"torch gives {list(expected[:len(got)].shape)}")
        lowest[size] = float(_cosines(got, expected[:len(got)]).min())
    return Verification(lowest, MIN_COSINE[dtype])


LATENCY_BATCH_SIZES = (1, 32)
LATENCY_SECONDS = 1.0  # timed runs per batch size: at least LATENCY_MIN_RUNS, then until this many seconds
LATENCY_MIN_RUNS = 5


def onnx_latency_ms(path: str | Path, input_size: int, dtype: str = "float32",
                    batch_sizes: tuple[int, ...] = LATENCY_BATCH_SIZES) -> dict[str, float]:
    """Median wall time in milliseconds of one onnxruntime call (CPU, one thread) on a batch of zero faces
    [b, 3, S, S], per batch size b (keys "1", "32"): one warm-up call, then at least `LATENCY_MIN_RUNS` timed
    calls and more until `LATENCY_SECONDS` have passed."""
    import time

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out: dict[str, float] = {}
    for b in batch_sizes:
        feed = {INPUT_NAME: np.zeros((b, 3, input_size, input_size), np.float16 if dtype == "float16" else np.float32)}
        session.run([OUTPUT_NAME], feed)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < LATENCY_MIN_RUNS or time.perf_counter() - start < LATENCY_SECONDS:
            t0 = time.perf_counter()
            session.run([OUTPUT_NAME], feed)
            times.append(time.perf_counter() - t0)
        out[str(b)] = round(float(np.median(times)) * 1000.0, 3)
    return out
