"""FeatureBank: ring order, age expiry, self exclusion, duplicates, state round trip, detaching."""
from __future__ import annotations

import pytest
import torch

from common.errors import ConfigError
from stages.training.bank import FeatureBank


def _write(bank: FeatureBank, labels: list[int], rows: list[int], step: int, flips: list[int] | None = None,
           emb: torch.Tensor | None = None) -> torch.Tensor:
    if emb is None:
        emb = torch.nn.functional.normalize(torch.randn(len(labels), bank.dim), dim=1)
    flips = flips if flips is not None else [0] * len(labels)
    bank.update(torch.tensor(labels), torch.tensor(rows), torch.tensor(flips), emb, step)
    return emb


def _reference_update(bank: dict, labels, rows, flips, emb, step: int, slots: int) -> None:
    """Sequential one-image-at-a-time ring buffer, the behaviour the vectorised update must match."""
    for c, r, f, e in zip(labels.tolist(), rows.tolist(), flips.tolist(), emb, strict=True):
        s = bank["pointer"][c]
        bank["rows"][c, s] = r
        bank["flips"][c, s] = f
        bank["emb"][c, s] = e
        bank["steps"][c, s] = step
        bank["pointer"][c] = (s + 1) % slots


def test_ring_order_wraps_per_identity() -> None:
    bank = FeatureBank(num_classes=2, slots=3, dim=4, max_age=100)
    for step, row in enumerate([10, 11, 12, 13], start=1):
        _write(bank, [0], [row], step)
    assert bank.rows[0].tolist() == [13, 11, 12]
    assert bank.steps[0].tolist() == [4, 2, 3]
    assert bank.pointer.tolist() == [1, 0]
    assert bank.rows[1].tolist() == [-1, -1, -1]


def test_age_expiry_exactly_after_max_age() -> None:
    bank = FeatureBank(num_classes=1, slots=2, dim=4, max_age=10)
    _write(bank, [0], [3], step=5)
    anchor = (torch.tensor([0]), torch.tensor([99]))
    assert bank.gather(*anchor, step=15)[3].tolist() == [[True, False]]
    assert bank.gather(*anchor, step=16)[3].tolist() == [[False, False]]


def test_self_rows_excluded_whichever_flip() -> None:
    bank = FeatureBank(num_classes=1, slots=4, dim=4, max_age=100)
    _write(bank, [0, 0, 0], [7, 7, 8], step=1, flips=[0, 1, 0])
    emb, rows, flips, valid = bank.gather(torch.tensor([0]), torch.tensor([7]), step=2)
    assert rows.tolist() == [[7, 7, 8, -1]]
    assert flips.tolist() == [[0, 1, 0, 0]]
    assert valid.tolist() == [[False, False, True, False]]
    assert emb.shape == (1, 4, 4) and emb.dtype == torch.float32


def test_duplicates_in_one_batch_take_consecutive_slots() -> None:
    bank = FeatureBank(num_classes=3, slots=4, dim=2, max_age=100)
    _write(bank, [1, 1, 1], [0, 1, 2], step=1)
    _write(bank, [2, 1, 2, 1], [10, 11, 12, 13], step=2)
    assert bank.rows[1].tolist() == [13, 1, 2, 11]
    assert bank.rows[2].tolist() == [10, 12, -1, -1]
    assert bank.pointer.tolist() == [0, 1, 2]


def test_more_duplicates_than_slots_keep_the_last() -> None:
    bank = FeatureBank(num_classes=1, slots=2, dim=2, max_age=100)
    _write(bank, [0, 0, 0, 0, 0], [1, 2, 3, 4, 5], step=1)
    assert sorted(bank.rows[0].tolist()) == [4, 5]
    assert bank.rows[0].tolist() == [5, 4]
    assert bank.pointer.tolist() == [1]


def test_vectorised_update_matches_sequential_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    classes, slots, dim = 5, 3, 6
    bank = FeatureBank(classes, slots, dim, max_age=1000)
    ref = {"rows": torch.full((classes, slots), -1), "flips": torch.zeros((classes, slots), dtype=torch.int64),
           "emb": torch.zeros(classes, slots, dim), "steps": torch.full((classes, slots), -1),
           "pointer": [0] * classes}
    for step in range(20):
        batch = int(torch.randint(1, 12, (1,), generator=gen))
        labels = torch.randint(0, classes, (batch,), generator=gen)
        rows = torch.randint(0, 50, (batch,), generator=gen)
        flips = torch.randint(0, 2, (batch,), generator=gen)
        emb = torch.randn(batch, dim, generator=gen)
        bank.update(labels, rows, flips, emb, step)
        _reference_update(ref, labels, rows, flips, emb, step, slots)
    assert torch.equal(bank.rows, ref["rows"])
    assert torch.equal(bank.flips.long(), ref["flips"])
    assert torch.equal(bank.steps, ref["steps"])
    assert torch.equal(bank.emb, ref["emb"])
    assert bank.pointer.tolist() == ref["pointer"]


