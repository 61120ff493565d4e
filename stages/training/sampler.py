"""Identity batch sampler: P identities x M images per batch, an anchor's table positives first.

ICD-Face (Yu et al., ICCV 2023), section 1 of DESIGN.md: in-batch positive pairs for the SDC term
need several images of each identity in a batch; the sampler fills an anchor's group from a table of
preferred same-identity rows, which `train.positive_policy` chooses (`stages.training.policy`): the
stage-1 teacher positives (`nearest`), the anchor's least similar rows (`farthest`), or none
(`random`: the identity's rows in shuffled order).

Epoch plan (built up front, deterministic from (seed, epoch)):
1. Per identity, its rows are shuffled; the first unvisited row becomes an anchor and its group is
   filled with, in order: the anchor's unvisited table positives (table order, -1 skipped), other
   unvisited rows of the identity (shuffled order), then, once the identity runs out of unvisited
   rows, the anchor's visited positives, other visited rows, and finally repeats of the group when
   the identity has fewer than M rows. Every row used is marked visited, so an identity with n rows
   yields exactly ceil(n / M) groups and every row is visited once per epoch.
2. All groups are shuffled and dealt P to a batch, deferring a group whose identity is already in
   the batch (accepted only when nothing else is left), so every batch but the last has P groups.
3. A short last batch is completed with groups of extra identities (`drop_last=True`, so every batch
   has `batch_size` rows and no row is dropped) or left short (`drop_last=False`).
4. The rows after the P x M group rows (`batch_size - P * M`, with P = (batch_size -
   round(random_share * batch_size)) // M) are uniform random rows not already in the batch.

`random_share = 1.0` plans random batches instead (P = 0, no identity groups): each epoch is a
permutation of all rows dealt `batch_size` to a batch, the short last batch completed with other
random rows (`drop_last=True`) or left short. Their positive pairs come from the feature bank only
(`icd.pairs = "bank"`).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, overload

import numpy as np
import torch

from cache.identity import identity_csr
from common.errors import ConfigError


def _as_numpy(values: Any, dtype: type) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


class BatchPlan:
    """An epoch's batches as numpy arrays: batch i is `rows[offsets[i]:offsets[i + 1]]` (int64 views).

    One flat array instead of Python lists: 8 bytes a row (MS1MV2's 5.8M rows: 46 MB, not ~400 MB of
    Python integers and lists).
    """

    def __init__(self, rows: np.ndarray, offsets: np.ndarray) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.int64)

    @classmethod
    def from_batches(cls, batches: list[list[int]] | list[np.ndarray]) -> BatchPlan:
        sizes = np.array([len(b) for b in batches], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        rows = np.concatenate([np.asarray(b, dtype=np.int64) for b in batches]) if batches else np.zeros(0, np.int64)
        return cls(rows, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, i: slice) -> list[np.ndarray]: ...

    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        if not -len(self) <= i < len(self):
            raise IndexError(f"batch {i} of a plan of {len(self)}")
        i %= len(self)
        return self.rows[self.offsets[i]:self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, BatchPlan) and np.array_equal(self.rows, other.rows)
                and np.array_equal(self.offsets, other.offsets))

    __hash__ = None  # type: ignore[assignment]


class IdentityBatchSampler:
    """Plans the batches of an epoch (`epoch_plan`, a `BatchPlan`), a pure function of (seed, epoch).

    The training loop resumes by asking for the plan of the checkpoint's epoch and skipping the
    batches already done, so the sampler itself holds no position.
    """

    def __init__(
        self,
        labels: np.ndarray | torch.Tensor,
        positives: np.ndarray | torch.Tensor | None,
        batch_size: int,
        images_per_identity: int,
        random_share: float = 0.0,
        seed: int = 0,
        drop_last: bool = True,
        num_classes: int | None = None,
    ) -> None:
        self.labels = _as_numpy(labels, np.int64).reshape(-1)
        self.batch_size = int(batch_size)
        self.m = int(images_per_identity)
        self.random_share = float(random_share)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self._check_sizes()
        self.num_classes = self._check_labels(num_classes)
        self.positives = self._check_positives(positives)
        n_random = int(round(self.random_share * self.batch_size))
        self.p = (self.batch_size - n_random) // self.m
        if self.p < 2 and n_random < self.batch_size:
            raise ConfigError(
                f"train.random_share = {self.random_share} leaves room for {self.p} identity group(s) of "
                f"train.images_per_identity = {self.m} in train.batch_size = {self.batch_size}; need 2 "
                "(or train.random_share = 1.0 for random batches)")
        self.n_random = self.batch_size - self.p * self.m
        self._identity_rows, self._offsets = identity_csr(self.labels, self.num_classes)
        counts = np.diff(self._offsets)
        self.num_groups = int(np.sum((counts + self.m - 1) // self.m)) if self.p else 0
        self._plan_epoch: int | None = None
        self._plan = BatchPlan(np.zeros(0, np.int64), np.zeros(1, np.int64))

    def _check_sizes(self) -> None:
        if self.m < 2:
            raise ConfigError(f"train.images_per_identity must be >= 2 (pairs need two images), got {self.m}")
        if self.batch_size < 2 * self.m and self.random_share < 1.0:
            raise ConfigError(
                f"train.batch_size = {self.batch_size} must be >= 2 * train.images_per_identity = "
                f"{2 * self.m} (at least 2 identities per batch)")
        if not 0.0 <= self.random_share <= 1.0:
            raise ConfigError(f"train.random_share must be in [0, 1], got {self.random_share}")
        if self.labels.size == 0:
            raise ConfigError("identity sampler: no rows to sample")

    def _check_labels(self, num_classes: int | None) -> int:
        labels = self.labels
        if labels.min() < 0:
            row = int(np.argmax(labels < 0))
            raise ConfigError(f"identity sampler: row {row} has label {labels[row]}, labels must be >= 0")
        classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
        if labels.max() >= classes:
            row = int(np.argmax(labels >= classes))
            raise ConfigError(
                f"identity sampler: row {row} has label {labels[row]}, out of range for {classes} identities")
        counts = np.bincount(labels, minlength=classes)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise ConfigError(
                f"identity sampler: identity {int(empty[0])} has no rows ({empty.size} empty identities "
                f"of {classes})")
        if classes < 2:
            raise ConfigError("identity sampler: the labels hold 1 identity; batches need at least 2")
        return classes

    def _check_positives(self, positives: Any) -> np.ndarray | None:
        if positives is None:
            return None
        pos = _as_numpy(positives, np.int64)
        n = self.labels.size
        if pos.ndim != 2 or pos.shape[0] != n:
            raise ConfigError(f"identity sampler: positives has shape {pos.shape}, expected [{n}, K]")
        bad = (pos < -1) | (pos >= n)
        if bad.any():
            row = int(np.argmax(bad.any(axis=1)))
            raise ConfigError(f"identity sampler: positives of row {row} hold an index outside [-1, {n})")
        other = (pos >= 0) & (self.labels[np.maximum(pos, 0)] != self.labels[:, None])
        if other.any():
            row = int(np.argmax(other.any(axis=1)))
            raise ConfigError(
                f"identity sampler: positives of row {row} name a row of another identity; the positives "
                f"table does not match these labels")
        return pos

    def __len__(self) -> int:
        """Batches per epoch (the same for every epoch)."""
        if self.p == 0:
            return math.ceil(self.labels.size / self.batch_size)
        return math.ceil(self.num_groups / self.p)

    def epoch_plan(self, epoch: int) -> BatchPlan:
        """All batches of `epoch` (cached for the last epoch asked)."""
        if self._plan_epoch != epoch:
            self._plan = self._build_plan(epoch)
            self._plan_epoch = epoch
        return self._plan

    def _build_plan(self, epoch: int) -> BatchPlan:
        rng = np.random.default_rng([self.seed, epoch])
        if self.p == 0:
            return self._random_plan(rng)
        keys = rng.random(self.labels.size)
        shuffled = np.lexsort((keys, self.labels))
        groups: list[list[int]] = []
        group_ids: list[int] = []
        for c in range(self.num_classes):
            rows_c = shuffled[self._offsets[c]:self._offsets[c + 1]].tolist()
            for group in self._identity_groups(rows_c):
                groups.append(group)
                group_ids.append(c)
        batches = self._deal(rng.permutation(len(groups)).tolist(), group_ids)
        if len(batches[-1]) < self.p and self.drop_last:
            self._pad(batches[-1], groups, group_ids, rng)
        plan = []
        for batch in batches:
            rows = [row for g in batch for row in groups[g]]
            plan.append(rows + self._random_rows(rows, rng, self.n_random))
        return BatchPlan.from_batches(plan)

    def _random_plan(self, rng: np.random.Generator) -> BatchPlan:
        """Random batches: a permutation of all rows, `batch_size` to a batch (see the module docstring)."""
        n = self.labels.size
        order = rng.permutation(n)
        offsets = np.arange(0, n + self.batch_size, self.batch_size).clip(max=n)
        offsets = offsets[np.concatenate([[True], np.diff(offsets) > 0])]
        short = int(offsets[-1] - offsets[-2])
        if short < self.batch_size and self.drop_last:
            last = order[offsets[-2]:].tolist()
            order = np.concatenate([order, self._random_rows(last, rng, self.batch_size - short)])
            offsets[-1] = len(order)
        return BatchPlan(order, offsets)

    def _identity_groups(self, rows_c: list[int]) -> list[list[int]]:
        """Groups of M rows of one identity from its shuffled rows (see the module docstring)."""
        m = self.m
        visited: set[int] = set()
        groups = []
        cursor = 0
        for anchor in rows_c:
            if anchor in visited:
                continue
            group = [anchor]
            visited.add(anchor)
            if self.positives is not None:
                for p in self.positives[anchor].tolist():
                    if len(group) == m:
                        break
                    if p >= 0 and p not in visited:
                        group.append(p)
                        visited.add(p)
            while len(group) < m and cursor < len(rows_c):
                row = rows_c[cursor]
                cursor += 1
                if row not in visited:
                    group.append(row)
                    visited.add(row)
            if len(group) < m:
                self._complete(group, rows_c)
            groups.append(group)
        return groups

    def _complete(self, group: list[int], rows_c: list[int]) -> None:
        """Fill a group with already visited rows: anchor positives, other rows, then repeats."""
        members = set(group)
        candidates = [] if self.positives is None else [p for p in self.positives[group[0]].tolist() if p >= 0]
        for row in candidates + rows_c:
            if len(group) == self.m:
                return
            if row not in members:
                group.append(row)
                members.add(row)
        base = len(group)
        while len(group) < self.m:
            group.append(group[len(group) % base])

    def _deal(self, order: list[int], group_ids: list[int]) -> list[list[int]]:
        """Deal shuffled groups P to a batch, deferring groups whose identity is already present."""
        batches: list[list[int]] = []
        carry: list[int] = []
        i = 0
        while i < len(order) or carry:
            batch: list[int] = []
            present: set[int] = set()
            deferred: list[int] = []
            for g in carry:
                if len(batch) < self.p and group_ids[g] not in present:
                    batch.append(g)
                    present.add(group_ids[g])
                else:
                    deferred.append(g)
            while len(batch) < self.p and i < len(order):
                g = order[i]
                i += 1
                if group_ids[g] in present:
                    deferred.append(g)
                else:
                    batch.append(g)
                    present.add(group_ids[g])
            while len(batch) < self.p and i >= len(order) and deferred:
                batch.append(deferred.pop(0))
            carry = deferred
            batches.append(batch)
        return batches

    def _pad(self, batch: list[int], groups: list[list[int]], group_ids: list[int],
             rng: np.random.Generator) -> None:
        """Complete a short last batch with one new group from each of some extra identities."""
        present = {group_ids[g] for g in batch}
        free = np.setdiff1d(np.arange(self.num_classes), np.fromiter(present, np.int64))
        need = self.p - len(batch)
        chosen = rng.permutation(free)[:need] if free.size else np.empty(0, np.int64)
        if chosen.size < need:
            chosen = np.concatenate([chosen, rng.integers(0, self.num_classes, need - chosen.size)])
        for c in chosen.tolist():
            rows_c = self._identity_rows[self._offsets[c]:self._offsets[c + 1]]
            rows_c = rows_c[rng.permutation(rows_c.size)].tolist()
            group = [rows_c[0]]
            self._complete(group, rows_c)
            batch.append(len(groups))
            groups.append(group)
            group_ids.append(c)

    def _random_rows(self, rows: list[int], rng: np.random.Generator, need: int) -> list[int]:
        """`need` uniform rows, avoiding rows already in the batch when the data allow it."""
        if need == 0:
            return []
        n = self.labels.size
        taken = set(rows)
        if n - len(taken) < need:
            return rng.integers(0, n, need).tolist()
        picked: list[int] = []
        while len(picked) < need:
            for row in rng.integers(0, n, 2 * need).tolist():
                if len(picked) < need and row not in taken:
                    picked.append(row)
                    taken.add(row)
        return picked
