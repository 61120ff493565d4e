"""Users' scale without images or a model: every part of the pipeline around the teacher and the student.

    python bench/scale.py --preset ms1mv2 [--path /work/scale/ms1mv2.h5] [--reuse]
    python bench/scale.py --preset glint360k            # the cache read from the file, never loaded whole
    python bench/scale.py --rows 200000 --identities 4000 --dim 512   # any other size

A cache of `--rows` rows and `--identities` identities is written in the real HDF5 layout
(`cache.CacheWriter`, finalised with positives, identity table and checksums like `extract` does)
from synthetic teacher embeddings: one unit centre per identity (drawn around one of 256 group
centres, cosine ~0.25 between identities of a group, ~0 across groups), each row its centre plus
Gaussian noise (cosine to the centre about 0.7), its flipped view the row plus a smaller noise, both
normalised; identity sizes are log-normal (as skewed as MS1MV2's: a few large, many small), rows
grouped by identity as in a `.rec`, and `--label-noise` (3%) of rows filed under a random other
identity. Then, each timed on its own, from the file:

- `positives`: `cache.build_positives` over the file's view 0, identity by identity (exact);
- `finalize`: the identity table, positives and checksums added, the cache published;
- `index`: `cache.build_index` with `cache.index = "auto"` (flat up to 2 GiB of float32 rows, IVF-PQ
  above), plus `index_flat` when `--flat` is given; `index_recall_at_10`: `cache.index.index_recall`
  against exact search for `--queries` rows (1.0 for exact);
- `quality`: `cache.quality_report` streamed over the file (approximate centre search above 20k
  identities); `quality_suspect_recall`: of 4,000 random rows, the share of exact search's suspects
  that the approximate search also flags;
- `sampler_plan`: `IdentityBatchSampler.epoch_plan` for the shipped random batches (batch 512), and
  `sampler_plan_pxm` for P x M batches (128 x 4, random positive policy), each with its memory growth;
- the feature bank: a `FeatureBank` of all identities at K = `--bank-size` slots, float16, on the host
  (`bank_mb`), every slot filled first (the steady state: each anchor meets K - 1 or K bank entries);
- `host_ms_per_step`: the host side of a distill step at batch 512 with the cache in RAM (the next
  batch of the plan, its rows' targets, the anchors' bank slot table and the slots' teacher targets,
  the slot-table update), median over `--steps` steps; skipped when the embeddings do not fit
  `--ram-limit-gb`; `bank_gather_ms`: gathering and storing the slots' embeddings (device work on a GPU);
- `cold_read_rows_per_s`: `TeacherCache(in_ram="never").targets` for random batches of 512 after
  the file's pages are evicted (`posix_fadvise(DONTNEED)`), in `--read-workers` DataLoader workers as
  `distill` reads them (each worker reads its batch's rows sorted, in spans inside storage chunks that
  bridge gaps of up to `cache.direct.GAP_ROWS` rows); `cold_read_pxm_rows_per_s`: the same for P x M
  batches (128 identities x 4 rows, whose rows lie close together in a file grouped by identity);
  with `--compare-gaps R`, R alternating rounds of P x M reads with and without the gap bridging.

Peak RSS is this process's (`ru_maxrss`). The last stdout line is one JSON object (`preset`, `rows`,
`identities`, `dim`, `seconds` {write, positives, finalize, index, quality, sampler_plan, ...},
`peak_rss_mb`, `bank_mb`, `cold_read_rows_per_s`, `host_ms_per_step`, `index_recall_at_10`, ...).
An existing file at `--path` written by this script for the same sizes is reused with `--reuse`
(write, positives and finalize are then skipped), and `--phases` picks which later phases run
(`positives` then times the positives again from the finished file); `--keep` keeps the file.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import preamble
import torch
from torch.utils.data import DataLoader, Dataset

from bench.common import drop_page_cache, emit_json, machine_info, print_table, quiet
from cache import CacheWriter, TeacherCache, build_index, build_positives, identity_csr, quality_report
from cache.direct import GAP_ROWS
from cache.index import index_recall, resolve_kind
from cache.quality import EXACT_CENTRES, centre_index, identity_sums, nearest_other_centre, own_centre_cosines
from stages.training.bank import FeatureBank
from stages.training.sampler import IdentityBatchSampler

PRESETS = {
    "ms1mv2": {"rows": 5_822_653, "identities": 85_742, "dim": 512},
    "glint360k": {"rows": 17_091_657, "identities": 360_232, "dim": 512},
}
BENCH_FORMAT = "bench-scale"
WRITE_BLOCK = 32768
ROW_NOISE = 0.045  # per-coordinate noise of a row around its centre at D = 512: cosine to it ~0.7
VIEW_NOISE = 0.015
GROUPS = 256  # identity centres share directions, as faces of one age, gender or ethnicity do:
GROUP_SHARE = 0.5  # centre = 0.5 group + 0.87 own direction, so identities of one group have cosine ~0.25
BATCH = 512
# after write + positives + finalize (skipped by --reuse; "positives" then times them again from the cache)
PHASES = ("positives", "index", "quality", "sampler", "bank", "reads")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Timer:
    """Wall seconds and RSS growth of named phases."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.rss: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        before = current_rss_mb()
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        out = fn()
        self.seconds[name] = round(time.perf_counter() - start, 2)
        self.rss[name] = round(current_rss_mb() - before, 1)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {self.seconds[name]} s, peak RSS {peak_rss_mb():.0f} MB",
              file=sys.stderr, flush=True)
        return out