def test_gather_after_update_sees_new_entries() -> None:
    bank = FeatureBank(num_classes=3, slots=2, dim=4, max_age=5)
    anchors = (torch.tensor([2, 0]), torch.tensor([100, 101]))
    assert not bank.gather(*anchors, step=0)[3].any()
    emb = _write(bank, [2, 2], [4, 5], step=3, flips=[1, 0])
    out_emb, rows, flips, valid = bank.gather(*anchors, step=3)
    assert rows.tolist() == [[4, 5], [-1, -1]]
    assert flips.tolist() == [[1, 0], [0, 0]]
    assert valid.tolist() == [[True, True], [False, False]]
    assert torch.equal(out_emb[0], emb)


def test_state_round_trip_and_shape_mismatch() -> None:
    bank = FeatureBank(num_classes=4, slots=3, dim=5, max_age=50)
    _write(bank, [0, 1, 1, 3], [1, 2, 3, 4], step=7, flips=[1, 0, 1, 0])
    state = bank.state_dict()
    other = FeatureBank(num_classes=4, slots=3, dim=5, max_age=50)
    other.load_state_dict(state)
    query = (torch.tensor([0, 1, 3, 2]), torch.tensor([9, 2, 9, 9]))
    for a, b in zip(bank.gather(*query, step=8), other.gather(*query, step=8), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(other.pointer, bank.pointer)
    restored = other.state_dict()
    assert set(restored) == set(state)  # the whole state, slot ages (steps) included, not only what gather shows
    for key, value in state.items():
        assert torch.equal(restored[key], value) if isinstance(value, torch.Tensor) else restored[key] == value, key
    young = FeatureBank(num_classes=4, slots=3, dim=5, max_age=2)  # restored ages decide expiry after a resume
    young.load_state_dict(state)
    assert young.gather(*query, step=10)[3].sum() == 0 and young.gather(*query, step=9)[3].sum() > 0
    _write(other, [1], [6], step=9)
    assert bank.rows[1].tolist() == [2, 3, -1]
    with pytest.raises(ConfigError, match="icd.bank_size"):
        FeatureBank(num_classes=4, slots=2, dim=5, max_age=50).load_state_dict(state)


def test_embeddings_stored_detached() -> None:
    bank = FeatureBank(num_classes=1, slots=2, dim=3, max_age=10)
    live = torch.randn(1, 3, requires_grad=True)
    emb = live * 2.0
    bank.update(torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), emb, step=0)
    assert not bank.emb.requires_grad
    gathered = bank.gather(torch.tensor([0]), torch.tensor([5]), step=0)[0]
    assert not gathered.requires_grad and gathered.grad_fn is None
    with torch.no_grad():
        live.mul_(0.0)
    assert torch.allclose(gathered[0, 0], emb.detach()[0])


def test_float16_storage_and_memory_bytes() -> None:
    bank = FeatureBank(num_classes=10, slots=4, dim=8, max_age=10, dtype=torch.float16)
    assert bank.emb.dtype == torch.float16
    expected = 10 * 4 * 8 * 2 + 10 * 4 * (8 + 1 + 8) + 10 * 8
    assert bank.memory_bytes() == expected
    emb = _write(bank, [3], [1], step=0)
    assert torch.allclose(bank.gather(torch.tensor([3]), torch.tensor([0]), step=0)[0][0, 0], emb[0], atol=1e-3)


def test_bad_sizes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="icd.bank_size"):
        FeatureBank(num_classes=2, slots=0, dim=4, max_age=1)
    with pytest.raises(ConfigError, match="icd.max_age"):
        FeatureBank(num_classes=2, slots=2, dim=4, max_age=-1)


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float16, 1e-3), (torch.bfloat16, 8e-3)])
def test_half_storage_and_host_place_match_float32(dtype: torch.dtype, atol: float) -> None:
    torch.manual_seed(0)
    banks = [FeatureBank(num_classes=6, slots=3, dim=16, max_age=5),
             FeatureBank(num_classes=6, slots=3, dim=16, max_age=5, dtype=dtype, place="host")]
    for step in range(4):
        labels = torch.randint(0, 6, (8,))
        rows = torch.randint(0, 40, (8,))
        emb = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
        for bank in banks:
            bank.update(labels, rows, torch.zeros(8, dtype=torch.long), emb, step)
    query = (torch.arange(6), torch.full((6,), -1), 4)
    (e32, r32, f32, v32), (eh, rh, fh, vh) = (bank.gather(*query) for bank in banks)
    assert eh.dtype == torch.float32 and eh.device == e32.device
    assert torch.equal(r32, rh) and torch.equal(f32, fh) and torch.equal(v32, vh)
    assert torch.allclose(eh, e32, atol=atol) and not torch.equal(eh, e32)
    assert banks[1].memory_bytes() - 6 * 3 * 16 * 2 == banks[0].memory_bytes() - 6 * 3 * 16 * 4


def test_unknown_place_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="icd.bank_place"):
        FeatureBank(num_classes=2, slots=2, dim=4, max_age=1, place="gpu")
