"""IdentityBatchSampler: P x M structure, positives first, coverage, determinism, resume, errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from common.errors import ConfigError
from stages.training.batches import rank_positions
from stages.training.sampler import IdentityBatchSampler


def _labels(sizes: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)


def _cluster_positives(labels: np.ndarray, cluster: int) -> np.ndarray:
    """Rows of each identity split into consecutive clusters; a row's positives are its cluster mates."""
    pos = np.full((labels.size, cluster - 1), -1, dtype=np.int64)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        for start in range(0, rows.size, cluster):
            members = rows[start:start + cluster]
            for r in members:
                mates = [m for m in members if m != r]
                pos[r, :len(mates)] = mates[::-1]
    return pos


def _groups(batch: np.ndarray, sampler: IdentityBatchSampler) -> list[list[int]]:
    body = batch[:sampler.p * sampler.m].tolist()
    return [body[i:i + sampler.m] for i in range(0, len(body), sampler.m)]


def test_p_by_m_structure() -> None:
    labels = _labels([5, 7, 4, 9, 6, 8, 3, 10, 5, 6])
    sampler = IdentityBatchSampler(labels, None, batch_size=14, images_per_identity=4, seed=3)
    assert (sampler.p, sampler.n_random) == (3, 2)
    batches = sampler.epoch_plan(0)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        assert len(batch) == 14
        groups = _groups(batch, sampler)
        assert len(groups) == 3
        ids = [set(labels[g].tolist()) for g in groups]
        assert all(len(s) == 1 for s in ids)
        assert len({next(iter(s)) for s in ids}) == 3
        assert all(len(set(g)) == min(4, int((labels == labels[g[0]]).sum())) for g in groups)


def test_teacher_positives_come_first() -> None:
    labels = _labels([8] * 6)
    pos = _cluster_positives(labels, cluster=4)
    sampler = IdentityBatchSampler(labels, pos, batch_size=8, images_per_identity=4, seed=0)
    for batch in sampler.epoch_plan(0):
        for group in _groups(batch, sampler):
            anchor = group[0]
            assert group[1:] == pos[anchor].tolist()
    no_pos = IdentityBatchSampler(labels, None, batch_size=8, images_per_identity=4, seed=0)
    clustered = sum(
        sorted(g[1:]) == sorted(pos[g[0]].tolist()) for b in no_pos.epoch_plan(0) for g in _groups(b, no_pos))
    assert clustered < no_pos.num_groups


def test_epoch_visits_every_row_and_length() -> None:
    sizes = [1, 2, 3, 5, 8, 13, 4, 4, 7, 2, 9]
    labels = _labels(sizes)
    pos = _cluster_positives(labels, cluster=3)
    pos[::4] = -1
    sampler = IdentityBatchSampler(labels, pos, batch_size=9, images_per_identity=3, seed=11)
    groups = sum(math.ceil(n / 3) for n in sizes)
    assert len(sampler) == math.ceil(groups / 3)
    for epoch in range(3):
        batches = sampler.epoch_plan(epoch)
        assert len(batches) == len(sampler)
        seen = {r for b in batches for g in _groups(b, sampler) for r in g}
        assert seen == set(range(labels.size)), epoch


def test_small_identities_repeat_rows_only_when_needed() -> None:
    labels = _labels([1, 2, 6, 6])
    sampler = IdentityBatchSampler(labels, None, batch_size=8, images_per_identity=4, seed=0)
    for batch in sampler.epoch_plan(0):
        for group in _groups(batch, sampler):
            c = labels[group[0]]
            n_c = int((labels == c).sum())
            assert len(set(group)) == min(4, n_c)


def test_determinism_from_seed_and_epoch() -> None:
    labels = _labels([6, 5, 7, 4, 8, 3, 6])
    make = lambda seed: IdentityBatchSampler(labels, None, 8, 2, random_share=0.25, seed=seed)  # noqa: E731
    a, b, c = make(5), make(5), make(6)
    first_a, first_b, first_c = a.epoch_plan(0), b.epoch_plan(0), c.epoch_plan(0)
    assert first_a == first_b
    assert first_a != first_c
    second_a = a.epoch_plan(1)
    assert second_a != first_a
    assert b.epoch_plan(1) == second_a
    assert a.epoch_plan(0) == first_b  # asking again (after another epoch) gives the same plan


def test_random_share_rows() -> None:
    labels = _labels([10] * 12)
    sampler = IdentityBatchSampler(labels, None, batch_size=16, images_per_identity=4, random_share=0.25, seed=1)
    assert (sampler.p, sampler.n_random) == (3, 4)
    extra = []
    for batch in sampler.epoch_plan(0):
        group_rows = batch[:12]
        tail = batch[12:]
        assert len(tail) == 4
        assert not set(tail) & set(group_rows)
        assert len(set(tail)) == 4
        extra.extend(tail)
    assert len(set(extra)) > 10
    odd = IdentityBatchSampler(labels, None, batch_size=10, images_per_identity=4, seed=1)
    assert (odd.p, odd.n_random) == (2, 2)
    assert all(len(b) == 10 for b in odd.epoch_plan(0))


