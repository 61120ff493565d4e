"""`python cli.py convert SOURCE OUTPUT`: the data conversions insightface users ask for, with progress bars.

- image folder (`<identity>/<image>`) or list file (`path label` lines) -> `OUTPUT.rec` (+ `.idx`, `property`);
- `.rec` (or a folder holding `train.rec` + `train.idx`) -> an image folder `OUTPUT`;
- LFW-style `pairs.txt` + its image folder (`--root`, default the pairs file's folder) -> `OUTPUT.bin`.

Images are copied as their stored bytes. An existing output is never overwritten.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from PIL import Image

from common.errors import ConfigError, PipelineError
from common.progress import progress
from evaluation.binfile import write_bin
from evaluation.pairs import load_pair_set
from readers import FolderDataset, ListDataset, RecordIODataset
from readers.base import CorruptImageError, FaceDataset
from readers.convert import Converted, dataset_to_folder, dataset_to_rec, refuse_existing

log = logging.getLogger(__name__)

ANY_SIZE = 112  # the readers' decode size; conversions copy bytes and never decode at it
FORMS = ("image folder or list file -> OUTPUT.rec; .rec (or a folder with train.rec) -> image folder; "
         "pairs.txt (+ --root) -> OUTPUT.bin")


def _is_rec(source: Path) -> bool:
    return source.suffix == ".rec" or (source.is_dir() and (source / "train.rec").is_file()
                                       and (source / "train.idx").is_file())


def _images(source: Path) -> FaceDataset:
    if not source.exists():
        raise ConfigError(f"convert: source '{source}' does not exist")
    return FolderDataset(source, ANY_SIZE) if source.is_dir() else ListDataset(source, ANY_SIZE)


def _bar(total: int, what: str) -> Any:
    return progress(total, what, leave=False)


def _check_image(data: bytes, path: str) -> None:
    """ConfigError naming `path` unless `data` is an image Pillow can read (the header and the structure)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except Exception as e:  # Pillow raises many kinds for a file that is not an image
        raise ConfigError(f"convert: '{path}' is not an image Pillow can read ({e}); nothing was written") from None


def pairs_to_bin(pairs: Path, root: Path | None, output: Path) -> dict[str, Any]:
    """An LFW-style pair set as an insightface `.bin` (pair k: images 2k and 2k + 1, as insightface stores them)."""
    refuse_existing((output,))
    pair_set = load_pair_set(pairs, root)
    if pair_set.labels is None:
        raise ConfigError(f"convert: '{pairs}' is already a .bin")
    bins: list[bytes] = []
    checked: set[int] = set()
    with _bar(len(pair_set), "pairs") as bar:
        for a, b in zip(pair_set.idx1.tolist(), pair_set.idx2.tolist(), strict=True):
            try:
                bins += [pair_set.image_bytes(a), pair_set.image_bytes(b)]
            except CorruptImageError as e:
                raise PipelineError(f"convert: {e}; nothing was written") from None
            for index, data in ((a, bins[-2]), (b, bins[-1])):
                if index not in checked:
                    image = pair_set.images[index]
                    _check_image(data, str(image) if isinstance(image, Path) else f"{pairs}#{index}")
                    checked.add(index)
            bar.update(1)
    write_bin(output, bins, pair_set.issame)
    return {"pairs": len(pair_set), "images": len(pair_set.images), "outputs": [str(output)]}


def _record(result: Converted) -> dict[str, Any]:
    return {"images": result.images, "identities": result.identities, "image_size": list(result.image_size),
            "outputs": [str(p) for p in result.outputs]}


def conversion_form(src: Path, out: Path, root: str | None) -> str:
    """Which conversion the names ask for: `bin`, `rec` or `folder`; anything else -> ConfigError."""
    if out.suffix == ".bin":
        return "bin"
    if root:
        raise ConfigError("convert: --root is for pairs.txt -> .bin only")
    if out.suffix == ".rec":
        if _is_rec(src):
            raise ConfigError(f"convert: '{src}' is already a .rec")
        return "rec"
    if _is_rec(src) and not out.suffix:
        return "folder"
    raise ConfigError(f"convert: cannot tell what to do with '{src}' -> '{out}'; the forms: {FORMS}")


def _to_rec(src: Path, out: Path) -> dict[str, Any]:
    dataset = _images(src)
    with _bar(len(dataset), "images") as bar:
        return _record(dataset_to_rec(dataset, out, bar.update))


def _to_folder(src: Path, out: Path) -> dict[str, Any]:
    dataset = RecordIODataset(src, ANY_SIZE)
    with _bar(len(dataset), "images") as bar:
        return _record(dataset_to_folder(dataset, out, bar.update))


def run_convert(source: str, output: str, root: str | None = None) -> dict[str, Any]:
    """Convert `source` into `output` (the form is told by the names, see the module docstring)."""
    src, out = Path(source), Path(output)
    form = conversion_form(src, out, root)
    if form == "bin":
        record = pairs_to_bin(src, Path(root) if root else None, out)
    else:
        record = (_to_rec if form == "rec" else _to_folder)(src, out)
    log.info("convert: %s -> %s: %s", src, out, record)
    return {"command": "convert", "source": str(src), **record}
