"""What `align` did to a set of photos, from its manifest: counts by status, detector and reason, photos with
several faces, fit residuals, and the run's time per photo.

    python bench/align_report.py <OUTPUT>/manifest.jsonl [--summary <RUN>/align.json] [--cfp] [--json OUT.json]

--cfp splits the counts into frontal and profile photos by the file numbers `bench/photo_sets.py cfp`
gives them (0001-0010 frontal, 0011-0014 profile).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import preamble

from bench.common import report_json


def _group(source: str, cfp: bool) -> str:
    if not cfp:
        return "all"
    return "profile" if int(Path(source).stem.rsplit("_", 1)[1]) > 10 else "frontal"


def report(records: list[dict[str, Any]], cfp: bool) -> dict[str, Any]:
    """Per group: photos, aligned by detector, centre crops and skips by reason, multi-face photos, residuals."""
    out: dict[str, Any] = {}
    for group in sorted({_group(r["source"], cfp) for r in records}):
        rows = [r for r in records if _group(r["source"], cfp) == group]
        aligned = [r for r in rows if r["status"] == "aligned"]
        residuals = np.array([r["residual"] for r in aligned]) if aligned else np.zeros(0)
        out[group] = {
            "photos": len(rows),
            "aligned": len(aligned),
            "aligned_share": round(len(aligned) / len(rows), 4),
            "by_detector": dict(Counter(r["detector"] for r in aligned)),
            "fallback_by_reason": dict(Counter(r["reason"] for r in rows if r["status"] == "fallback")),
            "skipped_by_reason": dict(Counter(str(r["reason"]).split(":")[0] for r in rows
                                              if r["status"] == "skipped")),
            "several_faces": sum(1 for r in aligned if (r.get("faces") or 0) > 1),
            "residual_px": {"median": round(float(np.median(residuals)), 3),
                            "p90": round(float(np.percentile(residuals, 90)), 3)} if aligned else None,
        }
    return out


def main() -> None:
    ap = preamble.parser(__doc__)
    ap.add_argument("manifest", type=preamble.existing)
    ap.add_argument("--summary", type=Path, default=None, help="the run's align.json, for the time per photo")
    ap.add_argument("--cfp", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    records = [json.loads(line) for line in args.manifest.read_text().splitlines()]
    result: dict[str, Any] = {"manifest": str(args.manifest), "groups": report(records, args.cfp)}
    if args.summary:
        summary = json.loads(args.summary.read_text())
        result["seconds"] = summary["seconds"]
        result["workers"] = summary["workers"]
        result["seconds_per_photo_per_worker"] = round(summary["seconds"] * summary["workers"] / len(records), 3)
    report_json(result, args.json)


if __name__ == "__main__":
    main()
