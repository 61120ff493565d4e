"""Verification pair sets: LFW `pairs.txt` files and insightface `.bin` files.

A `PairSet` lists each distinct image once, so that the caller embeds every image a single time and
then looks pairs up by index (`idx1`, `idx2`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import ConfigError
from evaluation.binfile import load_bin
from readers.base import CorruptImageError, decode_image

IMAGE_SUFFIXES = (".jpg", ".png")


@dataclass
class PairSet:
    """A verification set.

    `images[k]` is a `Path` (LFW-style sets) or the encoded image bytes (`.bin` sets); pair p compares
    `images[idx1[p]]` with `images[idx2[p]]` and `issame[p]` says whether both show one identity.
    `labels` gives an identity index per image where the set names identities (LFW-style), else None.
    """

    name: str
    source: Path
    images: list[Path | bytes]
    idx1: np.ndarray
    idx2: np.ndarray
    issame: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.issame.shape[0])

    def image_key(self, k: int) -> str:
        """A name for image k in messages: its path, or `<file>#<k>` for images held inside a `.bin`."""
        image = self.images[k]
        return str(image) if isinstance(image, Path) else f"{self.source}#{k}"

    def image_bytes(self, k: int) -> bytes:
        """The encoded bytes of image k (read from disk for LFW-style sets)."""
        image = self.images[k]
        if not isinstance(image, Path):
            return image
        try:
            return image.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{self.source}: cannot read image {image}: {exc}") from exc

    def decode(self, size: int) -> np.ndarray:
        """All distinct images, decoded to uint8 [n, size, size, 3] RGB.

        An undecodable image (truncated, not an image, over `readers.base.MAX_IMAGE_PIXELS`) is a
        ConfigError naming it and the reason.
        """
        images = np.empty((len(self.images), size, size, 3), dtype=np.uint8)
        for k in range(len(self.images)):
            key = self.image_key(k)
            try:
                images[k] = decode_image(self.image_bytes(k), key, size)
            except CorruptImageError as e:
                raise ConfigError(f"pair set '{self.source}': image {key} cannot be decoded: {e.reason}") from None
        return images


def _parse_index(token: str) -> int | None:
    return int(token) if token.isascii() and token.isdigit() else None


def _check_identity_name(name: str, pairs_txt: Path, lineno: int) -> None:
    """ConfigError unless `name` is one path component inside the root: no separator, `.`/`..`, absolute path or NUL."""
    separators = {"/", "\\", os.sep, os.altsep or "/"}
    if (name in (".", "..") or "\0" in name or any(sep in name for sep in separators)
            or os.path.isabs(name) or Path(name).drive):
        raise ConfigError(
            f"{pairs_txt}:{lineno}: identity name {name!r} must be a plain folder name under the image root "
            "(no path separators, '..' or absolute paths)"
        )


def _image_path(root: Path, name: str, index: int, pairs_txt: Path, lineno: int) -> Path:
    """`root/<name>/<name>_<NNNN>.jpg`, else the `.png` beside it; ConfigError when neither exists.

    `name` must be a plain folder name (see `_check_identity_name`), so the image stays under `root`.
    """
    _check_identity_name(name, pairs_txt, lineno)
    stem = root / name / f"{name}_{index:04d}"
    for suffix in IMAGE_SUFFIXES:
        candidate = stem.with_name(stem.name + suffix)
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"{pairs_txt}:{lineno}: image not found: {stem}.jpg (or {stem.name}.png)"
    )


def _is_header(tokens: list[str]) -> bool:
    return 1 <= len(tokens) <= 2 and all(_parse_index(t) is not None for t in tokens)


def read_lfw_pairs(
    pairs_txt: str | os.PathLike[str], root: str | os.PathLike[str]
) -> list[tuple[Path, Path, bool]]:
    """Parse an LFW `pairs.txt`: `name i j` (same identity) and `name1 i name2 j` (different).

    Tokens are separated by tabs or spaces; blank lines are ignored; the first non-blank line may be a
    header of one or two integers (`10\\t300`). Images are `root/<name>/<name>_<NNNN>.jpg|png` with a
    4-digit zero-padded index; a name that is not a plain folder name (a path separator, `..`, an
    absolute path) is refused, so no image is read from outside `root`. Errors name the file and the
    1-based line number.
    """
    pairs_txt = Path(pairs_txt)
    root = Path(root)
    try:
        text = pairs_txt.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"pair file not found: {pairs_txt}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read pair file {pairs_txt}: {exc}") from exc
    if not root.is_dir():
        raise ConfigError(f"{pairs_txt}: image root is not a folder: {root}")

    pairs: list[tuple[Path, Path, bool]] = []
    seen_content = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if not seen_content and _is_header(tokens):
            seen_content = True
            continue
        seen_content = True
        if len(tokens) == 3:
            name1, i, j = tokens
            name2, issame = name1, True
            index1, index2 = _parse_index(i), _parse_index(j)
        elif len(tokens) == 4:
            name1, i, name2, j = tokens
            issame = False
            index1, index2 = _parse_index(i), _parse_index(j)
        else:
            raise ConfigError(
                f"{pairs_txt}:{lineno}: expected 'name i j' or 'name1 i name2 j', got {line.strip()!r}"
            )
        if index1 is None or index2 is None:
            raise ConfigError(
                f"{pairs_txt}:{lineno}: image indices must be non-negative integers, got {line.strip()!r}"
            )
        path1 = _image_path(root, name1, index1, pairs_txt, lineno)
        path2 = _image_path(root, name2, index2, pairs_txt, lineno)
        pairs.append((path1, path2, issame))
    if not pairs:
        raise ConfigError(f"{pairs_txt}: no pairs found")
    return pairs


def _lfw_pair_set(path: Path, root: Path) -> PairSet:
    pairs = read_lfw_pairs(path, root)
    index: dict[Path, int] = {}
    images: list[Path | bytes] = []
    identities: list[str] = []
    idx1 = np.empty(len(pairs), dtype=np.int64)
    idx2 = np.empty(len(pairs), dtype=np.int64)
    for p, (path1, path2, _) in enumerate(pairs):
        for image, out in ((path1, idx1), (path2, idx2)):
            if image not in index:
                index[image] = len(images)
                images.append(image)
                identities.append(image.parent.name)
            out[p] = index[image]
    names = sorted(set(identities))
    label_of = {n: c for c, n in enumerate(names)}
    labels = np.array([label_of[n] for n in identities], dtype=np.int64)
    issame = np.array([s for _, _, s in pairs], dtype=bool)
    name = path.parent.name if path.stem == "pairs" and path.parent.name else path.stem
    return PairSet(name, path, images, idx1, idx2, issame, labels)


def _bin_pair_set(path: Path) -> PairSet:
    bins, issame = load_bin(path)
    n = issame.shape[0]
    idx1 = np.arange(0, 2 * n, 2, dtype=np.int64)
    idx2 = idx1 + 1
    return PairSet(path.stem, path, list(bins), idx1, idx2, issame, None)


def load_pair_set(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> PairSet:
    """Load a pair set by extension: `.txt` (LFW pairs; `root` defaults to the file's folder) or `.bin`.

    The set's name is the file stem, or the parent folder's name for a file called `pairs.txt`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return _lfw_pair_set(path, Path(root) if root else path.parent)
    if suffix == ".bin":
        return _bin_pair_set(path)
    raise ConfigError(f"unsupported pair file {path}: expected a .txt (LFW pairs) or .bin (insightface) file")
