"""Model-versus-model records on one pair set: `paired_bootstrap` wrapped into the rows of a summary.

A row is `{"set", "a", "b", "metric", "a_value", "b_value", "difference", "ci_low", "ci_high", "n_boot",
"skipped"}`: `a`, `b` are model names, `difference` = b - a on the full set and [ci_low, ci_high] its 95%
paired-bootstrap interval over identities (`evaluation.bootstrap`). `evaluate` and `demo` both write them.

Besides AUC and TAR at the given FARs, metric `tar@lowest_far` (row field `far`) compares TAR at the
lowest FAR the set supports, 1 / impostor pairs (one impostor above the threshold), unless it is one of
them: a set of 300 impostor pairs, too small for FAR 1e-3, still gets a TAR comparison (at 3.3e-3).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from evaluation.bootstrap import DEFAULT_FARS, paired_bootstrap
from evaluation.pairs import PairSet
from evaluation.protocol import far_key


def model_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Every (a, b) with a listed before b: the comparisons of several models."""
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def compare_on_set(set_name: str, pair_set: PairSet, scores: Mapping[str, np.ndarray],
                   pairs: Sequence[tuple[str, str]], n_boot: int, seed: int,
                   fars: Sequence[float] = DEFAULT_FARS) -> list[dict[str, Any]]:
    """Rows (module docstring) for each (a, b) of `pairs` on a set that names identities.

    scores: model name -> [P] pair scores of `pair_set` (higher = more alike); every replicate uses the
    same `seed`, so all comparisons of a set see the same identity resamples.
    """
    if pair_set.labels is None:
        raise ValueError(f"{pair_set.source}: names no identities, so there is nothing to resample")
    id1, id2 = pair_set.labels[pair_set.idx1], pair_set.labels[pair_set.idx2]
    lowest = lowest_far(pair_set.issame)
    extra = (lowest,) if lowest is not None and all(not np.isclose(lowest, f, rtol=1e-9) for f in fars) else ()
    rows: list[dict[str, Any]] = []
    for a, b in pairs:
        for rec in paired_bootstrap(scores[a], scores[b], pair_set.issame, id1, id2, fars=(*fars, *extra),
                                    n_boot=n_boot, seed=seed):
            row = {"set": set_name, "a": a, "b": b, "metric": rec["metric"], "a_value": rec["a"],
                   "b_value": rec["b"], "difference": rec["difference"], "ci_low": rec["ci_low"],
                   "ci_high": rec["ci_high"], "n_boot": rec["n_boot"], "skipped": rec["skipped"]}
            if extra and rec["metric"] == f"tar@{far_key(extra[0])}":
                row.update(metric=LOWEST_FAR_METRIC, far=extra[0])
            rows.append(row)
    return rows


LOWEST_FAR_METRIC = "tar@lowest_far"


def lowest_far(issame: np.ndarray) -> float | None:
    """1 / impostor pairs: the lowest FAR at which the TAR rule has a threshold (None with no impostors)."""
    n_neg = int(np.size(issame) - np.count_nonzero(issame))
    return 1.0 / n_neg if n_neg else None


def verdict(row: dict[str, Any]) -> str:
    """What the 95% interval of a row says: b higher, a higher, or no difference shown."""
    low, high = row["ci_low"], row["ci_high"]
    if low is None or high is None:
        return "not measured"
    if low > 0:
        return f"{row['b']} higher"
    if high < 0:
        return f"{row['a']} higher"
    return "no difference shown"


def mean_std(values: Sequence[float | None]) -> str:
    """`mean ± std` of one metric over seeds for a table (`n/a` when any seed has no value; one value alone)."""
    if not values or any(v is None for v in values):
        return "n/a"
    a = np.asarray(values, dtype=np.float64)
    return f"{a.mean():.4f} ± {a.std():.4f}" if a.size > 1 else f"{a.mean():.4f}"
