"""Conversions between the layouts insightface users hold: any data set -> `.rec`/`.idx`/`property`, and a `.rec`
back to an image folder. Images travel as their stored bytes (never re-encoded), so a round trip is exact.

A `.rec` written here is an insightface training set: record 0 the header, images as keys 1..n grouped by
identity (rows are ordered by label, stably), then one identity record per identity; `property` holds
"<identities>,<height>,<width>". A folder written here is `<label>/<row>.<jpg|png|bmp>` with zero-padded
numbers, so `FolderDataset` reads the rows back in the same order with the same labels (identity names
are not kept: a `.rec` holds labels only).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.atomic import atomic_folder, atomic_write_text
from common.errors import ConfigError, PipelineError
from readers.base import CorruptImageError, FaceDataset
from readers.face_size import header_size
from readers.recordio import write_rec

SIGNATURES = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"BM", ".bmp"))
Progress = Callable[[int], object]


@dataclass(frozen=True)
class Converted:
    """What a conversion wrote: image and identity counts, the images' size (height, width), the files."""

    images: int
    identities: int
    image_size: tuple[int, int]
    outputs: tuple[Path, ...]


def image_suffix(data: bytes, key: str) -> str:
    """The file suffix of encoded image bytes from their signature; another format is a CorruptImageError."""
    for magic, suffix in SIGNATURES:
        if data.startswith(magic):
            return suffix
    raise CorruptImageError(key, "not a JPEG, PNG or BMP image")


def stored_size(data: bytes, key: str) -> tuple[int, int]:
    """(height, width) of encoded image bytes, read from the header only."""
    size = header_size(data)
    if size is None:
        raise CorruptImageError(key, "cannot read the header")
    return size[1], size[0]


def refuse_existing(paths: tuple[Path, ...]) -> None:
    """ConfigError naming the first of `paths` that exists: conversions never overwrite."""
    for path in paths:
        if path.exists():
            raise ConfigError(f"'{path}' exists; conversions never overwrite: remove it or choose another output")


def rec_outputs(rec_path: str | Path) -> tuple[Path, Path, Path]:
    """The three files of an insightface training set: `<name>.rec`, `<name>.idx` and `property` beside them."""
    rec = Path(rec_path)
    if rec.suffix != ".rec":
        raise ConfigError(f"'{rec}': a RecordIO output must end in .rec")
    return rec, rec.with_suffix(".idx"), rec.parent / "property"


def dataset_to_rec(dataset: FaceDataset, rec_path: str | Path, progress: Progress | None = None) -> Converted:
    """Write every row of `dataset` into an insightface `.rec`/`.idx`/`property` (see the module docstring).

    Every image must have the first image's size (aligned faces; `property` states one size); an image of
    another size, or unreadable bytes, stops the conversion with a PipelineError naming the row, and
    nothing is left under the output names.
    """
    outputs = rec_outputs(rec_path)
    staged = tuple(p.with_name(f".{p.name}.new") for p in outputs)
    # the .rec appears last: an .idx or property beside a staged .rec and no .rec is a killed run's, replaced
    refuse_existing(outputs[:1] if staged[0].exists() else outputs)
    order = np.argsort(dataset.labels, kind="stable")
    sizes: list[tuple[int, int]] = []

    def images() -> Iterator[bytes]:
        for row in order.tolist():
            key = dataset.keys[row]
            data = dataset.encoded(row)
            size = stored_size(data, key)
            image_suffix(data, key)
            if sizes and size != sizes[0]:
                raise PipelineError(f"image '{key}' is {size[0]} x {size[1]} but the first image "
                                    f"'{dataset.keys[int(order[0])]}' is {sizes[0][0]} x {sizes[0][1]}; "
                                    "a .rec holds aligned faces of one size")
            if not sizes:
                sizes.append(size)
            if progress is not None:
                progress(1)
            yield data

    try:
        n = write_rec(images(), dataset.labels[order], staged[0], staged[1])
    except CorruptImageError as e:
        raise PipelineError(f"{e} (in '{dataset.root}'); nothing was written") from None
    height, width = sizes[0]
    atomic_write_text(staged[2], f"{dataset.num_classes},{height},{width}\n")
    for done, final in ((staged[2], outputs[2]), (staged[1], outputs[1]), (staged[0], outputs[0])):
        os.replace(done, final)  # property and .idx first, the .rec last: a set with its .rec is whole
    return Converted(n, dataset.num_classes, (height, width), outputs)


def dataset_to_folder(dataset: FaceDataset, out_dir: str | Path, progress: Progress | None = None) -> Converted:
    """Write every row of `dataset` as `<out_dir>/<label>/<row>.<suffix>` (its stored bytes), atomically."""
    out = Path(out_dir)
    refuse_existing((out,))
    label_width = len(str(max(dataset.num_classes - 1, 0)))
    row_width = len(str(max(len(dataset) - 1, 0)))
    size: tuple[int, int] | None = None
    try:
        with atomic_folder(out) as tmp:
            for row in range(len(dataset)):
                data = dataset.encoded(row)
                folder = tmp / f"{int(dataset.labels[row]):0{label_width}d}"
                folder.mkdir(exist_ok=True)
                (folder / f"{row:0{row_width}d}{image_suffix(data, dataset.keys[row])}").write_bytes(data)
                size = size or stored_size(data, dataset.keys[row])
                if progress is not None:
                    progress(1)
    except CorruptImageError as e:
        raise PipelineError(f"{e} (in '{dataset.root}'); nothing was written") from None
    return Converted(len(dataset), dataset.num_classes, size or (0, 0), (out,))
