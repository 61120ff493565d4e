"""How the cache's post-processing grows with N: `build_positives` at 100k and 1M rows, index and report at 100k.

    python bench/positives_scaling.py [--sizes 100000 1000000] [--per-identity 100] [--dim 512] [--k 8]
        [--noise 1.0] [--repeats 3]

Embeddings are identity-clustered unit vectors (`bench.common.clustered_unit_vectors`): about
`--per-identity` rows per identity (labels drawn uniformly, then sorted as a folder or .rec listing
groups them), each row = normalize(centre + noise * g), so a row sits at cosine ~0.71 from its centre
and same-identity pairs at ~0.5 with noise 1. One set of max(sizes) rows is drawn; each smaller size
is its prefix of whole identities (same distribution, no second copy in memory).

Timed per size: `cache.build_positives(emb, labels, k)`. At the smallest size also `cache.build_index`
(flat inner-product, as extract builds it) and `cache.quality_report` (with that index). Sizes
alternate inside each repeat (small, large, then large, small, ...); medians over repeats. Growth is
reported as (time ratio) / (N ratio): 1.0 is linear, above 1 super-linear.
"""
from __future__ import annotations

import sys
import time

import faiss
import numpy as np
import preamble

from bench.common import (
    clustered_unit_vectors,
    emit_json,
    machine_info,
    median,
    pick_device,
    print_table,
    quiet,
    rss_peak_mb,
)
from cache import build_index, build_positives, quality_report


def prefix_rows(labels: np.ndarray, size: int) -> int:
    """The largest row count <= size that ends at an identity boundary (labels sorted)."""
    if size >= len(labels):
        return len(labels)
    return int(np.searchsorted(labels, labels[size], side="left")) or size


def main() -> None:
    ap = preamble.parser(__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--per-identity", type=int, default=100)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0,
                    help="FAISS OpenMP threads for the index and report (0: FAISS default; build_positives uses 1)")
    args = ap.parse_args()
    quiet()
    if args.threads > 0:
        faiss.omp_set_num_threads(args.threads)
    sizes = sorted(set(args.sizes))
    start = time.perf_counter()
    emb_all, labels_all = clustered_unit_vectors(sizes[-1], args.dim, args.per_identity, args.noise, args.seed)
    gen_s = time.perf_counter() - start
    counts = {s: prefix_rows(labels_all, s) for s in sizes}

    positives_s: dict[int, list[float]] = {s: [] for s in sizes}
    index_s: list[float] = []
    report_s: list[float] = []
    small = sizes[0]
    for rep in range(args.repeats):
        for size in (sizes if rep % 2 == 0 else sizes[::-1]):
            n = counts[size]
            emb, labels = emb_all[:n], labels_all[:n]
            t0 = time.perf_counter()
            build_positives(emb, labels, args.k)
            positives_s[size].append(time.perf_counter() - t0)
            if size == small:
                t0 = time.perf_counter()
                index = build_index(emb, kind="flat")
                index_s.append(time.perf_counter() - t0)
                keys = [f"bench/{i:08d}" for i in range(n)]
                t0 = time.perf_counter()
                quality_report(emb, labels, keys, index)
                report_s.append(time.perf_counter() - t0)
                del index
            print(f"repeat {rep + 1}/{args.repeats}: N={n} positives {positives_s[size][-1]:.2f}s",
                  file=sys.stderr, flush=True)

    med = {s: median(positives_s[s]) for s in sizes}
    base_n, base_t = counts[small], med[small]
    rows = []
    growth: dict[str, float] = {}
    for s in sizes:
        n = counts[s]
        g = (med[s] / base_t) / (n / base_n)
        if s != small:
            growth[str(n)] = round(g, 3)
        rows.append([f"build_positives k={args.k}", n, n // args.per_identity, med[s], n / med[s], med[s] / base_t,
                     n / base_n, g])
    rows.append(["build_index flat", base_n, "", median(index_s), base_n / median(index_s), "", "", ""])
    rows.append(["quality_report (+ index)", base_n, "", median(report_s), base_n / median(report_s), "", "", ""])
    print_table(f"cache post-processing, D={args.dim}, ~{args.per_identity} rows/identity, medians of {args.repeats}",
                ["step", "N", "identities", "seconds", "rows/s", "time ratio", "N ratio", "growth"], rows)
    print("growth = (time ratio) / (N ratio): 1.0 is linear in N")
    emit_json({
        "benchmark": "positives_scaling",
        "dim": args.dim, "k": args.k, "per_identity": args.per_identity, "noise": args.noise,
        "repeats": args.repeats,
        "rows": {str(s): counts[s] for s in sizes},
        "positives_seconds": {str(counts[s]): round(med[s], 3) for s in sizes},
        "positives_seconds_per_repeat": {str(counts[s]): [round(v, 3) for v in positives_s[s]] for s in sizes},
        "growth_vs_smallest": growth,
        "index_flat_seconds": round(median(index_s), 4),
        "quality_report_seconds": round(median(report_s), 3),
        "at_rows": base_n,
        "generate_seconds": round(gen_s, 2),
        "peak_rss_mb": round(rss_peak_mb(), 1),
        "faiss_threads": faiss.omp_get_max_threads(),
        **machine_info(pick_device("cpu")),
    })


if __name__ == "__main__":
    main()
