"""`align`'s faces of the raw LFW DevTrain photos against the shipped aligned set they should reproduce.

    python cli.py align ../shared/data/lfw_devtrain_raw/images <ALIGNED> --workers 2 --set run.dir=<RUN>
    python bench/align_lfw_check.py <ALIGNED> [--shipped ../shared/data/lfw_devtrain] [--json OUT.json]

The shipped `train.rec` holds the k-th photo of the raw folder (people in sorted order, then image
number) under key k, encoded once as JPEG q95 by the recipe in its README (dlib HOG + MMOD fallback,
68 -> 5 points, Umeyama, OpenCV warp). For every photo both have, this prints the mean absolute pixel
difference (0..255) of ours against the shipped face, its distribution, the photos where the two
differ so much that another face or another crop was taken, and our manifest's detector counts, fit
residuals, rotations and scales beside the figures that README states.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import preamble
from PIL import Image

from bench.common import report_json
from readers.recordio import RecordIODataset

DIFFERENT = 20.0  # mean |difference| above this: not the same crop (JPEG q95 + warp rounding give 1-3)


def _records(aligned: Path) -> list[dict]:
    return [json.loads(line) for line in (aligned / "manifest.jsonl").read_text().splitlines()]


def compare(aligned: Path, shipped: Path) -> dict:
    """Pixel and manifest statistics of `aligned` against the shipped set (module docstring)."""
    records = _records(aligned)
    rec = RecordIODataset(shipped, 112)
    if len(rec) != len(records):
        raise SystemExit(f"{shipped} has {len(rec)} faces, {aligned}/manifest.jsonl {len(records)} photos")
    diffs, different = [], []
    for k, r in enumerate(records):
        if r["output"] is None:
            continue
        ours = np.asarray(Image.open(aligned / r["output"]).convert("RGB"), dtype=np.float64)
        theirs = np.asarray(Image.open(io.BytesIO(rec.encoded(k))).convert("RGB"), dtype=np.float64)
        d = float(np.abs(ours - theirs).mean())
        diffs.append(d)
        if d > DIFFERENT:
            different.append({"source": r["source"], "mean_abs_diff": round(d, 2), "status": r["status"],
                              "detector": r["detector"]})
    aligned_rows = [r for r in records if r["status"] == "aligned"]
    residuals = np.array([r["residual"] for r in aligned_rows])
    angles = np.array([abs(math.degrees(math.atan2(r["matrix"][1][0], r["matrix"][0][0]))) for r in aligned_rows])
    scales = np.array([math.hypot(r["matrix"][0][0], r["matrix"][1][0]) for r in aligned_rows])
    d = np.array(diffs)
    return {
        "photos": len(records), "compared": len(diffs),
        "status": {s: sum(r["status"] == s for r in records) for s in ("aligned", "fallback", "skipped")},
        "detectors": {k: sum(r["detector"] == k for r in aligned_rows) for k in ("hog", "cnn")},
        "skipped": [r["source"] for r in records if r["status"] == "skipped"],
        "mean_abs_diff": {"mean": round(float(d.mean()), 3), "median": round(float(np.median(d)), 3),
                          "p99": round(float(np.percentile(d, 99)), 3), "max": round(float(d.max()), 3)},
        "different_crops": different,
        "residual_px": {"median": round(float(np.median(residuals)), 3), "max": round(float(residuals.max()), 3)},
        "rotation_deg_max": round(float(angles.max()), 2),
        "scale": [round(float(scales.min()), 3), round(float(scales.max()), 3)],
        "pre_shrunk": int((scales < 1 / 1.5).sum()),
    }


def main() -> None:
    ap = preamble.parser(__doc__)
    ap.add_argument("aligned", type=preamble.existing)
    ap.add_argument("--shipped", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/lfw_devtrain")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    result = compare(args.aligned, args.shipped)
    report_json(result, args.json)


if __name__ == "__main__":
    main()
