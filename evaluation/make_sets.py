"""Verification sets made from any labelled data: an identity split, LFW-style pairs, IJB-style templates.

Plain values in, plain values out (label arrays, index arrays, text lines); `stages/split.py` writes the
files. Every random choice takes a seed, so the same labels and seed give the same sets.

- `split_identities`: a person-disjoint split; identities with fewer than 2 images always train.
- `genuine_pairs`: every same-identity pair of items, each once (i < j).
- `sample_impostor_pairs`: distinct different-identity pairs, uniform over all of them, without
  replacement (all of them when `count` reaches their number).
- `auto_impostor_count`: the default impostor count, `AUTO_IMPOSTORS` (100,000) or the genuine count if
  larger, capped at all impostor pairs. This project's TAR@FAR rule needs FAR x n_impostors >= 1, so
  FAR 1e-4 needs 10,000 impostors; ten times that puts the FAR-1e-4 threshold at the 11th-highest
  impostor score (a steadier threshold than the highest one) and still gives a TAR at FAR 1e-5.
- `fold_order`: genuine and impostor pairs shuffled and dealt into 10 contiguous folds, each with a
  tenth of both, because insightface's protocol takes contiguous folds without shuffling.
- `make_templates`: per identity, max(1, n // size) templates of at least `size` images (fewer only when
  the identity has fewer images), the shuffled images dealt round-robin.
- `search_lists`: IJB-C-style 1:N lists over those templates: the identities dealt by seed into two
  galleries (G1: the first half, rounded up; G2: the rest), each identity enrolled by its first template
  in its own gallery, its other templates probes. Every probe's identity is enrolled in exactly one
  gallery, so the probes of G2 identities are the non-mated probes of G1 and the other way round, as in
  IJB-C's mixed probes against G1 and G2.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

AUTO_IMPOSTORS = 100_000
NUM_FOLDS = 10


@dataclass
class IdentitySplit:
    """Identity labels of each part (sorted) and the item indices of each part (in item order)."""

    train_ids: np.ndarray
    heldout_ids: np.ndarray
    train_rows: np.ndarray
    heldout_rows: np.ndarray


def split_identities(labels: np.ndarray, heldout_fraction: float, seed: int) -> IdentitySplit:
    """Hold out round(fraction x identities) identities (at most those with >= 2 images), chosen by `seed`."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    ids, counts = np.unique(labels, return_counts=True)
    eligible = ids[counts >= 2]
    n_held = min(len(eligible), int(round(float(heldout_fraction) * len(ids))))
    rng = np.random.default_rng([int(seed), 11])
    held = np.sort(rng.choice(eligible, size=n_held, replace=False)) if n_held else eligible[:0]
    train = np.setdiff1d(ids, held)
    in_held = np.isin(labels, held)
    return IdentitySplit(train, held, np.flatnonzero(~in_held), np.flatnonzero(in_held))


def groups_of(labels: np.ndarray) -> list[np.ndarray]:
    """Item indices of each distinct label, labels in sorted order, items in item order."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    return list(np.split(order, starts[1:])) if len(labels) else []


def genuine_pairs(labels: np.ndarray) -> np.ndarray:
    """int64 [G, 2]: every pair (i, j), i < j, of items with the same label, grouped by label."""
    chunks = []
    for group in groups_of(labels):
        a, b = np.triu_indices(len(group), k=1)
        chunks.append(np.stack([group[a], group[b]], axis=1))
    return np.concatenate(chunks).astype(np.int64) if chunks else np.empty((0, 2), np.int64)


def count_impostor_pairs(labels: np.ndarray) -> int:
    """How many unordered pairs of items have different labels."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    n = int(counts.sum())
    return (n * n - int((counts.astype(np.int64) ** 2).sum())) // 2


def auto_impostor_count(genuine: int, total_impostors: int) -> int:
    """The default impostor count (module docstring): max(AUTO_IMPOSTORS, genuine), capped at all of them."""
    return min(int(total_impostors), max(AUTO_IMPOSTORS, int(genuine)))


