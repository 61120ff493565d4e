"""`python cli.py split`: any labelled `[data]` set split by identity into training and held-out sets.

Writes into `split.out_dir` (default `<run.dir>/split`), built in a temporary folder beside it and renamed
into place, so a killed run never leaves a half-written set under the final name:

- `train.lst`, `heldout.lst`: `path label` lines for `data.format = "list"` (the label is the source
  set's label). Images that are files (folder and list sources) are listed by absolute path; images of
  `.rec` and synthetic sources are written as `images/<identity>/<identity>_<NNNN>.png` and listed
  relative to the list file's folder.
- `heldout/pairs.txt` with `heldout/<identity>/<identity>_<NNNN>.png`: every genuine pair of the held-out
  images and sampled impostor pairs (`split.impostor_pairs`), in 10 folds (`evaluation.make_sets`).
- `heldout_ijb/`: an IJB-C-layout root (`loose_crop/`, `meta/ijbc_*.txt`) of the held-out images resized
  to 112x112, whose five landmarks are the ArcFace template points and detector score 1.0; templates of
  `split.template_size` images, one media per image, every genuine template pair and sampled impostor
  template pairs (`split.impostor_template_pairs`); and its 1:N lists as IJB-C's release names them,
  `meta/ijbc_1N_gallery_G1.csv`, `_G2.csv` and `meta/ijbc_1N_probe_mixed.csv` (`TEMPLATE_ID,SUBJECT_ID,
  FILENAME` rows, one per image, subject = the source label): each held-out identity enrolled by one
  template in G1 or G2, its other templates probes (`evaluation.make_sets.search_lists`); not written
  when no identity has a second template to probe with.
- `config.toml`, the resolved configuration.

Identity folders are named `id_<label>` (the source set's label, 5 digits), so they are plain folder
names whatever the source called them. Held-out and written images are decoded at `data.image_size`.
"""
from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from alignment.warp import ALIGNED_SIZE, ARCFACE_TEMPLATE
from common.atomic import atomic_folder
from common.errors import ConfigError, PipelineError
from config import PipelineConfig, save_resolved, to_dict
from config.schema import SplitConfig
from evaluation.ijb.identification import CSV_HEADER, GALLERY_FILE, GALLERY_NAMES, PROBE_FILE
from evaluation.ijb.layout import IMAGE_FOLDER, LANDMARKS, META_FOLDER, PAIR_LABEL, TID_MID
from evaluation.make_sets import (
    auto_impostor_count,
    count_impostor_pairs,
    fold_order,
    genuine_pairs,
    landmark_line,
    lfw_pair_lines,
    make_templates,
    sample_impostor_pairs,
    search_lists,
    split_identities,
)
from readers import CorruptImageError, FaceDataset, build_dataset

log = logging.getLogger(__name__)

IJB_NAME = "ijbc"
PAIRS_DIR = "heldout"
IJB_DIR = "heldout_ijb"
IMAGES_DIR = "images"


@dataclass
class Part:
    """Rows of one part with each row's identity folder name and 1-based number within its identity."""

    rows: np.ndarray
    labels: np.ndarray
    names: list[str]
    numbers: list[int]


def identity_name(label: int) -> str:
    """The folder name of an identity: `id_<label>`, 5 digits at least."""
    return f"id_{int(label):05d}"


def _part(dataset: FaceDataset, rows: np.ndarray) -> Part:
    labels = dataset.labels[rows]
    seen: dict[int, int] = {}
    numbers = []
    for label in labels.tolist():
        seen[label] = seen.get(label, 0) + 1
        numbers.append(seen[label])
    return Part(rows, labels, [identity_name(v) for v in labels.tolist()], numbers)


def _source_file(dataset: FaceDataset, row: int) -> Path | None:
    """The image file of a row for folder and list sources (absolute), None where images are not files."""
    key = dataset.keys[row]
    if dataset.fmt == "folder":
        return Path(dataset.root) / key
    if dataset.fmt == "list":
        path = Path(key)
        return path if path.is_absolute() else Path(dataset.root).resolve().parent / path
    return None


def _load(dataset: FaceDataset, row: int) -> np.ndarray:
    try:
        return dataset.load(row)
    except CorruptImageError as e:
        raise PipelineError(f"split: {e} (row {row} of data.root '{dataset.root}')") from None


def _save_png(image: np.ndarray, path: Path, size: int | None = None) -> None:
    picture = Image.fromarray(image)
    if size is not None and picture.size != (size, size):
        picture = picture.resize((size, size), Image.Resampling.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, compress_level=1)


