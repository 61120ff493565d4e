"""Telling two models apart: a paired bootstrap over identities on the same verification pairs.

Pairs that share an identity are not independent (one person's images enter many pairs), so the
resampling unit is the identity, not the pair. One replicate draws U identities with replacement
from the U identities the pairs involve, and every pair follows its identities ("pairs follow their
identities", a block bootstrap). Each drawn copy of an identity is treated as a distinct
pseudo-identity holding that identity's images, which gives the multiplicity rule of
`pair_multiplicities`:

- genuine pair of identity i (id1 == id2 == i): taken c_i times, once inside each copy of i;
- impostor pair of identities i != j: taken c_i * c_j times, once for every (copy of i, copy of j).

with c_i the number of times i was drawn. A pair with an identity that was not drawn gets weight 0.
A genuine pair is not taken c_i ** 2 times: a pair between two different copies of i would join two
distinct pseudo-identities, so it is not a same-identity pair of the replicate. The rule is exact
(integer multiplicities, no approximation), and the metrics of a replicate equal those of the
literally resampled pair list; `weighted_roc_auc` and `weighted_tar_at_far` compute them from the
weights without building that list, with the rules of `protocol.roc_auc` and `protocol.tar_at_far`.

Both models are measured on the same replicate (paired), so the interval is on the difference
b - a itself and accounts for the correlation of the two models on shared pairs and identities
(usually far narrower than two separate intervals). Scores are similarities (higher = more alike),
float64; AUC and TAR are fractions in [0, 1].

Random draws: `rng = np.random.default_rng(seed)`; replicate r (r = 0, 1, ...) uses the r-th call
`rng.integers(0, U, size=U)`, positions into the sorted unique identities.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluation.protocol import far_key, roc_auc, tar_at_far

DEFAULT_N_BOOT = 1000
DEFAULT_FARS = (1e-3, 1e-4)
PERCENTILES = (2.5, 97.5)  # the 95% percentile interval
_CHUNK_ELEMENTS = 2_000_000  # replicates x pairs processed at once (float64: 16 MB per matrix)


# ----------------------------------------------------------------------------- identities and weights


def pair_identity_index(
    id1: np.ndarray, id2: np.ndarray, issame: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The identities the pairs involve and each pair's positions among them.

    id1, id2: [P] int identity of each pair's two images; issame: [P] bool. Returns `identities`
    [U] (sorted unique values of id1 and id2), `idx1`, `idx2`: [P] int64 positions in `identities`.
    Raises ValueError on mismatched shapes, a genuine pair with id1 != id2, or an impostor pair
    with id1 == id2.
    """
    id1 = np.asarray(id1).ravel()
    id2 = np.asarray(id2).ravel()
    issame = np.asarray(issame, dtype=bool).ravel()
    if not id1.shape == id2.shape == issame.shape:
        raise ValueError(f"id1 {id1.shape}, id2 {id2.shape} and issame {issame.shape} differ in length")
    if np.any(issame & (id1 != id2)):
        raise ValueError("a genuine pair (issame) must have id1 == id2")
    if np.any(~issame & (id1 == id2)):
        raise ValueError("an impostor pair (not issame) must have id1 != id2")
    identities, inverse = np.unique(np.concatenate([id1, id2]), return_inverse=True)
    inverse = inverse.astype(np.int64).ravel()
    return identities, inverse[: id1.size], inverse[id1.size :]


def identity_counts(draws: np.ndarray, n_identities: int) -> np.ndarray:
    """How often each identity was drawn: draws [B, n] int positions in [0, U) -> counts [B, U] int64."""
    draws = np.asarray(draws, dtype=np.int64)
    if draws.ndim != 2:
        raise ValueError(f"draws must be [B, n], got shape {draws.shape}")
    if draws.size and (draws.min() < 0 or draws.max() >= n_identities):
        raise ValueError(f"draw positions must lie in [0, {n_identities})")
    n_rows = draws.shape[0]
    flat = (draws + n_identities * np.arange(n_rows, dtype=np.int64)[:, None]).ravel()
    return np.bincount(flat, minlength=n_rows * n_identities).reshape(n_rows, n_identities)


def pair_multiplicities(
    counts: np.ndarray, idx1: np.ndarray, idx2: np.ndarray, issame: np.ndarray
) -> np.ndarray:
    """The multiplicity rule: counts [B, U] int, idx1, idx2 [P] positions, issame [P] -> [B, P] int64.

    Genuine pair (idx1 == idx2 == i): counts[:, i]; impostor pair: counts[:, idx1] * counts[:, idx2].
    """
    counts = np.asarray(counts, dtype=np.int64)
    issame = np.asarray(issame, dtype=bool)
    first = counts[:, idx1]
    second = np.where(issame[None, :], 1, counts[:, idx2])
    return first * second


