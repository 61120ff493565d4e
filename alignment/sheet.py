"""Contact sheets: a grid of small images, each with a caption under it, as one PNG for a person to look at."""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common.atomic import atomic_path

TILE = 112  # pixels per tile side (an aligned face at its own size)
CAPTION_LINES = 2
LINE_HEIGHT = 11
CHARS_PER_LINE = 18  # PIL's default bitmap font: 6 px per character


def fit_tile(rgb: np.ndarray, side: int = TILE) -> Image.Image:
    """uint8 [H, W, 3] -> a side x side RGB tile: the image scaled to fit, centred on grey."""
    im = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    if max(im.size) > side:
        im.thumbnail((side, side), Image.Resampling.BILINEAR)
    tile = Image.new("RGB", (side, side), (96, 96, 96))
    tile.paste(im, ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
    return tile


def _caption_lines(text: str) -> list[str]:
    lines = [text[i:i + CHARS_PER_LINE] for i in range(0, len(text), CHARS_PER_LINE)] or [""]
    return lines[:CAPTION_LINES]


def contact_sheet(tiles: Sequence[tuple[np.ndarray, str]], path: str | os.PathLike[str], columns: int = 8) -> None:
    """Write `tiles` ([H, W, 3] uint8 image, caption) as a grid PNG at `path` (atomically)."""
    if not tiles:
        raise ValueError("a contact sheet needs at least one tile")
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    cell_h = TILE + CAPTION_LINES * LINE_HEIGHT + 2
    sheet = Image.new("RGB", (columns * TILE, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, (rgb, caption) in enumerate(tiles):
        x, y = (k % columns) * TILE, (k // columns) * cell_h
        sheet.paste(fit_tile(rgb), (x, y))
        for j, line in enumerate(_caption_lines(caption)):
            draw.text((x + 2, y + TILE + 1 + j * LINE_HEIGHT), line, fill=(0, 0, 0), font=font)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG", compress_level=1)  # for a person to look at: fast over small
