"""`python cli.py align SOURCE OUTPUT`: raw photos -> ArcFace 112x112 aligned faces, the first stage.

SOURCE is an image folder (`<identity>/<image>`) or a list file (`path label` lines); OUTPUT gets the
same `<identity>/<stem>.png` layout (`.jpg` with `align.format = "jpeg"`) plus `manifest.jsonl`, one
JSON line per photo (`alignment.photo.align_one`'s record with its source and output), ready for
`convert`, `split`, `extract` and LFW-style pair files. Contact sheets of the least confident faces and
of the skipped photos go to `<run.dir>/align_sheets/`.

The work happens in a hidden folder beside OUTPUT (`.<name>.align-partial`), each face written
atomically and then its record appended to a journal there, so a killed run continues where it
stopped when run again with the same settings and gives the same files. The folder takes OUTPUT's name
only when every photo is done; an existing OUTPUT is replaced only with `--overwrite`.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignment.consensus import identity_reference, most_agreeing
from alignment.detect import DlibFaces, require_dlib
from alignment.photo import (
    ALIGNED,
    FALLBACK,
    NO_LANDMARKS,
    SKIPPED,
    UNREADABLE,
    AlignSettings,
    Candidate,
    align_one,
    encode,
    skipped_record,
)
from alignment.sheet import contact_sheet
from alignment.warp import ALIGNED_SIZE, decode_rgb
from common.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from common.errors import ConfigError
from common.progress import progress
from config import PipelineConfig
from evaluation.ijb.layout import read_landmarks
from readers import FolderDataset, ListDataset
from readers.base import CorruptImageError, FaceDataset

log = logging.getLogger(__name__)

STATE = ".align-state.json"  # in the partial folder: what the run was started with
JOURNAL = ".align-journal.jsonl"  # in the partial folder: one record per finished photo
CANDIDATES = ".align-candidates"  # in the partial folder: <index>.npz, a photo's candidate faces (consensus)
MANIFEST = "manifest.jsonl"
SHEETS = "align_sheets"
ANY_SIZE = 112  # the readers' decode size; align reads bytes and never decodes at it


@dataclass(frozen=True)
class Job:
    """One photo: its index in SOURCE's order, its key there, and where its face goes under OUTPUT."""

    index: int
    key: str
    output: str  # <identity>/<stem>.<ext>


def _dataset(source: Path) -> FaceDataset:
    if not source.exists():
        raise ConfigError(f"align: source '{source}' does not exist")
    return FolderDataset(source, ANY_SIZE) if source.is_dir() else ListDataset(source, ANY_SIZE)


def _identity_names(dataset: FaceDataset) -> list[str]:
    """Each row's output folder: a folder source's identity folder; for a list file, each image's parent
    folder name where those names and the labels correspond one to one, else the label."""
    if dataset.fmt == "folder":
        return [k.split("/")[0] for k in dataset.keys]
    parents = [Path(k).parent.name for k in dataset.keys]
    labels = [int(v) for v in dataset.labels]
    pairs = set(zip(parents, labels, strict=True))
    if all(parents) and len(pairs) == len({p for p, _ in pairs}) == len({la for _, la in pairs}):
        return parents
    return [str(v) for v in labels]


def photo_jobs(dataset: FaceDataset, fmt: str) -> list[Job]:
    """The photos of `dataset` in order with their output names; ConfigError naming two photos that
    would land on the same output (same identity and file stem, e.g. `a.jpg` and `a.png`)."""
    ext = "png" if fmt == "png" else "jpg"
    jobs: list[Job] = []
    seen: dict[str, str] = {}
    for index, (key, identity) in enumerate(zip(dataset.keys, _identity_names(dataset), strict=True)):
        output = f"{identity}/{Path(key).stem}.{ext}"
        if output in seen:
            raise ConfigError(f"align: '{seen[output]}' and '{key}' would both be written as '{output}'; "
                              "rename one of them")
        seen[output] = key
        jobs.append(Job(index, key, output))
    return jobs


def _check_places(source: Path, output: Path) -> None:
    src, out = source.resolve(), output.resolve()
    if src == out or src in out.parents or (source.is_dir() and out in src.parents):
        raise ConfigError(f"align: OUTPUT '{output}' must lie outside SOURCE '{source}' and not contain it")