def _file_name(part: Part, k: int) -> str:
    return f"{part.names[k]}_{part.numbers[k]:04d}.png"


def _list_entry(dataset: FaceDataset, part: Part, k: int, tmp: Path, image: np.ndarray | None) -> str:
    """The `path label` line of item k, writing its PNG under `images/` when the source has no file."""
    source = _source_file(dataset, int(part.rows[k]))
    if source is not None:
        return f"{source.absolute()} {int(part.labels[k])}"
    rel = f"{IMAGES_DIR}/{part.names[k]}/{_file_name(part, k)}"
    _save_png(_load(dataset, int(part.rows[k])) if image is None else image, tmp / rel)
    return f"{rel} {int(part.labels[k])}"


def _write_text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _export_heldout(dataset: FaceDataset, part: Part, tmp: Path) -> None:
    """Every held-out image once: into the pair set, the IJB loose crops and (if needed) `images/`."""
    lines = []
    for k in range(len(part.rows)):
        image = _load(dataset, int(part.rows[k]))
        _save_png(image, tmp / PAIRS_DIR / part.names[k] / _file_name(part, k))
        _save_png(image, tmp / IJB_DIR / IMAGE_FOLDER / _file_name(part, k), ALIGNED_SIZE)
        lines.append(_list_entry(dataset, part, k, tmp, image))
    _write_text(tmp / "heldout.lst", lines)


def _impostor_count(requested: int, genuine: int, labels: np.ndarray) -> int:
    total = count_impostor_pairs(labels)
    return min(requested, total) if requested else auto_impostor_count(genuine, total)


def _write_pairs(part: Part, s: SplitConfig, tmp: Path) -> tuple[int, int]:
    """`heldout/pairs.txt`: (genuine pairs, impostor pairs) written."""
    genuine = genuine_pairs(part.labels)
    impostor = sample_impostor_pairs(part.labels, _impostor_count(s.impostor_pairs, len(genuine), part.labels),
                                     s.seed)
    pairs = fold_order(genuine, impostor, s.seed)
    _write_text(tmp / PAIRS_DIR / "pairs.txt", lfw_pair_lines(pairs, part.names, part.numbers))
    return len(genuine), len(impostor)


def _subject_rows(templates: np.ndarray, template_of: np.ndarray, labels: np.ndarray, names: list[str]) -> list[str]:
    """The header and a `TEMPLATE_ID,SUBJECT_ID,FILENAME` row per image of the given templates (ids from 1)."""
    chosen = set(templates.tolist())
    items = sorted((int(t), k) for k, t in enumerate(template_of.tolist()) if t in chosen)
    return [",".join(CSV_HEADER)] + [f"{t + 1},{int(labels[k])},{names[k]}" for t, k in items]


def _write_search_lists(part: Part, template_of: np.ndarray, template_labels: np.ndarray, names: list[str],
                        seed: int, meta: Path) -> dict[str, int]:
    """`heldout_ijb/meta/ijbc_1N_*.csv` (module docstring): template counts of each gallery and of the probes."""
    lists = search_lists(template_labels, seed)
    g1, g2 = GALLERY_NAMES[IJB_NAME]
    counts = {g1: len(lists.gallery1), g2: len(lists.gallery2), "probes": len(lists.probes)}
    if not len(lists.probes):
        log.warning("split: no held-out identity has two templates, so there is no 1:N probe: the IJB set gets no "
                    "1:N lists; lower split.template_size")
        return {key: 0 for key in counts}
    for file, templates in ((GALLERY_FILE.format(name=IJB_NAME, gallery=g1), lists.gallery1),
                            (GALLERY_FILE.format(name=IJB_NAME, gallery=g2), lists.gallery2),
                            (PROBE_FILE.format(name=IJB_NAME), lists.probes)):
        _write_text(meta / file, _subject_rows(templates, template_of, part.labels, names))
    return counts


