"""`evaluate_sets`: the one evaluation API that `evaluate`, the periodic verifier and `demo` call.

Given pair sets and a function that returns the flip-fused, unit-norm embedding of every distinct
image of a set, it runs the insightface verification protocol (`evaluation.protocol.summarize`)
and returns, per set, the summary record plus the ROC curve and, for sets that name identities, the
same- and different-identity cosine distributions; every set's record has `pair_cosine`, the mean
cosine of its genuine and impostor pairs (`evaluation.collapse`), `thresholds`, the cosine above which
a pair is accepted at each reported FAR (`evaluation.protocol.far_thresholds`: the deployer's operating
points), and `at_chance` (AUC below `evaluation.collapse.CHANCE_AUC`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ConfigError, PipelineError
from evaluation.collapse import at_chance, pair_cosines, score_to_cosine
from evaluation.compactness import inter_class_similarities, intra_class_similarities, similarity_stats
from evaluation.pairs import PairSet
from evaluation.protocol import far_thresholds, roc_curve, squared_l2_distance, summarize

DEFAULT_FARS = (1e-3, 1e-4)
MAX_INTER_PAIRS = 20000  # different-identity cosines kept for a histogram (seeded sample)


@dataclass
class SetResult:
    """One pair set's results: `record` is its entry in the JSON summary (`sets`)."""

    name: str
    record: dict[str, Any]
    fpr: np.ndarray
    tpr: np.ndarray
    scores: np.ndarray  # [P] float64 pair scores, minus the squared L2 distance (higher = more alike)
    intra: np.ndarray = field(default_factory=lambda: np.zeros(0))  # same-identity cosines (all pairs)
    inter: np.ndarray = field(default_factory=lambda: np.zeros(0))  # different-identity cosines (sample)


def set_name(pair_set: PairSet, taken: Sequence[str]) -> str:
    """The set's name, or its file name when another set already has that name."""
    for name in (pair_set.name, pair_set.source.name):
        if name not in taken:
            return name
    raise ConfigError(f"config key 'eval.pairs': two sets are named '{pair_set.name}' and "
                      f"'{pair_set.source.name}'; rename '{pair_set.source}'")


def evaluate_set(pair_set: PairSet, emb: np.ndarray, name: str, nfolds: int = 10,
                 fars: Sequence[float] = DEFAULT_FARS, distributions: bool = True) -> SetResult:
    """The protocol on one set: emb [n_images, D] unit-norm flip-fused embeddings of `pair_set.images`.

    `distributions` adds, for sets that name identities, `record["similarity"]` and the intra/inter cosines.
    """
    if emb.shape[0] != len(pair_set.images):
        raise ValueError(f"{len(pair_set.images)} images in '{pair_set.source}' but {emb.shape[0]} embeddings")
    e1, e2 = emb[pair_set.idx1], emb[pair_set.idx2]
    full = summarize(e1, e2, pair_set.issame, nfolds=nfolds, fars=tuple(fars))
    record = {k: v for k, v in full.items() if k not in ("thresholds", "fold_accuracies")}
    scores = -squared_l2_distance(e1, e2).astype(np.float64)
    record["pair_cosine"] = pair_cosines(scores, pair_set.issame)
    thresholds = far_thresholds(scores, pair_set.issame, tuple(fars))
    record["thresholds"] = {k: score_to_cosine(v) for k, v in thresholds.items()}
    auc = full["auc"]
    record["at_chance"] = at_chance(auc if isinstance(auc, float) else None)
    fpr, tpr = roc_curve(scores, pair_set.issame)
    result = SetResult(name, record, fpr, tpr, scores)
    if distributions and pair_set.labels is not None:
        record["similarity"] = similarity_stats(emb, pair_set.labels)
        result.intra = intra_class_similarities(emb, pair_set.labels)
        result.inter = inter_class_similarities(emb, pair_set.labels, MAX_INTER_PAIRS, 0)
    return result


def evaluate_sets(pair_sets: Sequence[PairSet], embed: Callable[[PairSet], np.ndarray], nfolds: int = 10,
                  fars: Sequence[float] = DEFAULT_FARS, distributions: bool = True) -> dict[str, SetResult]:
    """Every set through `evaluate_set`, with `embed(pair_set)` giving its embeddings; keyed by unique name."""
    results: dict[str, SetResult] = {}
    sources: set[Path] = set()
    for pair_set in pair_sets:
        if pair_set.source in sources:
            raise ConfigError(f"config key 'eval.pairs': '{pair_set.source}' is listed twice")
        sources.add(pair_set.source)
        name = set_name(pair_set, list(results))
        embeddings = embed(pair_set)
        bad = np.flatnonzero(~np.isfinite(embeddings).all(axis=1)) if embeddings.size else np.zeros(0, int)
        if bad.size:
            raise PipelineError(f"{pair_set.source}: the model's embedding of {bad.size} of {len(embeddings)} images "
                                f"is not finite (NaN or infinity; first: image {int(bad[0])}); the model is broken "
                                "(weights with NaN, or an overflow in float16): no score is reported")
        results[name] = evaluate_set(pair_set, embeddings, name, nfolds, fars, distributions)
    return results
