"""`evaluation.make_sets`: identity split, genuine/impostor pairs, folds and templates against brute force."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from evaluation.make_sets import (
    AUTO_IMPOSTORS,
    auto_impostor_count,
    count_impostor_pairs,
    fold_order,
    genuine_pairs,
    landmark_line,
    lfw_pair_lines,
    make_templates,
    sample_impostor_pairs,
    search_lists,
    split_identities,
)


def _labels(counts: list[int], seed: int = 0) -> np.ndarray:
    """Items of identities 0..len(counts)-1 with the given image counts, in a shuffled order."""
    labels = np.repeat(np.arange(len(counts)), counts)
    return labels[np.random.default_rng(seed).permutation(len(labels))]


def _brute(labels: np.ndarray, same: bool) -> set[tuple[int, int]]:
    return {(i, j) for i, j in itertools.combinations(range(len(labels)), 2) if (labels[i] == labels[j]) == same}


def test_split_is_identity_disjoint_and_singletons_train() -> None:
    labels = _labels([1, 1, 1, 5, 4, 3, 2, 6, 2, 3, 4, 1, 2, 2, 7, 3, 2, 4, 5, 1])
    parts = split_identities(labels, 0.25, seed=3)
    assert len(parts.heldout_ids) == 5
    assert not set(parts.train_ids) & set(parts.heldout_ids)
    assert set(parts.train_ids) | set(parts.heldout_ids) == set(range(20))
    counts = np.bincount(labels)
    assert all(counts[c] >= 2 for c in parts.heldout_ids)
    assert set(np.flatnonzero(counts == 1)) <= set(parts.train_ids)
    assert sorted(parts.train_rows.tolist() + parts.heldout_rows.tolist()) == list(range(len(labels)))
    assert set(labels[parts.heldout_rows]) == set(parts.heldout_ids)
    assert set(labels[parts.train_rows]) == set(parts.train_ids)


def test_split_holds_out_at_most_the_eligible_identities() -> None:
    labels = _labels([1, 1, 1, 1, 1, 1, 1, 3, 2])
    parts = split_identities(labels, 0.9, seed=0)
    assert sorted(parts.heldout_ids.tolist()) == [7, 8]


def test_split_depends_on_the_seed_only() -> None:
    labels = _labels([3] * 50)
    a, b = split_identities(labels, 0.2, 7), split_identities(labels, 0.2, 7)
    assert np.array_equal(a.heldout_ids, b.heldout_ids) and np.array_equal(a.train_rows, b.train_rows)
    others = {tuple(split_identities(labels, 0.2, s).heldout_ids.tolist()) for s in range(5)}
    assert len(others) > 1


def test_every_genuine_pair_exactly_once() -> None:
    labels = _labels([4, 1, 6, 2, 3])
    pairs = genuine_pairs(labels)
    as_tuples = [tuple(p) for p in pairs.tolist()]
    assert len(as_tuples) == len(set(as_tuples))
    assert all(i < j for i, j in as_tuples)
    assert set(as_tuples) == _brute(labels, same=True)


@pytest.mark.parametrize("count", [5, 30, 10_000])  # rejection sampling, enumeration, more than exist
def test_impostor_pairs_distinct_different_identities(count: int) -> None:
    labels = _labels([4, 1, 6, 2, 3])
    pairs = sample_impostor_pairs(labels, count, seed=1)
    every = _brute(labels, same=False)
    assert count_impostor_pairs(labels) == len(every)
    as_tuples = [tuple(p) for p in pairs.tolist()]
    assert len(as_tuples) == min(count, len(every)) == len(set(as_tuples))
    assert set(as_tuples) <= every
    assert all(labels[i] != labels[j] and i < j for i, j in as_tuples)
    assert np.array_equal(pairs, sample_impostor_pairs(labels, count, seed=1))


def test_impostor_sampling_covers_all_pairs_over_seeds() -> None:
    labels = _labels([5, 5, 5, 5])
    seen = {tuple(p) for s in range(200) for p in sample_impostor_pairs(labels, 10, seed=s).tolist()}
    assert seen == _brute(labels, same=False)  # 150 pairs: no part of the space left out


def test_auto_impostor_count() -> None:
    assert auto_impostor_count(10, 10**9) == AUTO_IMPOSTORS
    assert auto_impostor_count(3 * AUTO_IMPOSTORS, 10**9) == 3 * AUTO_IMPOSTORS
    assert auto_impostor_count(10, 500) == 500


def test_folds_hold_every_pair_once_and_both_kinds_in_each_fold() -> None:
    labels = _labels([6, 5, 4, 7])
    gen = genuine_pairs(labels)
    imp = sample_impostor_pairs(labels, 40, seed=0)
    order = fold_order(gen, imp, seed=0)
    assert sorted((a, b) for a, b, s in order if s) == sorted(map(tuple, gen.tolist()))
    assert sorted((a, b) for a, b, s in order if not s) == sorted(map(tuple, imp.tolist()))
    for fold in np.array_split(np.array([s for _, _, s in order]), 10):  # the protocol's contiguous folds
        assert 0 < fold.sum() < len(fold)


def test_lfw_lines() -> None:
    lines = lfw_pair_lines([(0, 1, True), (1, 2, False)], ["a", "a", "b"], [1, 2, 1])
    assert lines == ["10", "a\t1\t2", "a\t2\tb\t1"]


@pytest.mark.parametrize("size", [1, 3, 4])
def test_templates_group_one_identity_each(size: int) -> None:
    counts = [7, 2, 3, 9, 6]
    labels = _labels(counts)
    template_of, template_labels = make_templates(labels, size, seed=0)
    assert (template_of >= 0).all()
    assert sorted(set(template_of.tolist())) == list(range(len(template_labels)))
    for t, label in enumerate(template_labels.tolist()):
        members = labels[template_of == t]
        assert set(members.tolist()) == {label}
        assert len(members) >= min(size, counts[label])
    per_identity = np.bincount(template_labels, minlength=len(counts))
    assert per_identity.tolist() == [max(1, n // size) for n in counts]
    again = make_templates(labels, size, seed=0)
    assert np.array_equal(again[0], template_of)


def test_landmark_line_has_twelve_fields() -> None:
    fields = landmark_line("x.png", np.arange(10.0).reshape(5, 2)).split()
    assert fields[0] == "x.png" and len(fields) == 12 and float(fields[-1]) == 1.0
    assert [float(v) for v in fields[1:11]] == list(range(10))


def test_search_lists_enrol_each_identity_once_and_probe_with_the_rest() -> None:
    template_labels = np.repeat([7, 3, 9, 4, 5], [3, 1, 2, 4, 2])[np.random.default_rng(2).permutation(12)]
    lists = search_lists(template_labels, seed=1)
    enrolled = np.r_[lists.gallery1, lists.gallery2]
    assert sorted(template_labels[enrolled].tolist()) == [3, 4, 5, 7, 9]  # each identity once
    assert (len(lists.gallery1), len(lists.gallery2)) == (3, 2)  # the first half, rounded up, in G1
    for t in enrolled.tolist():  # the identity's first template
        assert t == min(k for k in range(12) if template_labels[k] == template_labels[t])
    assert sorted(np.r_[enrolled, lists.probes].tolist()) == list(range(12))
    assert len(lists.probes) == 12 - 5 and all(np.diff(lists.probes) > 0)
    again = search_lists(template_labels, seed=1)
    assert np.array_equal(again.gallery1, lists.gallery1) and np.array_equal(again.probes, lists.probes)
    others = {tuple(template_labels[search_lists(template_labels, seed=s).gallery1].tolist()) for s in range(8)}
    assert len(others) > 1  # the seed deals the identities