def replicate_weights(id1: np.ndarray, id2: np.ndarray, issame: np.ndarray, draw: np.ndarray) -> np.ndarray:
    """Multiplicity of every pair in one replicate: id1, id2 [P] int, issame [P] bool, draw [n] int -> [P] int64.

    `draw` holds identity labels (values of id1/id2, with repeats), e.g. the U identities drawn with
    replacement. Rule (module docstring): genuine pair of i -> count(i in draw); impostor pair of
    i, j -> count(i) * count(j).
    """
    identities, idx1, idx2 = pair_identity_index(id1, id2, issame)
    draw = np.asarray(draw).ravel()
    positions = np.searchsorted(identities, draw)
    known = positions < identities.size
    known[known] = identities[positions[known]] == draw[known]
    if not np.all(known):
        raise ValueError("draw holds a label that no pair involves")
    counts = identity_counts(positions[None, :], identities.size)
    return pair_multiplicities(counts, idx1, idx2, np.asarray(issame, dtype=bool).ravel())[0]


# ----------------------------------------------------------------------------- weighted metrics


@dataclass(frozen=True)
class RankedPairs:
    """One model's pairs sorted by score, independent of any weights (computed once per model).

    impostor_rows [N], genuine_rows [G]: positions in the pair list, each class by ascending score;
    impostor_scores [N], genuine_scores [G]: those scores; below [G], at_or_below [G]: how many
    impostor scores are < and <= each genuine score.
    """

    impostor_rows: np.ndarray
    impostor_scores: np.ndarray
    genuine_rows: np.ndarray
    genuine_scores: np.ndarray
    below: np.ndarray
    at_or_below: np.ndarray


def rank_pairs(scores: np.ndarray, issame: np.ndarray) -> RankedPairs:
    """Sort scores [P] float64 (finite) by class, issame [P] bool -> `RankedPairs`."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    issame = np.asarray(issame, dtype=bool).ravel()
    if scores.shape != issame.shape:
        raise ValueError(f"scores {scores.shape} and issame {issame.shape} differ in length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    rows = []
    for mask in (~issame, issame):
        where = np.flatnonzero(mask)
        rows.append(where[np.argsort(scores[where], kind="stable")])
    impostor_scores, genuine_scores = scores[rows[0]], scores[rows[1]]
    return RankedPairs(
        impostor_rows=rows[0],
        impostor_scores=impostor_scores,
        genuine_rows=rows[1],
        genuine_scores=genuine_scores,
        below=np.searchsorted(impostor_scores, genuine_scores, side="left"),
        at_or_below=np.searchsorted(impostor_scores, genuine_scores, side="right"),
    )


def cumulative_weights(ranked: RankedPairs, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prefix sums of the weights [B, P] in score order: impostor [B, N + 1] and genuine [B, G + 1].

    Column j holds the total weight of the j lowest-scoring pairs of that class (column 0 is 0).
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != ranked.impostor_rows.size + ranked.genuine_rows.size:
        raise ValueError(f"weights must be [B, P], got shape {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("weights must be finite and >= 0")
    prefix = []
    for rows in (ranked.impostor_rows, ranked.genuine_rows):
        cum = np.zeros((weights.shape[0], rows.size + 1))
        np.cumsum(weights[:, rows], axis=1, out=cum[:, 1:])
        prefix.append(cum)
    return prefix[0], prefix[1]


def auc_from_cumulative(ranked: RankedPairs, impostor_cum: np.ndarray, genuine_cum: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC per row: prefix sums [B, N + 1], [B, G + 1] -> [B], NaN if a class is empty.

    AUC_b = sum_g w_bg (W_b(< s_g) + W_b(<= s_g)) / (2 * sum_g w_bg * sum_n w_bn), with W_b(. s_g)
    the impostor weight scoring below / at or below genuine score s_g: ties count one half.
    """
    genuine_w = np.diff(genuine_cum, axis=1)
    below = np.take(impostor_cum, ranked.below, axis=1)
    at_or_below = np.take(impostor_cum, ranked.at_or_below, axis=1)
    twice_wins = np.einsum("bg,bg->b", genuine_w, below + at_or_below)
    denominator = 2.0 * genuine_cum[:, -1] * impostor_cum[:, -1]
    result = np.full(denominator.shape, np.nan)
    np.divide(twice_wins, denominator, out=result, where=denominator > 0)
    return result


