"""IJB-C-sized 1:1 scoring after embedding: template pooling, 15.6M template-pair cosines, ROC / AUC / TAR@FAR.

    python bench/ijb_scoring.py [--templates 23124] [--pairs 15658489] [--genuine 19557] [--images 469375]
        [--distinct-images 227630] [--identities 3531] [--dim 512] [--pair-order sorted] [--seed 0] [--threads 1]

The project's target: the 15.6M template pairs of IJB-C scored and turned into TAR@FAR in under 60 s and
under 4 GB of RAM. Inputs are synthetic, of IJB-C's size, from a seeded numpy RNG:

- `--identities` subjects with unit centres; every template belongs to one subject (each has >= 2
  templates) and has its own centre, normalize(subject centre + 2.5 g), g ~ N(0, I / dim);
- `--distinct-images` images (the 5-point file's rows, what `embed` embeds), each in one template (each
  has >= 1, the rest spread with lognormal(0, 1.5) weights: many templates of one or two images, a few
  of hundreds), feature normalize(template centre + 2.0 g), float32; media id per image, up to 3 media
  per template;
- `--images` `tid_mid` lines (IJB-C: 469,375 lines over 227,630 images): every image once in its own
  template, the remaining lines an image reused in another template of the same subject (so templates of
  one subject share images, which lifts genuine scores more than the template noise lowers them); lines
  grouped by template; template ids sorted but not contiguous;
- `--pairs` template pairs, `--genuine` of them of the same subject, the rest of two different subjects;
  `--pair-order sorted` (by first, then second template: each chunk gathers few distinct
  first templates) or `random` (a worse case for the CPU cache).

Timed with `time.perf_counter()`, the calls `verify.evaluate_ijb` makes after embedding, in its order
and with its arrays alive (`verify.score_layout`'s body, split in two timings):

- pooling: `image_feats[image_index]` (the per-line gather) and `pooling.template_features`;
- scores: `scores.template_rows` for both pair columns and `scores.cosine_scores` (chunks of
  `scores.PAIR_CHUNK` pairs);
- metrics: `metrics.ijb_metrics` (full ROC, exact AUC, TAR@FAR 1e-6 .. 1e-1 both readings).

`pooling.image_features` (flip sum, detector score), which `image_feature_matrix` applies chunk by chunk
while loading the embeddings, is not timed. Memory: `peak_rss_mb` is the whole process's peak
(ru_maxrss, generation included); `rss_before_scoring_mb` the resident set just before scoring; the
peak is then reset (`/proc/self/clear_refs`, Linux) so that `scoring_peak_rss_mb` is the peak while
scoring and metrics run, inputs and image features still resident as in `evaluate_ijb`. The scored path
is single-threaded numpy (einsum, sort, reduceat: no BLAS call); `--threads` sets torch's and OpenBLAS's.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import preamble

# OpenBLAS reads its thread count when numpy loads; `--threads N` / `--threads=N` is honoured here too.
os.environ.setdefault("OPENBLAS_NUM_THREADS", next(
    (a.split("=", 1)[1] if "=" in a else sys.argv[i + 2] for i, a in enumerate(sys.argv[1:])
     if a.split("=", 1)[0] == "--threads" and ("=" in a or i + 2 < len(sys.argv))), "1"))

import numpy as np

from bench.common import emit_json, machine_info, pick_device, print_table, quiet, rss_peak_mb, set_threads, unit_rows
from evaluation.ijb.metrics import IJB_FARS, ijb_metrics
from evaluation.ijb.pooling import template_features
from evaluation.ijb.scores import PAIR_CHUNK, cosine_scores, template_rows
from evaluation.protocol import far_key

TARGET_SECONDS = 60.0
TARGET_RSS_MB = 4096.0
TEMPLATE_NOISE = 2.5  # template centre around its subject's centre (scale of g ~ N(0, I / dim))
IMAGE_NOISE = 2.0  # image feature around its template's centre
SIZE_SPREAD = 1.5  # template sizes: lognormal weights, many templates of one or two images as in IJB-C
BLOCK = 65536  # image rows generated at a time


def proc_status_mb(key: str) -> float | None:
    """A `VmRSS` / `VmHWM` line of /proc/self/status in MiB (None where there is none)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_rss_peak() -> bool:
    """Reset this process's peak RSS (VmHWM, and with it ru_maxrss) to the current RSS; False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def noisy_unit(rng: np.random.Generator, centres: np.ndarray, rows: np.ndarray, noise: float) -> np.ndarray:
    """normalize(centres[rows] + noise * g), g ~ N(0, I / dim): float32 [len(rows), dim], block by block."""
    dim = centres.shape[1]
    out = np.empty((rows.shape[0], dim), dtype=np.float32)
    scale = np.float32(noise / np.sqrt(dim))
    for start in range(0, rows.shape[0], BLOCK):
        stop = min(start + BLOCK, rows.shape[0])
        part = rng.standard_normal((stop - start, dim), dtype=np.float32)
        part *= scale
        part += centres[rows[start:stop]]
        out[start:stop] = unit_rows(part)
    return out


def at_least_once(rng: np.random.Generator, groups: int, n: int, times: int = 1, spread: float = 0.0) -> np.ndarray:
    """Sorted group of each of n items, every one of `groups` groups `times` times or more: int64 [n].

    The items beyond those go to groups drawn with probabilities ~ lognormal(0, spread) (0: uniform).
    """
    base = np.repeat(np.arange(groups, dtype=np.int64), times)
    weights = rng.lognormal(0.0, spread, size=groups)
    rest = rng.choice(groups, size=n - base.size, p=weights / weights.sum())
    return np.sort(np.r_[base, rest])


def same_subject_other(rng: np.random.Generator, t1: np.ndarray, subject: np.ndarray, first: np.ndarray,
                       count: np.ndarray) -> np.ndarray:
    """For each template t1, a random other template of its subject (templates sorted by subject, >= 2 each)."""
    s = subject[t1]
    t2 = first[s] + (rng.random(t1.size) * (count[s] - 1)).astype(np.int64)
    return t2 + (t2 >= t1)


def synthetic_ijb(args: argparse.Namespace) -> dict[str, Any]:
    """Image features, the `tid_mid` lines and the template pairs of an IJB-like set (module docstring)."""
    rng = np.random.default_rng(args.seed)
    n_t, n_s = args.templates, args.identities
    subject = at_least_once(rng, n_s, n_t, times=2)  # [T] subject of each template, sorted
    count = np.bincount(subject, minlength=n_s)
    first = np.r_[0, np.cumsum(count)[:-1]]
    centres = unit_rows(rng.standard_normal((n_s, args.dim), dtype=np.float32))
    t_centres = noisy_unit(rng, centres, subject, TEMPLATE_NOISE)
    del centres

    image_template = at_least_once(rng, n_t, args.distinct_images, spread=SIZE_SPREAD)  # [N] own template of each image
    image_feats = noisy_unit(rng, t_centres, image_template, IMAGE_NOISE)
    del t_centres
    image_media = image_template * 3 + rng.integers(0, 3, size=image_template.size)

    extra = args.images - args.distinct_images
    reused = rng.integers(0, args.distinct_images, size=extra)
    line_image = np.r_[np.arange(args.distinct_images), reused]
    line_template = np.r_[image_template, same_subject_other(rng, image_template[reused], subject, first, count)]
    order = np.argsort(line_template, kind="stable")
    template_ids = np.cumsum(rng.integers(1, 4, size=n_t)).astype(np.int64)  # sorted, not contiguous

    pair_t1 = rng.integers(0, n_t, size=args.pairs)
    pair_t2 = rng.integers(0, n_t, size=args.pairs)
    labels = np.zeros(args.pairs, dtype=bool)
    labels[:args.genuine] = True
    pair_t2[:args.genuine] = same_subject_other(rng, pair_t1[:args.genuine], subject, first, count)
    clash = args.genuine + np.flatnonzero(subject[pair_t1[args.genuine:]] == subject[pair_t2[args.genuine:]])
    while clash.size:  # impostor pairs of one subject: draw their second template again
        pair_t2[clash] = rng.integers(0, n_t, size=clash.size)
        clash = clash[subject[pair_t1[clash]] == subject[pair_t2[clash]]]
    pair_order = np.lexsort((pair_t2, pair_t1)) if args.pair_order == "sorted" else rng.permutation(args.pairs)
    return {
        "image_feats": image_feats,
        "image_index": line_image[order],
        "templates": template_ids[line_template[order]],
        "medias": image_media[line_image[order]],
        "pair_t1": template_ids[pair_t1[pair_order]],
        "pair_t2": template_ids[pair_t2[pair_order]],
        "pair_labels": labels[pair_order],
    }


def parse_args() -> argparse.Namespace:
    ap = preamble.parser(__doc__)
    ap.add_argument("--templates", type=int, default=23_124)
    ap.add_argument("--pairs", type=int, default=15_658_489)
    ap.add_argument("--genuine", type=int, default=19_557, help="genuine (same-subject) pairs among --pairs")
    ap.add_argument("--images", type=int, default=469_375, help="tid_mid lines (image-in-template entries) pooled")
    ap.add_argument("--distinct-images", type=int, default=227_630,
                    help="distinct images with a feature (0: one per line, no reuse)")
    ap.add_argument("--identities", type=int, default=3_531)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--pair-order", choices=["sorted", "random"], default="sorted")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op and OpenBLAS threads (0: torch's default; the timed numpy calls use one)")
    args = ap.parse_args()
    args.distinct_images = args.distinct_images or args.images
    if not 2 * args.identities <= args.templates <= args.distinct_images <= args.images:
        ap.error("need 2 x identities <= templates <= distinct images <= images")
    if not 0 < args.genuine < args.pairs:
        ap.error("need 0 < genuine < pairs")
    return args


def main() -> None:
    args = parse_args()
    quiet()
    device = pick_device("cpu")
    threads = set_threads(args.threads if args.threads else 0, device)
    load_start = round(os.getloadavg()[0], 2)
    t0 = time.perf_counter()
    data = synthetic_ijb(args)
    generate_s = time.perf_counter() - t0
    print(f"generated in {generate_s:.1f}s", file=sys.stderr, flush=True)
    image_feats, pair_labels = data.pop("image_feats"), data.pop("pair_labels")

    # verify.score_layout, split into its two timings; arrays live as long as they do there.
    t0 = time.perf_counter()
    line_feats = image_feats[data["image_index"]]
    ids, unit = template_features(line_feats, data["templates"], data["medias"])
    pooling_s = time.perf_counter() - t0
    print(f"pooling {pooling_s:.1f}s", file=sys.stderr, flush=True)

    peak_before_mb = rss_peak_mb()
    rss_before_mb = proc_status_mb("VmRSS")
    reset = reset_rss_peak()
    t0 = time.perf_counter()
    rows1, rows2 = template_rows(ids, data["pair_t1"]), template_rows(ids, data["pair_t2"])
    rows_s = time.perf_counter() - t0
    scores = cosine_scores(unit, rows1, rows2, PAIR_CHUNK)
    scores_s = time.perf_counter() - t0
    del line_feats, rows1, rows2  # score_layout returns
    print(f"scores {scores_s:.1f}s", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    record, fpr, tpr = ijb_metrics(scores, pair_labels, IJB_FARS)
    metrics_s = time.perf_counter() - t0
    scoring_peak_mb = rss_peak_mb() if reset else None
    peak_mb = max(peak_before_mb, rss_peak_mb())
    total_s = scores_s + metrics_s
    genuine = scores[pair_labels]
    impostor_mean = float(scores[~pair_labels].mean())

    rows = [
        ["pooling (gather + template_features)", args.images, pooling_s, args.images / pooling_s],
        ["  template_rows x 2", args.pairs, rows_s, args.pairs / rows_s],
        [f"scores (template_rows + cosine_scores, chunk {PAIR_CHUNK})", args.pairs, scores_s, args.pairs / scores_s],
        ["metrics (ijb_metrics: ROC, AUC, TAR@FAR)", args.pairs, metrics_s, args.pairs / metrics_s],
        ["scores + metrics", args.pairs, total_s, args.pairs / total_s],
    ]
    print_table(f"IJB 1:1 scoring: {args.templates} templates, {args.pairs} pairs ({args.genuine} genuine), "
                f"{args.images} lines over {args.distinct_images} images, D={args.dim}",
                ["step", "rows", "seconds", "rows/s"], rows)
    print_table("memory (MiB)", ["what", "MiB"], [
        ["peak RSS, whole run (generation included)", peak_mb],
        ["RSS before scoring", rss_before_mb],
        ["peak RSS while scoring + metrics", scoring_peak_mb],
    ])
    tar = record["tar_at_far"]
    print_table(f"TAR@FAR (AUC {record['auc']:.5f}; genuine mean {genuine.mean():.3f}, impostor mean "
                f"{impostor_mean:.3f})", ["FAR", "TAR (insightface)", "TAR bounded"],
                [[k, tar[k], record["tar_at_far_bounded"][k]] for k in tar])
    print(f"target: scores + metrics < {TARGET_SECONDS:.0f} s: {total_s:.1f} s; peak RSS < {TARGET_RSS_MB:.0f} MiB: "
          f"{peak_mb:.0f} MiB")
    emit_json({
        "benchmark": "ijb_scoring",
        "templates": int(ids.size), "template_pairs": args.pairs, "genuine_pairs": int(pair_labels.sum()),
        "images": args.images, "distinct_images": args.distinct_images, "identities": args.identities,
        "dim": args.dim, "pair_order": args.pair_order, "pair_chunk": PAIR_CHUNK, "seed": args.seed,
        "seconds": {"generate": round(generate_s, 2), "pooling": round(pooling_s, 3),
                    "template_rows": round(rows_s, 3), "scores": round(scores_s, 3),
                    "metrics": round(metrics_s, 3), "scores_plus_metrics": round(total_s, 3)},
        "peak_rss_mb": round(peak_mb, 1),
        "rss_before_scoring_mb": None if rss_before_mb is None else round(rss_before_mb, 1),
        "peak_rss_before_scoring_mb": round(peak_before_mb, 1),
        "scoring_peak_rss_mb": None if scoring_peak_mb is None else round(scoring_peak_mb, 1),
        "meets_60s": total_s < TARGET_SECONDS,
        "meets_4gb": peak_mb < TARGET_RSS_MB,
        "auc": record["auc"],
        "tar_at_far": {far_key(f): tar[far_key(f)] for f in IJB_FARS},
        "tar_at_far_bounded": record["tar_at_far_bounded"],
        "roc_points": int(fpr.size),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "load_avg_1min_start": load_start,
        **machine_info(device),  # load_avg_1min: at the end
        "torch_threads": threads,
    })


if __name__ == "__main__":
    main()
