"""Teacher-cache read speed: `TeacherCache.targets` for random batches, from RAM and from the HDF5 file.

    python bench/cache_reads.py [--path /tmp/bench_cache_1m.h5] [--rows 1000000] [--dim 512]
        [--batch 512] [--ram-batches 1000] [--file-batches 100] [--cold-batches 20] [--repeats 5]

The cache (N rows x 2 views x D, float16, random unit vectors, 100 rows per identity) is written with
`cache.CacheWriter` in blocks of 32768 rows and finalised like a real one; an existing file at `--path`
with the same N and D is reused (only a file this script wrote is ever rebuilt: its dataset format
is `bench-random`). Each batch is `--batch` rows drawn uniformly with replacement plus random flip
bits, drawn before timing. Variants:
- ram: `TeacherCache(path, in_ram="always")` (embeddings loaded once, float16 in RAM);
- file, warm: `in_ram="never"`, sorted reads from the file while its pages sit in the OS page cache
  (the file was just written or loaded), so this measures HDF5 + copy costs, not the disk;
- file, cold (optional, `--cold-batches`): the same after `posix_fadvise(POSIX_FADV_DONTNEED)` on the
  file before each round, which evicts its clean pages from this machine's page cache (a virtual
  disk may still be cached by the host). Cold rounds run last so that they do not cool the warm ones.
A diagnostic row times the bare float16 gather `embeddings[rows, flips]` from the same RAM array (no
range checks, no float32 conversion), to show where the RAM path's time goes.
RAM, gather and warm-file rounds alternate; figures are medians over `--repeats` rounds (target: >= 1M
embeddings/s from RAM).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import preamble

from bench.common import (
    drop_page_cache,
    emit_json,
    machine_info,
    median,
    pick_device,
    print_table,
    quiet,
    unit_rows,
)
from cache import CacheWriter, TeacherCache, identity_csr
from common.errors import ConfigError

BENCH_FORMAT = "bench-random"
WRITE_BLOCK = 32768
PER_IDENTITY = 100


def build_cache(path: Path, rows: int, dim: int, seed: int) -> float:
    """Write a finished cache of random unit vectors at `path`; returns the seconds it took."""
    start = time.perf_counter()
    labels = np.arange(rows, dtype=np.int64) // PER_IDENTITY
    classes = int(labels[-1]) + 1
    keys = [f"bench/{i:08d}" for i in range(rows)]
    attrs = {
        "teacher": {"arch": "random-unit", "weights_sha256": "", "input_size": 112,
                    "preprocessing": {"layout": "NCHW", "color": "RGB", "mean": [0.5] * 3, "std": [0.5] * 3}},
        "dataset": {"format": BENCH_FORMAT, "root": f"seed={seed}", "listing_sha256": "", "rows": rows,
                    "classes": classes},
    }
    writer = CacheWriter.open(path, n_rows=rows, dim=dim, dtype="float16", labels=labels, keys=keys, attrs=attrs,
                              fresh=True)
    rng = np.random.default_rng(seed)
    for first in range(0, rows, WRITE_BLOCK):
        last = min(first + WRITE_BLOCK, rows)
        emb = unit_rows(rng.standard_normal((last - first, 2, dim), dtype=np.float32))
        writer.write(np.arange(first, last, dtype=np.int64), emb)
        print(f"\rwriting {path}: {last}/{rows} rows", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    identity_rows, identity_offsets = identity_csr(labels, classes)
    writer.finalize(positives=np.full((rows, 1), -1, dtype=np.int64), positive_sims=np.zeros((rows, 1), np.float32),
                    identity_rows=identity_rows, identity_offsets=identity_offsets)
    return time.perf_counter() - start


def ensure_cache(path: Path, rows: int, dim: int, seed: int) -> tuple[bool, float]:
    """(reused, build seconds): reuse a matching file, rebuild one this script wrote, refuse anything else."""
    if path.exists():
        try:
            existing = TeacherCache(path, in_ram="never")
        except ConfigError as e:
            raise SystemExit(f"{path} exists but is not a usable cache ({e}); pass another --path") from None
        ours = existing.dataset_fingerprint.get("format") == BENCH_FORMAT
        match = existing.num_rows == rows and existing.embedding_dim == dim and existing.dtype == "float16"
        existing.close()
        if match:
            return True, 0.0
        if not ours:
            raise SystemExit(f"{path} is a cache this script did not write ({existing.num_rows} rows, "
                             f"D={existing.embedding_dim}); pass another --path")
        path.unlink()
    return False, build_cache(path, rows, dim, seed)


def read_round(cache: TeacherCache, batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Embeddings per second for `cache.targets` over the batches."""
    start = time.perf_counter()
    count = 0
    for rows, flips in batches:
        count += len(cache.targets(rows, flips))
    return count / (time.perf_counter() - start)