def _write_ijb(part: Part, s: SplitConfig, tmp: Path) -> tuple[int, int, dict[str, int]]:
    """`heldout_ijb/meta/`: (templates, template pairs, 1:N template counts) written; the loose crops are in
    place already."""
    template_of, template_labels = make_templates(part.labels, s.template_size, s.seed)
    genuine = genuine_pairs(template_labels)
    if not len(genuine):
        log.warning("split: no identity has %d or more held-out images, so the IJB set has no genuine template "
                    "pair; lower split.template_size", 2 * s.template_size)
    count = _impostor_count(s.impostor_template_pairs, len(genuine), template_labels)
    impostor = sample_impostor_pairs(template_labels, count, s.seed)
    names = [_file_name(part, k) for k in range(len(part.rows))]
    meta = tmp / IJB_DIR / META_FOLDER
    _write_text(meta / TID_MID.format(name=IJB_NAME),
                [f"{n} {int(t) + 1} {k + 1}" for k, (n, t) in enumerate(zip(names, template_of, strict=True))])
    _write_text(meta / PAIR_LABEL.format(name=IJB_NAME),
                [f"{a + 1} {b + 1} 1" for a, b in genuine.tolist()]
                + [f"{a + 1} {b + 1} 0" for a, b in impostor.tolist()])
    _write_text(meta / LANDMARKS.format(name=IJB_NAME), [landmark_line(n, ARCFACE_TEMPLATE, 1.0) for n in names])
    search = _write_search_lists(part, template_of, template_labels, names, s.seed, meta)
    return len(template_labels), len(genuine) + len(impostor), search


def _split_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """What decides who is held out: the [split] keys and the [data] set."""
    data = cfg.get("data", {})
    return {"split": cfg.get("split"), "data": {k: data.get(k) for k in ("format", "root", "synthetic")}}


def refuse_other_split(cfg: PipelineConfig, out: Path, overwrite: bool) -> None:
    """ConfigError when `out` holds a split made with other settings (or one that cannot be read) and
    `overwrite` is not set: runs trained on its train.lst would be evaluated on people they trained on."""
    if overwrite or not out.exists():
        return
    try:
        earlier = _split_settings(tomllib.loads((out / "config.toml").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        earlier = None
    if earlier != _split_settings(to_dict(cfg)):
        raise ConfigError(f"split: '{out}' holds a split made with other settings (its config.toml differs in "
                          "[split] or the [data] set, or is missing); replacing it would let runs trained on its "
                          "train.lst be evaluated on people they trained on. Pass --overwrite to replace it, or "
                          "set split.out_dir (or run.dir) to write the new split elsewhere")


def run_split(cfg: PipelineConfig, overwrite: bool = False) -> dict[str, Any]:
    """Split `[data]` by identity and write the list files, the pair set and the IJB root (module docstring).

    An existing split of the same settings is written again; one of other settings only with `overwrite`."""
    s = cfg.split
    out = Path(s.out_dir) if s.out_dir else Path(cfg.run.dir) / "split"
    refuse_other_split(cfg, out, overwrite)
    dataset = build_dataset(cfg.data)
    parts = split_identities(dataset.labels, s.heldout_fraction, s.seed)
    if len(parts.heldout_ids) < 2:
        raise ConfigError(
            f"config key 'split.heldout_fraction' = {s.heldout_fraction:g} holds out {len(parts.heldout_ids)} "
            f"of {dataset.num_classes} identities of data.root '{dataset.root}' (identities with 2 or more "
            "images can be held out); pairs need at least 2: raise it or use a larger set")
    if len(parts.train_ids) < 1:
        raise ConfigError(f"config key 'split.heldout_fraction' = {s.heldout_fraction:g} leaves no training identity")
    train, heldout = _part(dataset, parts.train_rows), _part(dataset, parts.heldout_rows)
    log.info("split: %d training identities (%d images), %d held out (%d images) -> %s",
             len(parts.train_ids), len(train.rows), len(parts.heldout_ids), len(heldout.rows), out)
    with atomic_folder(out) as tmp:
        _write_text(tmp / "train.lst", [_list_entry(dataset, train, k, tmp, None) for k in range(len(train.rows))])
        _export_heldout(dataset, heldout, tmp)
        genuine, impostor = _write_pairs(heldout, s, tmp)
        templates, template_pairs, search = _write_ijb(heldout, s, tmp)
        save_resolved(cfg, tmp)
    return {
        "out_dir": str(out), "train_list": str(out / "train.lst"), "heldout_list": str(out / "heldout.lst"),
        "pairs": str(out / PAIRS_DIR / "pairs.txt"), "ijb_root": str(out / IJB_DIR),
        "train_identities": int(len(parts.train_ids)), "heldout_identities": int(len(parts.heldout_ids)),
        "train_images": int(len(train.rows)), "heldout_images": int(len(heldout.rows)),
        "genuine_pairs": genuine, "impostor_pairs": impostor, "templates": templates,
        "template_pairs": template_pairs, "identification_templates": search,
    }
