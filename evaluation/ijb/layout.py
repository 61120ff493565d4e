"""The IJB-B / IJB-C release as insightface distributes it, read unchanged.

A root folder holds `loose_crop/<image>` and three text files in `meta/`, `<name>` = `ijbb` | `ijbc`:

- `<name>_face_tid_mid.txt`: `image template_id media_id` per line (the image's template and media);
- `<name>_template_pair_label.txt`: `template_id_1 template_id_2 label` per line (1 = same identity);
- `<name>_name_5pts_score.txt`: `image x1 y1 x2 y2 ... x5 y5 score` per line: five landmarks in pixels of
  the loose crop (left eye, right eye, nose, left and right mouth corners) and the detector score.

Blank lines are skipped; every other malformed line is a ConfigError naming the file and line number.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import ConfigError

IJB_NAMES = ("ijbb", "ijbc")
IMAGE_FOLDER = "loose_crop"
META_FOLDER = "meta"
TID_MID = "{name}_face_tid_mid.txt"
PAIR_LABEL = "{name}_template_pair_label.txt"
LANDMARKS = "{name}_name_5pts_score.txt"


@dataclass
class IjbLayout:
    """One IJB release: its distinct images with their landmarks, the template/media of each
    `tid_mid` line, and the template pairs.

    `images[k]` is a file name under `loose_crop/`, with `landmarks[k]` float64 [5, 2] (x, y pixels)
    and `detector_scores[k]`; line l of `tid_mid` puts image `image_index[l]` into template
    `templates[l]` and media `medias[l]`; pair p compares templates `pair_t1[p]` and `pair_t2[p]`,
    `pair_labels[p]` True for the same identity.
    """

    name: str
    root: Path
    images: list[str]
    landmarks: np.ndarray  # float64 [N, 5, 2]
    detector_scores: np.ndarray  # float64 [N]
    image_index: np.ndarray  # int64 [L]
    templates: np.ndarray  # int64 [L]
    medias: np.ndarray  # int64 [L]
    pair_t1: np.ndarray  # int64 [P]
    pair_t2: np.ndarray  # int64 [P]
    pair_labels: np.ndarray  # bool [P]

    def meta_file(self, pattern: str) -> Path:
        return self.root / META_FOLDER / pattern.format(name=self.name)

    def image_path(self, k: int) -> Path:
        return self.root / IMAGE_FOLDER / self.images[k]

    def fingerprint(self) -> str:
        """sha256 of the image names, landmarks and scores: what the embeddings of this set depend on."""
        digest = hashlib.sha256()
        digest.update("\n".join(self.images).encode("utf-8"))
        digest.update(np.ascontiguousarray(self.landmarks, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(self.detector_scores, dtype=np.float64).tobytes())
        return digest.hexdigest()


def detect_ijb_name(root: str | os.PathLike[str]) -> str:
    """`ijbb` or `ijbc`, from which `meta/<name>_face_tid_mid.txt` the root holds.

    ConfigError naming the folder when it holds neither or both, or has no `loose_crop/` folder.
    """
    root = Path(root)
    found = [n for n in IJB_NAMES if (root / META_FOLDER / TID_MID.format(name=n)).is_file()]
    if len(found) != 1:
        what = "neither" if not found else "both"
        expected = " or ".join(f"'{META_FOLDER}/{TID_MID.format(name=n)}'" for n in IJB_NAMES)
        raise ConfigError(f"IJB root '{root}': expected exactly one of {expected}, found {what}")
    if not (root / IMAGE_FOLDER).is_dir():
        raise ConfigError(f"IJB root '{root}': no '{IMAGE_FOLDER}/' folder of images")
    return found[0]


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number from 1, whitespace-separated fields) of every non-blank line of a UTF-8 text file."""
    try:
        with open(path, encoding="utf-8-sig") as fh:  # a byte-order mark is allowed, as in list and CSV files
            for lineno, line in enumerate(fh, 1):
                fields = line.split()
                if fields:
                    yield lineno, fields
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None