def tar_from_cumulative(
    ranked: RankedPairs, impostor_cum: np.ndarray, genuine_cum: np.ndarray, far: float
) -> np.ndarray:
    """Weighted TAR at one FAR per row, by the rule of `protocol.tar_at_far`: -> [B], NaN if undefined.

    N_b = impostor weight, k = floor(far * N_b); the threshold is the (k+1)-th highest impostor score
    of the list where each pair is repeated by its weight, i.e. the impostor score at which the
    weight scoring strictly above is <= k and the weight at or above is > k (ascending: the first
    prefix reaching N_b - k). TAR = genuine weight scoring strictly above / genuine weight.
    NaN where k < 1 or there is no genuine weight; 1 where k >= N_b.
    """
    impostor_total, genuine_total = impostor_cum[:, -1], genuine_cum[:, -1]
    k = np.floor(far * impostor_total + 1e-9)
    tar = np.full(impostor_total.shape, np.nan)
    defined = (k >= 1) & (genuine_total > 0)
    tar[defined & (k >= impostor_total)] = 1.0
    rows = np.flatnonzero(defined & (k < impostor_total))
    if rows.size:
        reach = impostor_total[rows] - k[rows]
        position = np.count_nonzero(impostor_cum[rows, 1:] < reach[:, None], axis=1)
        threshold = ranked.impostor_scores[position]
        at_or_below = np.searchsorted(ranked.genuine_scores, threshold, side="right")
        above = genuine_total[rows] - genuine_cum[rows, at_or_below]
        tar[rows] = above / genuine_total[rows]
    return tar