def _landmark_lookup(path: str | None, jobs: list[Job]) -> dict[int, tuple[np.ndarray, float]] | None:
    """--landmarks: photo index -> (5 points, score), matched by the photo's key, else its file name."""
    if path is None:
        return None
    table = read_landmarks(Path(path))
    found: dict[int, tuple[np.ndarray, float]] = {}
    for job in jobs:
        hit = table.get(job.key) or table.get(Path(job.key).name)
        if hit is not None:
            found[job.index] = (hit[0], hit[1])
    if not found:
        raise ConfigError(f"align: no photo of the source is named in --landmarks '{path}' "
                          "(names are matched against the photos' paths under SOURCE, then their file names)")
    return found


def _read_journal(partial: Path) -> dict[int, dict[str, Any]]:
    """The records of photos already done (a last line cut by a kill, or a face file gone, is redone)."""
    done: dict[int, dict[str, Any]] = {}
    journal = partial / JOURNAL
    if not journal.is_file():
        return done
    for line in journal.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("output") is None or (partial / record["output"]).is_file():
            done[int(record["index"])] = record
    return done


def open_partial(partial: Path, state: dict[str, Any], overwrite: bool) -> dict[int, dict[str, Any]]:
    """Start or continue the partial folder; returns the records already done there."""
    state_file = partial / STATE
    if partial.exists():
        try:
            earlier = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            earlier = None
        if earlier == state:
            return _read_journal(partial)
        if not overwrite:
            raise ConfigError(f"align: '{partial}' holds an interrupted run with other settings or source; "
                              "run again with those, or pass --overwrite to start afresh")
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    atomic_write_text(state_file, json.dumps(state, sort_keys=True) + "\n")
    return {}


# worker processes: the detector is built once per process (dlib objects do not pickle)
_WORKER: dict[str, Any] = {}


def _init_worker(settings: AlignSettings, upsample: int, max_side: int, detect: bool) -> None:
    _WORKER["settings"] = settings
    _WORKER["faces"] = DlibFaces(upsample, max_side) if detect else None


Result = tuple[Job, dict[str, Any], bytes | None, list[Candidate]]


def _work(item: tuple[Job, bytes | str, tuple[np.ndarray, float] | None]) -> Result:
    job, data, given = item
    if isinstance(data, str):  # the photo could not be read
        return job, skipped_record(f"{UNREADABLE}: {data}"), None, []
    if _WORKER["faces"] is None and given is None:
        return job, skipped_record(NO_LANDMARKS), None, []
    return job, *align_one(data, job.key, _WORKER["settings"], _WORKER["faces"], given)


def _items(dataset: FaceDataset, jobs: list[Job], given: dict[int, tuple[np.ndarray, float]] | None
           ) -> Iterator[tuple[Job, bytes | str, tuple[np.ndarray, float] | None]]:
    for job in jobs:
        try:
            data: bytes | str = dataset.encoded(job.index)
        except CorruptImageError as e:
            data = str(e)
        yield job, data, (given.get(job.index) if given is not None else None)


def _results(dataset: FaceDataset, jobs: list[Job], given: dict[int, tuple[np.ndarray, float]] | None,
             settings: AlignSettings, detector_args: tuple[int, int], workers: int) -> Iterator[Result]:
    """(job, record, encoded face, candidates) per photo, in the main process (workers <= 1) or `workers` processes;
    detector_args: (align.upsample, align.max_side)."""
    init = (settings, *detector_args, given is None)
    if workers <= 1:
        _init_worker(*init)
        yield from map(_work, _items(dataset, jobs, given))
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a parent holding threads
    with ctx.Pool(workers, _init_worker, init) as pool:
        yield from pool.imap_unordered(_work, _items(dataset, jobs, given), chunksize=4)


def _sheets(records: list[dict[str, Any]], partial: Path, dataset: FaceDataset, folder: Path, per_sheet: int
            ) -> list[str]:
    """Contact sheets for a person to look at: the least confident faces (centre crops first, then the
    largest landmark-fit residuals) and the skipped photos with their reasons."""
    written: list[str] = []
    weak = [r for r in records if r["status"] == FALLBACK]
    weak += sorted((r for r in records if r["status"] == ALIGNED), key=lambda r: -(r["residual"] or 0.0))
    tiles = []
    for r in weak[:per_sheet]:
        face = decode_rgb((partial / r["output"]).read_bytes(), r["output"])
        note = "crop" if r["status"] == FALLBACK else f"r{r['residual']:.1f} {r['detector']}"
        tiles.append((face, f"{note} {Path(r['source']).name}"))
    if tiles:
        contact_sheet(tiles, folder / "least_confident.png")
        written.append(str(folder / "least_confident.png"))
    tiles = []
    for r in [r for r in records if r["status"] == SKIPPED][:per_sheet]:
        try:
            photo = decode_rgb(dataset.encoded(r["index"]), r["source"], upright=True)
        except (ConfigError, CorruptImageError):
            photo = np.zeros((8, 8, 3), np.uint8)
        tiles.append((photo, f"{r['reason']} {Path(r['source']).name}"))
    if tiles:
        contact_sheet(tiles, folder / "skipped.png")
        written.append(str(folder / "skipped.png"))
    return written