def _int(token: str, path: Path, lineno: int, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise ConfigError(f"{path}, line {lineno}: {what} must be an integer, got {token!r}") from None


def _float(token: str, path: Path, lineno: int, what: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise ConfigError(f"{path}, line {lineno}: {what} must be a number, got {token!r}") from None
    if not np.isfinite(value):
        raise ConfigError(f"{path}, line {lineno}: {what} must be finite, got {token!r}")
    return value


def _check_image_name(name: str, path: Path, lineno: int) -> None:
    """ConfigError unless `name` stays inside `loose_crop/` (relative, no `..`, no backslash or NUL)."""
    parts = name.split("/")
    if (os.path.isabs(name) or Path(name).drive or "\\" in name or "\0" in name
            or any(p in ("", ".", "..") for p in parts)):
        raise ConfigError(f"{path}, line {lineno}: image name {name!r} must be a relative path inside "
                          f"'{IMAGE_FOLDER}/' (no '..', no absolute path)")


def read_tid_mid(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[int]]:
    """`image template_id media_id` lines: (image names, templates int64 [L], medias int64 [L], line numbers)."""
    names: list[str] = []
    templates: list[int] = []
    medias: list[int] = []
    linenos: list[int] = []
    for lineno, fields in _lines(path):
        if len(fields) != 3:
            raise ConfigError(f"{path}, line {lineno}: expected 'image template_id media_id', "
                              f"got {len(fields)} fields")
        _check_image_name(fields[0], path, lineno)
        names.append(fields[0])
        templates.append(_int(fields[1], path, lineno, "template_id"))
        medias.append(_int(fields[2], path, lineno, "media_id"))
        linenos.append(lineno)
    if not names:
        raise ConfigError(f"{path}: no images listed")
    return names, np.asarray(templates, np.int64), np.asarray(medias, np.int64), linenos


def read_landmarks(path: Path) -> dict[str, tuple[np.ndarray, float, int]]:
    """`image x1 y1 ... x5 y5 score` lines: image name -> (landmarks float64 [5, 2], score, line number)."""
    table: dict[str, tuple[np.ndarray, float, int]] = {}
    for lineno, fields in _lines(path):
        if len(fields) != 12:
            raise ConfigError(f"{path}, line {lineno}: expected 'image', 10 landmark coordinates and a "
                              f"detector score, got {len(fields)} fields")
        name = fields[0]
        if name in table:
            raise ConfigError(f"{path}, line {lineno}: image {name!r} is listed again (first on line "
                              f"{table[name][2]})")
        points = np.array([_float(t, path, lineno, "a landmark coordinate") for t in fields[1:11]])
        score = _float(fields[11], path, lineno, "the detector score")
        table[name] = (points.reshape(5, 2), score, lineno)
    return table


def _first_bad_pair_line(path: Path) -> ConfigError:
    """The error for the first malformed line of a pair file (the slow path, only after a parse failure)."""
    for lineno, fields in _lines(path):
        if len(fields) != 3:
            return ConfigError(f"{path}, line {lineno}: expected 't1 t2 label', got {len(fields)} fields")
        for token, what in zip(fields, ("template_id_1", "template_id_2", "label"), strict=True):
            _int(token, path, lineno, what)
        if fields[2] not in ("0", "1"):
            return ConfigError(f"{path}, line {lineno}: label must be 0 or 1, got {fields[2]!r}")
    return ConfigError(f"{path}: cannot read the template pairs")


def read_pair_labels(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`t1 t2 label` lines (15.6M for IJB-C, parsed by numpy): (t1 int64 [P], t2 int64 [P], labels bool [P])."""
    try:
        table = np.loadtxt(path, dtype=np.int64, ndmin=2, comments=None)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError:
        raise _first_bad_pair_line(path) from None
    if table.shape[0] == 0:
        raise ConfigError(f"{path}: no template pairs listed")
    if table.shape[1] != 3 or not np.isin(table[:, 2], (0, 1)).all():
        raise _first_bad_pair_line(path)
    return table[:, 0].copy(), table[:, 1].copy(), table[:, 2].astype(bool)


def _join_landmarks(names: list[str], linenos: list[int], tid_mid: Path, landmarks_file: Path
                    ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Distinct images in order of first mention, their landmarks and scores, and each line's image index."""
    table = read_landmarks(landmarks_file)
    index_of: dict[str, int] = {}
    for name, lineno in zip(names, linenos, strict=True):
        if name not in index_of:
            if name not in table:
                raise ConfigError(f"{tid_mid}, line {lineno}: image {name!r} has no landmarks in {landmarks_file}")
            index_of[name] = len(index_of)
    images = list(index_of)
    points = np.stack([table[n][0] for n in images]).astype(np.float64)
    scores = np.array([table[n][1] for n in images], dtype=np.float64)
    image_index = np.fromiter((index_of[n] for n in names), dtype=np.int64, count=len(names))
    return images, points, scores, image_index


def read_ijb_layout(root: str | os.PathLike[str]) -> IjbLayout:
    """Read an IJB-B or IJB-C root (module docstring). Template ids of pairs must be in `tid_mid`."""
    root = Path(root)
    name = detect_ijb_name(root)
    meta = root / META_FOLDER
    files = {p: meta / p.format(name=name) for p in (TID_MID, PAIR_LABEL, LANDMARKS)}
    for path in files.values():
        if not path.is_file():
            raise ConfigError(f"IJB root '{root}': missing '{META_FOLDER}/{path.name}'")
    names, templates, medias, linenos = read_tid_mid(files[TID_MID])
    images, points, scores, image_index = _join_landmarks(names, linenos, files[TID_MID], files[LANDMARKS])
    t1, t2, labels = read_pair_labels(files[PAIR_LABEL])
    known = np.unique(templates)
    for column in (t1, t2):
        missing = ~np.isin(column, known)
        if missing.any():
            p = int(np.flatnonzero(missing)[0])
            raise ConfigError(f"{files[PAIR_LABEL]}: pair {p + 1} (the {p + 1}-th non-blank line) names template "
                              f"{int(column[p])}, which {files[TID_MID].name} does not list")
    return IjbLayout(name, root, images, points, scores, image_index, templates, medias, t1, t2, labels)