def weighted_roc_auc_rows(scores: np.ndarray, issame: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted AUC for each row of weights: scores [P], issame [P], weights [B, P] -> [B] float64.

    `protocol.roc_auc` on the list where pair p is repeated w_bp times; NaN where a row has no
    genuine or no impostor weight. Integer-valued weights give bit-identical results to `roc_auc`
    on the repeated list (every sum is an exact integer below 2**53).
    """
    ranked = rank_pairs(scores, issame)
    return auc_from_cumulative(ranked, *cumulative_weights(ranked, weights))


def weighted_roc_auc(scores: np.ndarray, issame: np.ndarray, weights: np.ndarray) -> float | None:
    """`weighted_roc_auc_rows` for one weight vector: scores [P], issame [P], weights [P] -> AUC or None."""
    value = weighted_roc_auc_rows(scores, issame, np.asarray(weights, dtype=np.float64).reshape(1, -1))[0]
    return None if math.isnan(value) else float(value)


def weighted_tar_at_far_rows(
    scores: np.ndarray, issame: np.ndarray, weights: np.ndarray, fars: tuple[float, ...] = DEFAULT_FARS
) -> dict[str, np.ndarray]:
    """Weighted TAR at each FAR for each row of weights: scores [P], issame [P], weights [B, P].

    Returns far_key(far) -> [B] float64 (`tar_from_cumulative`): `protocol.tar_at_far` on the list
    where pair p is repeated w_bp times, NaN where that gives None. Integer-valued weights give
    bit-identical results to `tar_at_far` on the repeated list.
    """
    ranked = rank_pairs(scores, issame)
    impostor_cum, genuine_cum = cumulative_weights(ranked, weights)
    return {far_key(far): tar_from_cumulative(ranked, impostor_cum, genuine_cum, far) for far in fars}


def weighted_tar_at_far(
    scores: np.ndarray, issame: np.ndarray, weights: np.ndarray, fars: tuple[float, ...] = DEFAULT_FARS
) -> dict[str, float | None]:
    """`weighted_tar_at_far_rows` for one weight vector [P]: far_key(far) -> TAR or None."""
    rows = weighted_tar_at_far_rows(scores, issame, np.asarray(weights, dtype=np.float64).reshape(1, -1), fars)
    return {key: None if math.isnan(value[0]) else float(value[0]) for key, value in rows.items()}


# ----------------------------------------------------------------------------- the bootstrap


def percentile_interval(values: np.ndarray) -> tuple[float | None, float | None]:
    """95% percentile interval of replicate values [R] (np.percentile, linear); (None, None) when R = 0."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return None, None
    low, high = np.percentile(values, PERCENTILES)
    return float(low), float(high)


def replicate_metrics(ranked: RankedPairs, weights: np.ndarray, fars: tuple[float, ...]) -> dict[str, np.ndarray]:
    """Every metric of one model per replicate: `rank_pairs` of its scores, weights [B, P] -> name -> [B].

    Names: "auc", then "tar@" + far_key(far) for each far; NaN where the metric is undefined.
    """
    impostor_cum, genuine_cum = cumulative_weights(ranked, weights)
    metrics = {"auc": auc_from_cumulative(ranked, impostor_cum, genuine_cum)}
    for far in fars:
        metrics[f"tar@{far_key(far)}"] = tar_from_cumulative(ranked, impostor_cum, genuine_cum, far)
    return metrics


def full_set_metrics(scores: np.ndarray, issame: np.ndarray, fars: tuple[float, ...]) -> dict[str, float | None]:
    """The same metrics on the full pair set (every weight 1), by `roc_auc` and `tar_at_far`."""
    metrics: dict[str, float | None] = {"auc": roc_auc(scores, issame)}
    for key, value in tar_at_far(scores, issame, fars).items():
        metrics[f"tar@{key}"] = value
    return metrics


def _check_bootstrap_inputs(
    scores_a: np.ndarray, scores_b: np.ndarray, issame: np.ndarray, fars: tuple[float, ...], n_boot: int
) -> tuple[np.ndarray, np.ndarray]:
    scores_a = np.asarray(scores_a, dtype=np.float64).ravel()
    scores_b = np.asarray(scores_b, dtype=np.float64).ravel()
    if not scores_a.shape == scores_b.shape == np.asarray(issame).ravel().shape:
        raise ValueError(f"scores_a {scores_a.shape}, scores_b {scores_b.shape} and issame differ in length")
    if not (np.all(np.isfinite(scores_a)) and np.all(np.isfinite(scores_b))):
        raise ValueError("scores must be finite")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if any(not (math.isfinite(far) and far > 0) for far in fars):
        raise ValueError(f"every far must be finite and > 0, got {fars}")
    return scores_a, scores_b


def _comparison(name: str, a: float | None, b: float | None, differences: np.ndarray) -> dict[str, Any]:
    valid = differences[~np.isnan(differences)]
    low, high = percentile_interval(valid) if a is not None and b is not None else (None, None)
    return {
        "metric": name,
        "a": a,
        "b": b,
        "difference": None if a is None or b is None else b - a,
        "ci_low": low,
        "ci_high": high,
        "n_boot": int(differences.size),
        "skipped": int(differences.size - valid.size),
    }


def paired_bootstrap(
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    issame: np.ndarray,
    id1: np.ndarray,
    id2: np.ndarray,
    fars: tuple[float, ...] = DEFAULT_FARS,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Model B minus model A on the same pairs, with a 95% paired bootstrap interval over identities.

    scores_a, scores_b: [P] float64 similarities of the two models on the same pairs; issame [P] bool;
    id1, id2 [P] int: the identities of each pair's two images (id1 == id2 for genuine pairs).
    Returns one record per metric ("auc", then "tar@<far_key>" for each far, TAR in [0, 1]):
    `a`, `b` (values on the full set, by `roc_auc` / `tar_at_far`), `difference` (b - a on the full
    set), `ci_low`, `ci_high` (2.5th and 97.5th percentiles of the replicate differences), `n_boot`
    and `skipped` (replicates where the metric is undefined: no genuine or no impostor weight, or
    too few impostors for that FAR; left out of the interval). A metric undefined on the full set
    has None for `a`, `b`, `difference` and the interval. Deterministic in `seed` (module docstring).
    """
    scores_a, scores_b = _check_bootstrap_inputs(scores_a, scores_b, issame, fars, n_boot)
    issame = np.asarray(issame, dtype=bool).ravel()
    identities, idx1, idx2 = pair_identity_index(id1, id2, issame)
    n_ids = identities.size
    if n_ids == 0:
        raise ValueError("paired_bootstrap needs at least one pair")
    ranked_a, ranked_b = rank_pairs(scores_a, issame), rank_pairs(scores_b, issame)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(scores_a.size, 1))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_boot, chunk):
        draws = np.stack([rng.integers(0, n_ids, size=n_ids) for _ in range(min(chunk, n_boot - start))])
        weights = pair_multiplicities(identity_counts(draws, n_ids), idx1, idx2, issame).astype(np.float64)
        metrics_a = replicate_metrics(ranked_a, weights, fars)
        metrics_b = replicate_metrics(ranked_b, weights, fars)
        for name in metrics_a:
            parts.setdefault(name, []).append(metrics_b[name] - metrics_a[name])
    full_a = full_set_metrics(scores_a, issame, fars)
    full_b = full_set_metrics(scores_b, issame, fars)
    return [_comparison(name, full_a[name], full_b[name], np.concatenate(parts[name])) for name in full_a]
