"""The demo's held-out identities and their two pair sets, and how every model is scored on them.

Both sets use the same images, `<heldout>/<id_XXXXX>/<id_XXXXX>_<NNNN>.png` of identities disjoint from
training (another generator seed):

- `pairs.txt` (set `heldout`): `data.synthetic.heldout_pairs` LFW-style pairs, 10 folds of half same,
  half different pairs, for the insightface 10-fold accuracy;
- `heldout_all.txt` (set `heldout_all`): every same-identity pair and `evaluation.make_sets`' default
  number of different-identity pairs (100,000, or all of them when fewer), so that TAR is measured down
  to FAR 1e-4 and students can be told apart by a paired bootstrap over identities.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text
from config import PipelineConfig
from evaluation.make_sets import (
    auto_impostor_count,
    count_impostor_pairs,
    fold_order,
    genuine_pairs,
    lfw_pair_lines,
    sample_impostor_pairs,
)
from evaluation.pairs import PairSet, load_pair_set
from evaluation.verify import SetResult, evaluate_sets
from models.embedder import Embedder
from readers.synthetic import SyntheticDataset, pair_name, write_pair_set

HELDOUT_SEED_OFFSET = 7919  # the held-out identities come from another generator seed
DEMO_FARS = (1e-2, 1e-3, 1e-4)
SAMPLED, ALL_PAIRS = "heldout", "heldout_all"


@dataclass
class HeldOut:
    """The two held-out pair sets (module docstring) and the decoded images of each."""

    sampled: PairSet
    all_pairs: PairSet
    images: dict[str, np.ndarray]


def all_pair_lines(identities: int, images_per_identity: int, seed: int) -> tuple[list[str], int, int]:
    """`heldout_all.txt` lines for `identities` x `images_per_identity` images (item c * n + i is image i + 1
    of identity c): every genuine pair and the default impostor count; (lines, genuine, impostor)."""
    labels = np.repeat(np.arange(identities, dtype=np.int64), images_per_identity)
    genuine = genuine_pairs(labels)
    impostor = sample_impostor_pairs(labels, auto_impostor_count(len(genuine), count_impostor_pairs(labels)), seed)
    names = [pair_name(int(c)) for c in labels]
    numbers = [int(i) + 1 for i in np.tile(np.arange(images_per_identity), identities)]
    return lfw_pair_lines(fold_order(genuine, impostor, seed), names, numbers), len(genuine), len(impostor)


def held_out_sets(cfg: PipelineConfig, out_dir: Path) -> HeldOut:
    """Write the held-out images and both pair files once (reused on a rerun), load and decode them."""
    syn = cfg.data.synthetic
    if not (out_dir / "pairs.txt").exists():
        heldout = SyntheticDataset(syn.heldout_identities, syn.heldout_images_per_identity, cfg.data.image_size,
                                   seed=syn.seed + HELDOUT_SEED_OFFSET, difficulty=syn.difficulty)
        write_pair_set(heldout, out_dir, syn.heldout_pairs, seed=syn.seed)
    all_file = out_dir / f"{ALL_PAIRS}.txt"
    if not all_file.exists():
        lines, _, _ = all_pair_lines(syn.heldout_identities, syn.heldout_images_per_identity, syn.seed)
        atomic_write_text(all_file, "\n".join(lines) + "\n")
    sampled, all_pairs = load_pair_set(out_dir / "pairs.txt"), load_pair_set(all_file)
    side = cfg.data.image_size
    return HeldOut(sampled, all_pairs, {SAMPLED: sampled.decode(side), ALL_PAIRS: all_pairs.decode(side)})


def evaluate_held_out(embedder: Embedder, held: HeldOut, batch_size: int, nfolds: int) -> dict[str, SetResult]:
    """`evaluate_sets` on both sets by name; each record gains its genuine and impostor pair counts and the
    mean same/different-identity cosines."""
    sets = {SAMPLED: held.sampled, ALL_PAIRS: held.all_pairs}
    results = evaluate_sets(list(sets.values()), lambda s: embedder.embed_fused(held.images[s.name], batch_size),
                            nfolds=nfolds, fars=DEMO_FARS)
    for name, result in results.items():
        genuine = int(sets[name].issame.sum())
        result.record.pop("similarity", None)
        result.record.update(genuine_pairs=genuine, impostor_pairs=len(sets[name]) - genuine,
                             intra_mean=float(result.intra.mean()), inter_mean=float(result.inter.mean()))
    return results