def save_candidates(path: Path, candidates: list[Candidate]) -> None:
    """A photo's candidate faces (pick = consensus), for the choice after every photo is done."""
    path.parent.mkdir(exist_ok=True)
    fields = json.dumps([c[0] for c in candidates], sort_keys=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, faces=np.stack([c[1] for c in candidates]), fields=np.array(fields))


def load_candidates(path: Path) -> tuple[np.ndarray, list[dict[str, Any]]]:
    with np.load(path, allow_pickle=False) as z:
        return z["faces"], json.loads(str(z["fields"]))


def _embedder(cfg: PipelineConfig) -> Any:
    """[teacher] as a face model for pick = consensus (ConfigError naming its key when it cannot be built)."""
    from models import build_teacher
    from models.device import resolve_device

    return build_teacher(cfg.teacher, ALIGNED_SIZE, str(resolve_device(cfg.run.device)))


def _choose_in_group(teacher: Any, group: list[dict[str, Any]], multi: set[int], partial: Path,
                     settings: AlignSettings, batch: int) -> int:
    """`choose_by_consensus` for one identity's aligned photos; returns how many changed their face."""
    faces = np.stack([decode_rgb((partial / r["output"]).read_bytes(), r["output"]) for r in group])
    embeddings = teacher.embed_fused(faces, batch)
    single = np.array([r["index"] not in multi for r in group])
    changed = 0
    for k, r in enumerate(group):
        if r["index"] not in multi:
            continue
        others = np.arange(len(group)) != k
        reference = identity_reference(embeddings[others & single] if (others & single).any() else embeddings[others])
        candidate_faces, fields = load_candidates(partial / CANDIDATES / f"{r['index']}.npz")
        r["candidates"] = len(fields)
        if reference is None:  # a photo alone in its identity: the pick policy's face stays
            continue
        best, cosines = most_agreeing(reference, teacher.embed_fused(candidate_faces, batch))
        r["agreement"] = round(float(cosines[best]), 4)
        if best != 0:
            r.update(fields[best])
            atomic_write_bytes(partial / r["output"], encode(candidate_faces[best], settings.format,
                                                              settings.jpeg_quality))
            changed += 1
    return changed


def choose_by_consensus(teacher: Any, batch: int, records: list[dict[str, Any]], partial: Path,
                        settings: AlignSettings) -> None:
    """pick = consensus: in each photo with several qualifying faces, the face whose teacher embedding
    (`[teacher]`, flip-fused) agrees best with the identity's other photos (those with one face; where
    none has one, all the others' provisional faces); record fields `candidates` and `agreement`
    (cosine), the output rewritten when the choice changes. Deterministic, so a rerun after a kill
    makes the same choices."""
    multi = {r["index"] for r in records if (partial / CANDIDATES / f"{r['index']}.npz").is_file()}
    if not multi:
        return
    by_identity: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r["status"] == ALIGNED:
            by_identity.setdefault(r["output"].split("/")[0], []).append(r)
    groups = [g for g in by_identity.values() if any(r["index"] in multi for r in g)]
    changed = 0
    with progress(len(groups), "consensus", unit="identity") as bar:
        for group in groups:
            changed += _choose_in_group(teacher, group, multi, partial, settings, batch)
            bar.update(1)
    log.info("align: consensus took another face than the one nearest the centre in %d of %d photos with "
             "several faces", changed, len(multi))


