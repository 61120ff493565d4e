"""`align` against a bare loop of the same detector, landmark and warp calls on the same photos.

    python bench/align_throughput.py [--photos DIR] [--count 300] [--repeats 2] [--workers 0 2]

- bare: for each photo, in one process: read the file, decode (`alignment.warp.decode_rgb`), dlib HOG
  (then the MMOD CNN where HOG gives no qualifying face), pick, 68 landmarks -> 5 points, the warp
  (`align_photo`) and the PNG encoding, keeping nothing;
- align: `stages.align.run_align` with `--workers 0` (the same calls in the main process) into a fresh
  output, with everything the stage adds: jobs and names, atomic face writes, the journal, the
  manifest, contact sheets and the final rename;
- ratio = align photos/s / bare photos/s (target >= 0.9); variants alternate (bare, align, align,
  bare, ...), medians over repeats;
- photos/s per worker: `run_align` with each `--workers` value given (0 and 1 run in the main process;
  N >= 2 starts N processes).

Default photos: the first `--count` photos (sorted) of ../shared/data/lfw_devtrain_raw/images.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import preamble

from alignment.detect import DlibFaces
from alignment.landmarks import five_points
from alignment.photo import AlignSettings, encode
from alignment.pick import pick_face
from alignment.warp import align_photo, decode_rgb
from bench.common import emit_json, median, print_table
from config import load_config
from stages.align import run_align

RAW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw_devtrain_raw" / "images"


def _photos(root: Path, count: int, into: Path) -> Path:
    """The first `count` photos of `root` (sorted people, sorted files) linked into `into/<person>/`."""
    done = 0
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        for photo in sorted(person.iterdir()):
            (into / person.name).mkdir(parents=True, exist_ok=True)
            (into / person.name / photo.name).symlink_to(photo)
            done += 1
            if done == count:
                return into
    return into


def bare(source: Path, settings: AlignSettings) -> float:
    """Seconds for the bare loop over every photo of `source`."""
    faces = DlibFaces(1, 500)  # align.upsample, align.max_side at their defaults
    files = sorted(p for p in source.rglob("*") if p.is_file())
    start = time.perf_counter()
    for path in files:
        rgb = decode_rgb(path.read_bytes(), str(path), upright=True)
        h, w = rgb.shape[:2]
        face = None
        for detector in settings.detector.split("+"):
            face, _ = pick_face(faces.detect(rgb, detector), w, h, settings.pick, settings.min_face,
                                settings.center_gate)
            if face is not None:
                break
        if face is None:
            continue
        aligned, _ = align_photo(rgb, five_points(faces.landmarks(rgb, face)), settings.max_shrink)
        encode(aligned, settings.format, settings.jpeg_quality)
    return time.perf_counter() - start


def staged(source: Path, work: Path, workers: int) -> float:
    """Seconds for `run_align` over `source` into a fresh folder under `work`."""
    out = work / f"out{workers}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(None, [f"run.dir={work / 'run'}"])
    start = time.perf_counter()
    run_align(cfg, str(source), str(out), workers=workers)
    return time.perf_counter() - start


def main() -> None:
    ap = preamble.parser(__doc__)
    ap.add_argument("--photos", type=Path, default=RAW)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args()
    settings = AlignSettings()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = _photos(args.photos, args.count, work / "photos")
        n = sum(1 for p in source.rglob("*") if p.is_file())
        bare(source, settings)  # warm-up: models loaded, files in the page cache
        times: dict[str, list[float]] = {"bare": [], "align": []}
        for r in range(args.repeats):
            order = ("bare", "align") if r % 2 == 0 else ("align", "bare")
            for variant in order:
                times[variant].append(bare(source, settings) if variant == "bare" else staged(source, work, 0))
        ratios = [b / a for a, b in zip(times["align"], times["bare"], strict=True)]
        per_worker = {w: n / staged(source, work, w) for w in args.workers}
    figures: dict[str, Any] = {
        "photos": n, "repeats": args.repeats,
        "bare_photos_per_s": round(n / median(times["bare"]), 2),
        "align_photos_per_s": round(n / median(times["align"]), 2),
        "ratio": round(median(ratios), 3), "target": 0.9,
        "photos_per_s_by_workers": {str(w): round(v, 2) for w, v in per_worker.items()},
    }
    print_table("align against the bare loop", ["variant", "photos/s"],
                [["bare", figures["bare_photos_per_s"]], ["align --workers 0", figures["align_photos_per_s"]],
                 *[[f"align --workers {w}", round(v, 2)] for w, v in per_worker.items()]])
    print(f"ratio {figures['ratio']} (target >= 0.9)")
    emit_json(figures)


if __name__ == "__main__":
    main()