def _all_impostor_pairs(labels: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(len(labels), k=1)
    keep = labels[i] != labels[j]
    return np.stack([i[keep], j[keep]], axis=1).astype(np.int64)


def sample_impostor_pairs(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """int64 [min(count, all), 2]: distinct pairs (i, j), i < j, of items with different labels, drawn by `seed`.

    Uniform without replacement: all pairs enumerated and subsampled when `count` is at least half of
    them, else rejection sampling of random item pairs with duplicates dropped.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    total = count_impostor_pairs(labels)
    count = min(int(count), total)
    rng = np.random.default_rng([int(seed), 13])
    if count <= 0:
        return np.empty((0, 2), np.int64)
    if 2 * count >= total:
        pairs = _all_impostor_pairs(labels)
        return pairs[np.sort(rng.choice(len(pairs), size=count, replace=False))]
    n = len(labels)
    codes = np.empty(0, np.int64)
    while len(codes) < count:
        draw = rng.integers(n, size=(2 * (count - len(codes)) + 64, 2))
        draw = draw[labels[draw[:, 0]] != labels[draw[:, 1]]]
        new = np.minimum(draw[:, 0], draw[:, 1]) * n + np.maximum(draw[:, 0], draw[:, 1])
        codes = np.concatenate([codes, new])
        _, first = np.unique(codes, return_index=True)
        codes = codes[np.sort(first)][:count]
    return np.stack([codes // n, codes % n], axis=1).astype(np.int64)


def fold_order(genuine: np.ndarray, impostor: np.ndarray, seed: int,
               folds: int = NUM_FOLDS) -> list[tuple[int, int, bool]]:
    """(i, j, same) of every pair, shuffled and dealt into `folds` contiguous folds with a share of both kinds."""
    rng = np.random.default_rng([int(seed), 17])
    gen = np.asarray(genuine, np.int64).reshape(-1, 2)[rng.permutation(len(genuine))]
    imp = np.asarray(impostor, np.int64).reshape(-1, 2)[rng.permutation(len(impostor))]
    out: list[tuple[int, int, bool]] = []
    for g, m in zip(np.array_split(gen, folds), np.array_split(imp, folds), strict=True):
        out.extend((int(a), int(b), True) for a, b in g)
        out.extend((int(a), int(b), False) for a, b in m)
    return out


def lfw_pair_lines(pairs: Sequence[tuple[int, int, bool]], names: Sequence[str], numbers: Sequence[int],
                   folds: int = NUM_FOLDS) -> list[str]:
    """LFW `pairs.txt` lines: a header with the fold count, then `name i j` / `name1 i name2 j`.

    Item k is image `numbers[k]` (1-based) of identity folder `names[k]`. `evaluation.pairs.read_lfw_pairs`
    skips a header of one or two integers, so the header is the fold count alone: folds hold unequal
    numbers of genuine and impostor pairs, which a `10 300` header could not describe.
    """
    lines = [str(folds)]
    for a, b, same in pairs:
        if same:
            lines.append(f"{names[a]}\t{numbers[a]}\t{numbers[b]}")
        else:
            lines.append(f"{names[a]}\t{numbers[a]}\t{names[b]}\t{numbers[b]}")
    return lines


def make_templates(labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(template index of each item int64 [N], label of each template int64 [T]); templates numbered 0..T-1
    by label order (module docstring for how images are grouped)."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    rng = np.random.default_rng([int(seed), 19])
    template_of = np.full(len(labels), -1, dtype=np.int64)
    template_labels: list[int] = []
    for group in groups_of(labels):
        k = max(1, len(group) // int(size))
        shuffled = group[rng.permutation(len(group))]
        template_of[shuffled] = len(template_labels) + np.arange(len(group)) % k
        template_labels.extend([int(labels[group[0]])] * k)
    return template_of, np.asarray(template_labels, dtype=np.int64)


@dataclass
class SearchLists:
    """Template indices (sorted) of the two galleries and of the probes (`search_lists`)."""

    gallery1: np.ndarray
    gallery2: np.ndarray
    probes: np.ndarray


def search_lists(template_labels: np.ndarray, seed: int) -> SearchLists:
    """1:N galleries and probes from the label of each template (module docstring), identities dealt by `seed`."""
    template_labels = np.asarray(template_labels, dtype=np.int64).reshape(-1)
    ids = np.unique(template_labels)
    order = np.random.default_rng([int(seed), 23]).permutation(ids)
    first_gallery = set(order[:(len(ids) + 1) // 2].tolist())
    gallery1: list[int] = []
    gallery2: list[int] = []
    probes: list[int] = []
    for group in groups_of(template_labels):
        enrolled = int(group[0])
        (gallery1 if int(template_labels[enrolled]) in first_gallery else gallery2).append(enrolled)
        probes.extend(int(t) for t in group[1:])
    return SearchLists(np.array(sorted(gallery1), np.int64), np.array(sorted(gallery2), np.int64),
                       np.array(sorted(probes), np.int64))


def landmark_line(name: str, points: np.ndarray, score: float = 1.0) -> str:
    """`name x1 y1 ... x5 y5 score`, the IJB `<name>_name_5pts_score.txt` line format."""
    coords = " ".join(f"{v:.4f}" for v in np.asarray(points, dtype=np.float64).reshape(-1))
    return f"{name} {coords} {score:g}"