def gather_round(cache: TeacherCache, batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Embeddings per second for the bare float16 gather from the RAM array (no checks, no float32 copy)."""
    emb = cache.embeddings
    start = time.perf_counter()
    count = 0
    for rows, flips in batches:
        count += len(emb[rows, flips.astype(np.intp)])
    return count / (time.perf_counter() - start)


def main() -> None:
    ap = preamble.parser(__doc__)
    ap.add_argument("--path", default="/tmp/bench_cache_1m.h5")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--ram-batches", type=int, default=1000, help="batches per RAM round")
    ap.add_argument("--file-batches", type=int, default=100, help="batches per warm file round")
    ap.add_argument("--cold-batches", type=int, default=20, help="batches per cold file round (0: skip)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    quiet()
    path = Path(args.path)
    reused, build_s = ensure_cache(path, args.rows, args.dim, args.seed)

    rng = np.random.default_rng(args.seed + 1)

    def draw(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(rng.integers(0, args.rows, size=args.batch), rng.integers(0, 2, size=args.batch).astype(np.uint8))
                for _ in range(count)]

    start = time.perf_counter()
    ram = TeacherCache(path, in_ram="always")
    load_s = time.perf_counter() - start
    file = TeacherCache(path, in_ram="never")
    read_round(file, draw(2))  # open the file handle outside the timings
    read_round(ram, draw(2))
    ram_rates: list[float] = []
    gather_rates: list[float] = []
    warm_rates: list[float] = []
    for _ in range(args.repeats):
        ram_rates.append(read_round(ram, draw(args.ram_batches)))
        gather_rates.append(gather_round(ram, draw(args.ram_batches)))
        warm_rates.append(read_round(file, draw(args.file_batches)))
    cold_rates: list[float] = []
    if args.cold_batches:
        for _ in range(args.repeats):
            batches = draw(args.cold_batches)
            drop_page_cache(path)
            cold_rates.append(read_round(file, batches))
    file.close()

    nbytes = args.rows * 2 * args.dim * 2
    ram_rate, warm_rate, gather_rate = median(ram_rates), median(warm_rates), median(gather_rates)
    cold_rate = median(cold_rates) if cold_rates else None
    table = [
        ["ram (in_ram=always)", ram_rate, ram_rate / warm_rate, args.ram_batches],
        ["  diagnostic: float16 gather only", gather_rate, gather_rate / warm_rate, args.ram_batches],
        ["file, warm page cache (in_ram=never)", warm_rate, 1.0, args.file_batches],
    ]
    if cold_rate is not None:
        table.append(["file, page cache dropped (in_ram=never)", cold_rate, cold_rate / warm_rate, args.cold_batches])
    print_table(f"TeacherCache.targets: {args.rows} rows x 2 x {args.dim} float16 ({nbytes / 2**30:.2f} GiB), "
                f"random batches of {args.batch}, medians of {args.repeats} rounds",
                ["variant", "embeddings/s", "vs warm file", "batches/round"], table)
    verdict = "meets" if ram_rate >= 1e6 else "misses"
    print(f"RAM: {ram_rate / 1e6:.2f}M embeddings/s ({verdict} the >= 1M/s target); loading "
          f"{nbytes / 2**30:.2f} GiB into RAM took {load_s:.1f}s; "
          f"cache {'reused' if reused else f'built in {build_s:.1f}s'}")
    emit_json({
        "benchmark": "cache_reads",
        "path": str(path), "rows": args.rows, "dim": args.dim, "dtype": "float16", "batch": args.batch,
        "repeats": args.repeats, "cache_reused": reused, "build_seconds": round(build_s, 2),
        "ram_load_seconds": round(load_s, 3),
        "ram_embeddings_per_s": round(ram_rate),
        "ram_float16_gather_only_embeddings_per_s": round(gather_rate),
        "file_warm_embeddings_per_s": round(warm_rate),
        "file_cold_embeddings_per_s": None if cold_rate is None else round(cold_rate),
        "per_round": {"ram": [round(v) for v in ram_rates], "ram_gather": [round(v) for v in gather_rates],
                      "file_warm": [round(v) for v in warm_rates],
                      "file_cold": [round(v) for v in cold_rates]},
        "target_ram_embeddings_per_s": 1_000_000,
        "meets_target": ram_rate >= 1e6,
        **machine_info(pick_device("cpu")),
    })


if __name__ == "__main__":
    main()