def identity_sizes(rows: int, identities: int, rng: np.random.Generator) -> np.ndarray:
    """Log-normal identity sizes (sigma 0.8), each >= 2, summing to `rows`."""
    if rows < 2 * identities:
        raise SystemExit(f"--rows {rows} must be at least twice --identities {identities}")
    weights = rng.lognormal(0.0, 0.8, identities)
    sizes = 2 + np.floor((rows - 2 * identities) * weights / weights.sum()).astype(np.int64)
    sizes[np.argsort(-weights)[:rows - int(sizes.sum())]] += 1
    return sizes


def synthetic_labels(rows: int, identities: int, label_noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(true identity [N], stored label [N]): rows grouped by true identity, `label_noise` of them relabelled."""
    rng = np.random.default_rng(seed)
    true = np.repeat(np.arange(identities, dtype=np.int64), identity_sizes(rows, identities, rng))
    labels = true.copy()
    noisy = rng.random(rows) < label_noise
    noisy[np.concatenate([[0], np.flatnonzero(np.diff(true)) + 1])] = False  # every identity keeps a row
    labels[noisy] = (true[noisy] + rng.integers(1, identities, int(noisy.sum()))) % identities
    return true, labels


class LazyKeys(Sequence[str]):
    """The keys `id<label>/<row>.jpg` without holding N Python strings."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, row: Any) -> Any:
        if isinstance(row, slice):
            return [self[i] for i in range(len(self))[row]]
        return f"id{int(self.labels[row])}/{int(row)}.jpg"


def write_cache(path: Path, true: np.ndarray, labels: np.ndarray, dim: int, seed: int) -> CacheWriter:
    """Write every row's two views into `<path>.partial` (the writer is left open for `finalize`)."""
    rows = len(labels)
    identities = int(labels.max()) + 1
    keys = LazyKeys(labels)
    attrs = {
        "teacher": {"arch": "synthetic-clusters", "weights_sha256": "", "input_size": 112,
                    "preprocessing": {"layout": "NCHW", "color": "RGB", "mean": [0.5] * 3, "std": [0.5] * 3}},
        "dataset": {"format": BENCH_FORMAT, "root": f"seed={seed}", "listing_sha256": "", "rows": rows,
                    "classes": identities},
    }
    writer = CacheWriter.open(path, n_rows=rows, dim=dim, dtype="float16", labels=labels, keys=list(keys),
                              attrs=attrs, fresh=True)
    gen = torch.Generator().manual_seed(seed)
    groups = torch.nn.functional.normalize(torch.randn(GROUPS, dim, generator=gen), dim=1)
    member = torch.randint(0, GROUPS, (identities,), generator=gen)
    centres = torch.nn.functional.normalize(GROUP_SHARE * groups[member] + (1 - GROUP_SHARE**2) ** 0.5
                                            * torch.randn(identities, dim, generator=gen) / dim**0.5, dim=1)
    true_t = torch.from_numpy(true)
    for first in range(0, rows, WRITE_BLOCK):
        last = min(first + WRITE_BLOCK, rows)
        view0 = centres[true_t[first:last]] + ROW_NOISE * torch.randn(last - first, dim, generator=gen)
        view0 = torch.nn.functional.normalize(view0, dim=1)
        view1 = torch.nn.functional.normalize(view0 + VIEW_NOISE * torch.randn(last - first, dim, generator=gen), dim=1)
        writer.write(np.arange(first, last, dtype=np.int64), torch.stack([view0, view1], dim=1).numpy())
        if (first // WRITE_BLOCK) % 20 == 0:
            print(f"\r  write: {last}/{rows} rows", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return writer


def reusable(path: Path, rows: int, dim: int, identities: int) -> bool:
    if not path.exists():
        return False
    try:
        with TeacherCache(path, in_ram="never", verify="none") as cache:
            return (cache.dataset_fingerprint.get("format") == BENCH_FORMAT and cache.num_rows == rows
                    and cache.embedding_dim == dim and cache.dataset_fingerprint.get("classes") == identities)
    except Exception:
        return False


def suspect_recall(cache: TeacherCache, labels: np.ndarray, sample: int, seed: int) -> float:
    """Of `sample` random rows that exact centre search calls suspects, the share `centre_index` also calls so."""
    num_classes = int(labels.max()) + 1
    present = np.flatnonzero(np.bincount(labels, minlength=num_classes) > 0)
    if len(present) <= EXACT_CENTRES:
        return 1.0
    sums = identity_sums(cache.view_rows(0), labels, num_classes)
    norms = np.linalg.norm(sums, axis=1)
    centres = (sums / norms[:, None])[present].astype(np.float32)
    rows = np.sort(np.random.default_rng([seed, 5]).choice(len(labels), size=sample, replace=False))
    e, lab = cache.view_rows(0).take(rows), labels[rows]
    _, loo = own_centre_cosines(e, lab, sums.astype(np.float32), norms)
    exact_index = faiss.IndexFlatIP(centres.shape[1])
    exact_index.add(centres)
    suspects = {}
    for name, index in (("exact", exact_index), ("approx", centre_index(centres))):
        _, cosine = nearest_other_centre(index, e, lab, present)
        suspects[name] = cosine > loo
    return float(suspects["approx"][suspects["exact"]].mean()) if suspects["exact"].any() else 1.0


def plan_stats(sampler: IdentityBatchSampler) -> tuple[float, float, int]:
    """(seconds, MB of RSS growth, batches) for one epoch plan."""
    before = current_rss_mb()
    start = time.perf_counter()
    plan = sampler.epoch_plan(0)
    seconds = time.perf_counter() - start
    grown = current_rss_mb() - before
    return seconds, grown, len(plan)


def prefill(bank: FeatureBank, labels: np.ndarray, seed: int) -> None:
    """Fill every identity's K slots with some of its rows (random embeddings), as after a few epochs."""
    rows, offsets = identity_csr(labels, bank.num_classes)
    rng = np.random.default_rng([seed, 11])
    counts = np.diff(offsets)
    picks = offsets[:-1, None] + (rng.random((bank.num_classes, bank.slots)) * counts[:, None]).astype(np.int64)
    entries = rows[picks.reshape(-1)]
    for start in range(0, len(entries), 1 << 16):
        part = torch.from_numpy(entries[start:start + (1 << 16)])
        emb = torch.nn.functional.normalize(torch.randn(len(part), bank.dim), dim=1)
        bank.update(torch.from_numpy(labels[part.numpy()]), part, torch.zeros_like(part), emb, 0)


def bank_figures(num_classes: int, slots: int, dim: int, cache: TeacherCache | None, labels: np.ndarray,
                 steps: int, seed: int) -> dict[str, Any]:
    """The bank's size, and the host side of a distill step at batch 512, median ms over `steps`.

    Host side: the plan's next batch, its teacher targets (stored dtype, cache in RAM), the anchors'
    slot table, the slots' teacher targets, and the slot-table update. The gather and the store of the
    slots' embeddings (`bank_gather_ms`) are device work when the bank lives on a GPU: timed apart.
    """
    bank = FeatureBank(num_classes, slots, dim, max_age=1000, dtype=torch.float16, place="host")
    out: dict[str, Any] = {"bank_mb": round(bank.memory_bytes() / 2**20, 1)}
    prefill(bank, labels, seed)
    sampler = IdentityBatchSampler(labels, None, BATCH, 4, random_share=1.0, seed=seed)
    plan = sampler.epoch_plan(0)
    rng = np.random.default_rng(seed)
    host_ms, gather_ms, slots_used = [], [], []
    emb = torch.nn.functional.normalize(torch.randn(BATCH, dim), dim=1)
    for step in range(min(steps, len(plan))):
        start = time.perf_counter()
        rows = plan[step]
        flips = rng.integers(0, 2, len(rows))
        lab, trows = torch.from_numpy(labels[rows]), torch.from_numpy(rows)
        if cache is not None:
            cache.targets(rows, flips, stored=True)
        slot_rows, slot_flips, valid = bank.slot_table(lab, trows, step)
        anchor, slot = torch.nonzero(valid, as_tuple=True)
        if cache is not None:
            cache.targets(slot_rows[anchor, slot].numpy(), slot_flips[anchor, slot].numpy(), stored=True)
        written = bank.update_table(lab, trows, torch.from_numpy(flips), step)
        mid = time.perf_counter()
        bank.embeddings(lab)
        bank.store(*written, emb)
        gather_ms.append((time.perf_counter() - mid) * 1e3)
        host_ms.append((mid - start) * 1e3)
        slots_used.append(len(anchor))
    warm = slice(min(len(host_ms) // 2, 20), None)
    out["bank_gather_ms"] = round(float(np.median(gather_ms[warm])), 3)
    out["bank_pairs_per_step"] = int(np.median(slots_used[warm]))
    out["host_ms_per_step"] = round(float(np.median(host_ms[warm])), 3) if cache is not None else None
    return out


class TargetBatches(Dataset[torch.Tensor]):
    """Each item a whole batch's teacher targets, read from the file as `distill`'s workers read them."""

    def __init__(self, cache: TeacherCache, batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.cache = cache
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> torch.Tensor:
        rows, flips = self.batches[i]
        return torch.from_numpy(self.cache.targets(rows, flips))


def random_batches(rows: int, batches: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`batches` batches of 512 random rows (sorted) and flip bits."""
    rng = np.random.default_rng([seed, 7])
    return [(np.sort(rng.choice(rows, BATCH, replace=False)), rng.integers(0, 2, BATCH)) for _ in range(batches)]


def pxm_batches(labels: np.ndarray, batches: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`batches` P x M batches (128 identities x 4 rows) drawn from one epoch plan, and flip bits."""
    plan = IdentityBatchSampler(labels, None, BATCH, 4, random_share=0.0, seed=seed).epoch_plan(0)
    rng = np.random.default_rng([seed, 8])
    picked = rng.choice(len(plan), min(batches, len(plan)), replace=False)
    return [(np.sort(plan[int(i)]), rng.integers(0, 2, BATCH)) for i in picked]


def cold_reads(path: Path, plan: list[tuple[np.ndarray, np.ndarray]], workers: int,
               gap_rows: int = GAP_ROWS) -> float:
    """Target rows per second for the batches of `plan` from the file after its pages were evicted,
    read in spans that bridge gaps of up to `gap_rows` rows (`cache.direct`)."""
    cache = TeacherCache(path, in_ram="never", verify="none")
    if cache._direct is not None:  # the bench compares gaps; the pipeline always reads with the default
        cache._direct.gap_rows = gap_rows
    loader = DataLoader(TargetBatches(cache, plan), batch_size=None, shuffle=False, num_workers=workers,
                        prefetch_factor=4 if workers else None)
    drop_page_cache(path)
    start = time.perf_counter()
    count = sum(len(t) for t in loader)
    seconds = time.perf_counter() - start
    cache.close()
    return count / seconds


def compare_gaps(path: Path, labels: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """Cold P x M reads in runs of consecutive rows (gap 0) against spans over gaps (`GAP_ROWS`),
    alternating, each round on fresh batches (a virtual disk's host may cache what was read): medians."""
    speeds: dict[int, list[float]] = {0: [], GAP_ROWS: []}
    for r in range(args.compare_gaps):
        for gap in (0, GAP_ROWS) if r % 2 == 0 else (GAP_ROWS, 0):
            plan = pxm_batches(labels, args.read_batches, args.seed + 100 + 2 * r + (gap > 0))
            speeds[gap].append(cold_reads(path, plan, args.read_workers, gap))
    return {"cold_read_pxm_gap0_rows_per_s": round(float(np.median(speeds[0])), 1),
            f"cold_read_pxm_gap{GAP_ROWS}_rows_per_s": round(float(np.median(speeds[GAP_ROWS])), 1),
            "compare_gap_rounds": args.compare_gaps}


def index_phase(timer: Timer, view: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Build the automatic index (and the flat one with --flat); its size and recall@10 against exact search."""
    rows, dim = view.num_rows, view.dim
    out: dict[str, Any] = {"index_kind": resolve_kind("auto", rows, dim)}
    index = timer.run("index", lambda: build_index(view, kind="auto", ids=np.arange(rows)))
    out["index_mb"] = round(faiss.serialize_index(index).nbytes / 2**20, 1)
    queries = np.random.default_rng([args.seed, 3]).choice(rows, size=min(args.queries, rows), replace=False)
    out["index_recall_at_10"] = round(timer.run("index_recall", partial(index_recall, index, view, queries, 10)), 4)
    del index
    if args.flat:
        flat = timer.run("index_flat", lambda: build_index(view, kind="flat"))
        out["index_flat_mb"] = round(flat.ntotal * dim * 4 / 2**20, 1)
    return out


def quality_phase(timer: Timer, cache: TeacherCache, labels: np.ndarray, true: np.ndarray,
                  seed: int) -> dict[str, Any]:
    """The streamed quality report; how many rows it suspects against the injected noise, its centre recall."""
    report = timer.run("quality", lambda: quality_report(cache.view_rows(0), labels, LazyKeys(labels)))
    return {"quality_suspected": report["suspected_count"],
            "quality_label_noise": round(float(np.mean(labels != true)), 4),
            "quality_suspect_recall": round(suspect_recall(cache, labels, 4000, seed), 4)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = preamble.parser(__doc__)
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None)
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--identities", type=int, default=None)
    ap.add_argument("--dim", type=int, default=None)
    ap.add_argument("--path", type=Path, default=None, help="cache file (default /work/scale/<preset>.h5)")
    ap.add_argument("--reuse", action="store_true", help="reuse a cache this script wrote at --path")
    ap.add_argument("--keep", action="store_true", help="keep the cache file afterwards")
    ap.add_argument("--label-noise", type=float, default=0.03)
    ap.add_argument("--positives-k", type=int, default=8)
    ap.add_argument("--bank-size", type=int, default=8)
    ap.add_argument("--queries", type=int, default=200, help="rows searched to measure the index's recall@10")
    ap.add_argument("--flat", action="store_true", help="also build the exact flat index (N x D x 4 bytes)")
    ap.add_argument("--steps", type=int, default=200, help="host-side distill steps timed")
    ap.add_argument("--ram-limit-gb", type=float, default=8.0, help="largest cache loaded for the host-step timing")
    ap.add_argument("--read-batches", type=int, default=200)
    ap.add_argument("--compare-gaps", type=int, default=0,
                    help="rounds of cold P x M reads with and without span reads over gaps (0: skip)")
    ap.add_argument("--read-workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--phases", default=",".join(PHASES), help="comma list of " + ", ".join(PHASES))
    args = ap.parse_args(argv)
    sizes = dict(PRESETS[args.preset]) if args.preset else {"rows": 200_000, "identities": 4_000, "dim": 512}
    for key in ("rows", "identities", "dim"):
        if getattr(args, key) is None:
            setattr(args, key, sizes[key])
    unknown = set(args.phases.split(",")) - set(PHASES)
    if unknown:
        ap.error(f"--phases: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet()
    rows, identities, dim = args.rows, args.identities, args.dim
    name = args.preset or f"custom-{rows}"
    path = args.path or Path("/work/scale") / f"{name}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    timer = Timer()
    true, labels = synthetic_labels(rows, identities, args.label_noise, args.seed)
    figures: dict[str, Any] = {"preset": name, "rows": rows, "identities": identities, "dim": dim,
                               "machine": machine_info(torch.device("cpu"))}
    reused = args.reuse and reusable(path, rows, dim, identities)
    phases = set(args.phases.split(","))
    if not reused:
        if path.exists():
            path.unlink()
        writer = timer.run("write", lambda: write_cache(path, true, labels, dim, args.seed))
        positives, sims = timer.run("positives", lambda: build_positives(writer.view_rows(0), labels,
                                                                         args.positives_k))
        csr = identity_csr(labels, identities)
        timer.run("finalize", lambda: writer.finalize(positives, sims, *csr))
        del positives, sims, csr
    figures["reused_cache"] = reused
    figures["file_gb"] = round(path.stat().st_size / 1e9, 2)
    cache = TeacherCache(path, in_ram="never", verify="none")
    view = cache.view_rows(0)
    if reused and "positives" in phases:
        timer.run("positives", lambda: build_positives(view, labels, args.positives_k))
    if "index" in phases:
        figures.update(index_phase(timer, view, args))
    if "quality" in phases:
        figures.update(quality_phase(timer, cache, labels, true, args.seed))
    figures["peak_rss_post_processing_mb"] = round(peak_rss_mb(), 1)
    if "sampler" in phases:
        random_sampler = IdentityBatchSampler(labels, None, BATCH, 4, random_share=1.0, seed=args.seed)
        _, mb, n_batches = timer.run("sampler_plan", partial(plan_stats, random_sampler))
        figures.update(sampler_plan_mb=round(mb, 1), sampler_batches=n_batches)
        del random_sampler
        pxm = IdentityBatchSampler(labels, None, BATCH, 4, random_share=0.0, seed=args.seed)
        _, mb, _ = timer.run("sampler_plan_pxm", partial(plan_stats, pxm))
        figures.update(sampler_plan_pxm_mb=round(mb, 1))
        del pxm
    if "bank" in phases:
        in_ram = rows * 2 * dim * 2 <= args.ram_limit_gb * 2**30
        ram_cache = TeacherCache(path, in_ram="always", verify="none") if in_ram else None
        figures.update(timer.run("bank_and_host_step", partial(bank_figures, identities, args.bank_size, dim,
                                                               ram_cache, labels, args.steps, args.seed)))
        del ram_cache
    if "reads" in phases:
        random_plan = random_batches(rows, args.read_batches, args.seed)  # plans built before the timing
        figures["cold_read_rows_per_s"] = round(timer.run("cold_reads", lambda: cold_reads(
            path, random_plan, args.read_workers)), 1)
        pxm_plan = pxm_batches(labels, args.read_batches, args.seed)
        figures["cold_read_pxm_rows_per_s"] = round(timer.run("cold_reads_pxm", lambda: cold_reads(
            path, pxm_plan, args.read_workers)), 1)
        if args.compare_gaps:
            figures.update(compare_gaps(path, labels, args))
        figures["read_workers"] = args.read_workers
    cache.close()
    figures["seconds"] = timer.seconds
    figures["rss_growth_mb"] = timer.rss
    figures["peak_rss_mb"] = round(peak_rss_mb(), 1)
    figures["post_processing_seconds"] = round(sum(timer.seconds.get(k, 0.0) for k in ("positives", "index",
                                                                                       "quality")), 2)
    if not args.keep:
        path.unlink()
    print_table(f"scale: {name} ({rows} rows, {identities} identities, D = {dim})", ["phase", "seconds", "RSS +MB"],
                [[k, v, timer.rss[k]] for k, v in timer.seconds.items()])
    emit_json(figures)


if __name__ == "__main__":
    main()