def test_drop_last_false_leaves_short_last_batch() -> None:
    labels = _labels([4] * 5)
    padded = IdentityBatchSampler(labels, None, batch_size=8, images_per_identity=4, seed=0)
    short = IdentityBatchSampler(labels, None, batch_size=8, images_per_identity=4, seed=0, drop_last=False)
    assert len(padded) == len(short) == 3
    assert [len(b) for b in padded.epoch_plan(0)] == [8, 8, 8]
    assert [len(b) for b in short.epoch_plan(0)] == [8, 8, 4]


def test_errors_name_the_key_or_identity() -> None:
    labels = _labels([4, 4, 4])
    with pytest.raises(ConfigError, match="train.batch_size"):
        IdentityBatchSampler(labels, None, batch_size=7, images_per_identity=4, seed=0)
    with pytest.raises(ConfigError, match="train.images_per_identity"):
        IdentityBatchSampler(labels, None, batch_size=8, images_per_identity=1, seed=0)
    with pytest.raises(ConfigError, match="identity 1"):
        IdentityBatchSampler(np.array([0, 0, 2, 2]), None, batch_size=4, images_per_identity=2, seed=0)
    with pytest.raises(ConfigError, match="row 2 has label -1"):
        IdentityBatchSampler(np.array([0, 1, -1, 1]), None, batch_size=4, images_per_identity=2, seed=0)
    with pytest.raises(ConfigError, match="row 3 has label 5"):
        IdentityBatchSampler(np.array([0, 1, 1, 5]), None, 4, 2, seed=0, num_classes=3)
    with pytest.raises(ConfigError, match="train.random_share"):
        IdentityBatchSampler(labels, None, batch_size=8, images_per_identity=2, random_share=0.9, seed=0)
    bad_pos = np.array([[4], [-1], [-1], [-1], [-1], [-1], [-1], [-1], [-1], [-1], [-1], [-1]])
    with pytest.raises(ConfigError, match="row 0"):
        IdentityBatchSampler(labels, bad_pos, batch_size=8, images_per_identity=2, seed=0)


def test_random_share_one_plans_random_batches() -> None:
    labels = _labels([1, 2, 6, 5, 7, 4])  # 25 rows
    sampler = IdentityBatchSampler(labels, None, batch_size=8, images_per_identity=4, random_share=1.0, seed=2)
    assert (sampler.p, sampler.n_random, len(sampler)) == (0, 8, 4)
    plans = [sampler.epoch_plan(e) for e in range(2)]
    for batches in plans:
        assert [len(b) for b in batches] == [8, 8, 8, 8]
        assert all(len(set(b)) == 8 for b in batches)  # the padded last batch repeats no row either
        assert set().union(*batches[:3], batches[3][:1]) == set(range(25))  # a permutation, then padding
    assert plans[0] != plans[1]
    short = IdentityBatchSampler(labels, None, batch_size=8, images_per_identity=4, random_share=1.0, seed=2,
                                 drop_last=False)
    assert [len(b) for b in short.epoch_plan(0)] == [8, 8, 8, 1]
    tiny = IdentityBatchSampler(labels, None, batch_size=4, images_per_identity=4, random_share=1.0, seed=0)
    assert tiny.p == 0 and len(tiny) == 7  # no room for 2 groups is fine when there are none


def test_epoch_plan_is_one_numpy_array_of_batches() -> None:
    from stages.training.sampler import BatchPlan

    sampler = IdentityBatchSampler(_labels([3] * 10), None, batch_size=8, images_per_identity=2, random_share=1.0)
    plan = sampler.epoch_plan(0)
    assert isinstance(plan, BatchPlan) and plan.rows.dtype == np.int64 and len(plan) == 4
    assert [len(b) for b in plan] == [8, 8, 8, 8] and np.array_equal(plan[-1], plan[3])
    assert np.shares_memory(plan[1], plan.rows)  # batches are views, not copies
    assert plan == BatchPlan.from_batches([b.tolist() for b in plan]) and plan != sampler.epoch_plan(1)
    with pytest.raises(IndexError):
        plan[4]


def test_two_ranks_take_whole_groups_and_visit_every_row_each_epoch() -> None:
    labels = _labels([4, 6, 3, 8, 5, 4, 7, 2, 6, 3])
    sampler = IdentityBatchSampler(labels, None, batch_size=8, images_per_identity=2, seed=3)
    for epoch in range(2):
        plan = sampler.epoch_plan(epoch)
        taken = [p for rank in (0, 1) for p in rank_positions(len(plan), 0, 2, rank)]
        wrapped = len(taken) - len(plan)  # the last step's second rank repeats batch 0 when the count is odd
        assert sorted(taken) == sorted([*range(len(plan)), *range(wrapped)]) and wrapped == len(plan) % 2
        seen = set()
        for position in taken:
            for group in _groups(plan[position], sampler):
                assert len(set(labels[group].tolist())) == 1  # a rank gets whole P x M groups
                seen |= set(group)
        assert seen == set(range(labels.size)), epoch