def _publish(partial: Path, output: Path) -> None:
    """The finished partial folder takes OUTPUT's name (an old OUTPUT, allowed by --overwrite, goes)."""
    for name in (STATE, JOURNAL):
        (partial / name).unlink()
    shutil.rmtree(partial / CANDIDATES, ignore_errors=True)
    old = None
    if output.exists():
        old = output.parent / f".{output.name}.align-old"
        if old.exists():
            shutil.rmtree(old)
        os.replace(output, old)
    os.replace(partial, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _summary(records: list[dict[str, Any]], resumed: int) -> dict[str, Any]:
    status = Counter(r["status"] for r in records)
    reasons = Counter(str(r["reason"]).split(":")[0] for r in records if r["status"] == SKIPPED)
    detectors = Counter(r["detector"] for r in records if r["status"] == ALIGNED)
    return {"images": len(records), "aligned": status[ALIGNED], "fallback": status[FALLBACK],
            "skipped": dict(sorted(reasons.items())), "detectors": dict(sorted(detectors.items())),
            "resumed": resumed}


def run_align(cfg: PipelineConfig, source: str, output: str, landmarks: str | None = None,
              workers: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Align every photo of `source` into `output` (module docstring); returns the run's summary."""
    start = time.perf_counter()
    a = cfg.align
    settings = AlignSettings(a.detector, a.pick, a.min_face, a.center_gate, a.fallback, a.crop_side, a.max_shrink,
                             a.format, a.jpeg_quality)
    src, out = Path(source), Path(output)
    workers = cfg.data.workers if workers is None else int(workers)
    if workers < 0:
        raise ConfigError(f"align: --workers must be >= 0, got {workers}")
    if out.exists() and not overwrite:
        raise ConfigError(f"align: '{out}' exists; pass --overwrite to replace it")
    dataset = _dataset(src)
    _check_places(src, out)
    jobs = photo_jobs(dataset, a.format)
    given = _landmark_lookup(landmarks, jobs)
    if given is None:
        require_dlib()  # exit 2 naming the extra before any work
    teacher = _embedder(cfg) if a.pick == "consensus" and given is None else None  # its errors before any work
    partial = out.parent / f".{out.name}.align-partial"
    state = {"source": str(src.resolve()), "landmarks": str(Path(landmarks).resolve()) if landmarks else None,
             "align": asdict(cfg.align), "photos": len(jobs)}
    done = open_partial(partial, state, overwrite)
    resumed = len(done)
    if resumed:
        log.info("align: continuing in %s: %d of %d photos already done", partial, resumed, len(jobs))
    todo = [j for j in jobs if j.index not in done]
    with open(partial / JOURNAL, "a", encoding="utf-8") as journal, \
            progress(len(jobs), "align", unit="photo", initial=resumed) as bar:
        for job, record, face, candidates in _results(dataset, todo, given, settings, (a.upsample, a.max_side),
                                                      workers):
            record = {"index": job.index, "source": job.key, "output": job.output if face is not None else None,
                      **record}
            if candidates:
                save_candidates(partial / CANDIDATES / f"{job.index}.npz", candidates)
            if face is not None:  # atomic, synced once before the folder is published
                atomic_write_bytes(partial / job.output, face, durable=False)
            journal.write(json.dumps(record, sort_keys=True) + "\n")
            journal.flush()
            done[job.index] = record
            bar.update(1)
    records = [done[j.index] for j in jobs]
    if teacher is not None:
        choose_by_consensus(teacher, cfg.teacher.batch_size, records, partial, settings)
    atomic_write_text(partial / MANIFEST, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    sheets = _sheets(records, partial, dataset, Path(cfg.run.dir) / SHEETS, a.sheet_faces)
    os.sync()  # every face on disk before the folder takes its final name
    _publish(partial, out)
    seconds = time.perf_counter() - start
    summary = {"command": "align", "source": str(src), "output": str(out), **_summary(records, resumed),
               "manifest": str(out / MANIFEST), "sheets": sheets, "seconds": round(seconds, 2),
               "photos_per_s": round((len(jobs) - resumed) / max(seconds, 1e-9), 2), "workers": workers}
    log.info("align: %d of %d photos aligned (%d centre crops), skipped %s; %s", summary["aligned"], len(jobs),
             summary["fallback"], summary["skipped"] or "none", out)
    if summary["aligned"] < 0.9 * len(jobs):
        log.warning("align: only %d of %d photos gave a face; look at %s and the skipped photos' reasons in %s "
                    "(align.min_face, align.center_gate, align.pick = \"largest\", align.detector)",
                    summary["aligned"], len(jobs), ", ".join(sheets) or "the manifest", out / MANIFEST)
    return summary
