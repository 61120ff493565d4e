"""The LFW-style held-out pair writer: every image of a `SyntheticDataset` as PNG files plus a `pairs.txt`.

`write_pair_set` lays out `<name>/<name>_<NNNN>.png` folders (`pair_name` gives the folder name of an
identity) and 10 folds of same- and different-identity pairs drawn by `_sample_pairs`, built in a
temporary folder and renamed into place.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from common.atomic import atomic_folder
from common.errors import ConfigError
from readers.synthetic.dataset import SyntheticDataset


def pair_name(identity: int) -> str:
    return f"id_{identity:05d}"


def _sample_pairs(dataset: SyntheticDataset, per_fold: int, rng: np.random.Generator) -> list[str]:
    """LFW pairs.txt lines: 10 folds, each `per_fold` same-identity then `per_fold` different pairs."""
    n_id, n_img = dataset.identities, dataset.images_per_identity
    seen: set[tuple[int, ...]] = set()

    def fresh(make: Callable[[], tuple[int, ...]]) -> tuple[int, ...]:
        pair = make()
        for _ in range(50):
            if pair not in seen:
                break
            pair = make()
        seen.add(pair)
        return pair

    def same() -> tuple[int, ...]:
        c = int(rng.integers(n_id))
        i, j = sorted(int(v) for v in rng.choice(n_img, 2, replace=False))
        return (c, i, j)

    def different() -> tuple[int, ...]:
        a, b = sorted(int(v) for v in rng.choice(n_id, 2, replace=False))
        return (a, int(rng.integers(n_img)), b, int(rng.integers(n_img)))

    lines = [f"10\t{per_fold}"]
    for _ in range(10):
        for _ in range(per_fold):
            c, i, j = fresh(same)
            lines.append(f"{pair_name(c)}\t{i + 1}\t{j + 1}")
        for _ in range(per_fold):
            a, i, b, j = fresh(different)
            lines.append(f"{pair_name(a)}\t{i + 1}\t{pair_name(b)}\t{j + 1}")
    return lines


def write_pair_set(dataset: SyntheticDataset, out_dir: str | os.PathLike[str], num_pairs: int, seed: int) -> Path:
    """Write every image of `dataset` as `out_dir/<name>/<name>_<NNNN>.png` (NNNN 1-based) plus an LFW
    `pairs.txt` of `num_pairs` pairs (rounded down to a multiple of 20: 10 folds, each half same, half
    different); returns the path of pairs.txt. Built in a temporary folder, then renamed into place.
    """
    if dataset.identities < 2 or dataset.images_per_identity < 2:
        raise ConfigError("pair set: needs >= 2 identities and >= 2 images per identity")
    per_fold = int(num_pairs) // 20
    if per_fold < 1:
        raise ConfigError(f"pair set: num_pairs {num_pairs} is below 20 (10 folds of a same and a different pair)")
    lines = _sample_pairs(dataset, per_fold, np.random.default_rng([int(seed), 3]))
    out = Path(out_dir)
    with atomic_folder(out) as tmp:
        for c in range(dataset.identities):
            name = pair_name(c)
            (tmp / name).mkdir()
            for i in range(dataset.images_per_identity):
                Image.fromarray(dataset.render(c, i)).save(tmp / name / f"{name}_{i + 1:04d}.png", compress_level=1)
        (tmp / "pairs.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out / "pairs.txt"
