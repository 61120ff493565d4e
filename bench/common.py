"""Helpers shared by the benchmark scripts: device choice, timing, memory peaks, synthetic inputs, output.

Every script prints a short table for people and, as its last stdout line, one JSON object with the
figures. Timings on a shared machine are noisy, so the scripts alternate the variants they compare
and report medians over repeats; `machine_info()` records the load average next to the figures.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import resource
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Before torch and the project import tqdm (it reads TQDM_* at import): no progress bars inside timings
# (the scripts set it too, ahead of their own torch import).
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch


def quiet() -> None:
    """Warnings-only logging on stderr."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger().setLevel(logging.WARNING)


def pick_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_threads(threads: int, device: torch.device) -> int:
    """Set torch's intra-op threads; returns the count in use.

    threads > 0: that many; 0: torch's default (one per core); < 0 (the scripts' default): one thread
    on CPU, torch's default on CUDA. On a 2-core machine shared with other jobs, two OpenMP threads
    wait on each other whenever another process holds a core: an IResNet-18 forward pass measured
    0.26-2.1 s with 2 threads and a steady 0.15 s with 1, so one thread gives far steadier CPU timings.
    """
    if threads < 0 and device.type == "cpu":
        threads = 1
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work so that wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed(device: torch.device, out: list[float]) -> Iterator[None]:
    """Append the block's wall time (seconds, CUDA synchronised at both ends) to `out`."""
    sync(device)
    start = time.perf_counter()
    yield
    sync(device)
    out.append(time.perf_counter() - start)


def reset_gpu_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def gpu_peak_mb(device: torch.device) -> float | None:
    """Peak allocated CUDA memory since the last reset, MiB (None on CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def drop_page_cache(path: Path) -> None:
    """Ask the kernel to evict the file's clean pages from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def rss_peak_mb() -> float:
    """Peak resident set size of this process, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def machine_info(device: torch.device) -> dict[str, Any]:
    """Where the figures were measured: device, threads, cores and the 1-minute load average."""
    info: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain fixed-width table on stdout."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    print(title)
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)))
    print()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return "-" if value is None else str(value)


def emit_json(figures: dict[str, Any]) -> None:
    """The figures as the last stdout line: one JSON object."""
    print(json.dumps(figures, sort_keys=True, default=_json_default), flush=True)


def report_json(figures: dict[str, Any], path: Path | None) -> None:
    """The figures as indented JSON on stdout and, when `path` is given, in that file (a results table)."""
    text = json.dumps(figures, indent=1, default=_json_default)
    print(text, flush=True)
    if path is not None:
        path.write_text(text + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_random_backbone(arch: str, embedding_size: int, image_size: int, path: Path, seed: int = 0,
                         calibration_images: int = 16) -> Path:
    """A random-weight backbone with calibrated BatchNorm statistics, saved as a plain-state_dict `backbone.pth`.

    Straight from initialisation, a deep IResNet in eval mode (running mean 0, variance 1) scales its
    activations by a constant factor per block: IResNet-50 overflows to inf at 112 px, shallower ones
    can sink into float32 denormals, which makes CPU kernels tens of times slower and would distort
    every timing. One train-mode pass over `calibration_images` synthetic faces (cumulative BN
    averages) sets the running statistics, so eval-mode activations stay O(1) as in a trained network.
    """
    from models import create_backbone
    from readers import SyntheticDataset

    torch.manual_seed(seed)
    model = create_backbone(arch, embedding_size, image_size)
    if calibration_images:
        faces = SyntheticDataset(calibration_images, 1, image_size, seed + 4242, 1.0)
        calibrate_batchnorm(model, np.stack([faces.load(i) for i in range(len(faces))]))
    torch.save(model.state_dict(), path)
    return path


def calibrate_batchnorm(model: torch.nn.Module, images: np.ndarray, passes: int = 1) -> None:
    """Set a random-weight model's BatchNorm running statistics to their cumulative average over `passes`
    train-mode passes on uint8 RGB faces [n, S, S, 3] (student input normalisation); left in eval mode."""
    from models.preprocess import student_input

    for bn in model.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration passes
    model.train()
    x = student_input(torch.from_numpy(np.ascontiguousarray(images)))
    with torch.no_grad():
        for _ in range(passes):
            model(x)
    model.eval()


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, in place; returns x."""
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


def clustered_unit_vectors(n: int, dim: int, per_identity: int, noise: float, seed: int,
                           block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Identity-clustered unit embeddings: emb [n, dim] float32 and sorted labels [n] int64.

    Labels are drawn uniformly over n / per_identity identities and sorted (as a folder or .rec
    listing groups them), so identity sizes vary around `per_identity`. Row = normalize(centre +
    noise * g) with g ~ N(0, I / dim); cosine to the centre is about 1 / sqrt(1 + noise^2) (noise 1:
    0.71; same-identity pairs about 0.5). Built block by block in float32 to bound memory.
    """
    rng = np.random.default_rng(seed)
    classes = max(1, n // per_identity)
    labels = np.sort(rng.integers(0, classes, size=n)).astype(np.int64)
    centres = unit_rows(rng.standard_normal((classes, dim), dtype=np.float32))
    emb = np.empty((n, dim), dtype=np.float32)
    scale = np.float32(noise / np.sqrt(dim))
    for start in range(0, n, block):
        stop = min(start + block, n)
        part = rng.standard_normal((stop - start, dim), dtype=np.float32)
        part *= scale
        part += centres[labels[start:stop]]
        emb[start:stop] = unit_rows(part)
    return emb, labels
