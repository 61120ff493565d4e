"""`losses.partial_fc` and MarginHead's `sample_rate` (Partial FC) against the plain head and naive references."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losses import MarginHead
from losses.partial_fc import remap_labels, sample_centres, sample_size


def test_sample_size_is_arcface_torchs_int_of_rate_times_classes():
    assert sample_size(1000, 0.1) == 100
    assert sample_size(360232, 0.1) == 36023
    assert sample_size(7, 0.1) == 1  # never 0
    assert sample_size(50, 1.0) == 50
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            sample_size(10, bad)


def test_sampled_set_holds_the_batch_classes_and_has_the_stated_size():
    torch.manual_seed(0)
    for _ in range(50):
        labels = torch.randint(0, 500, (64,))
        index = sample_centres(labels, 500, 120)
        assert index.numel() == 120
        assert torch.equal(index, index.sort().values) and index.unique().numel() == 120
        assert set(labels.tolist()) <= set(index.tolist())
        assert torch.equal(index[remap_labels(labels, index)], labels)


def test_more_batch_classes_than_the_sample_keeps_exactly_the_batch_classes():
    labels = torch.tensor([9, 3, 3, 7, 1, 0])
    assert sample_centres(labels, 20, 2).tolist() == [0, 1, 3, 7, 9]


def test_the_other_classes_are_drawn_uniformly():
    """Each non-batch class is drawn with probability (K - P) / (C - P); the batch's classes always."""
    torch.manual_seed(1)
    classes, k, trials = 40, 12, 4000
    labels = torch.tensor([0, 1, 2, 3])
    counts = torch.zeros(classes)
    for _ in range(trials):
        counts[sample_centres(labels, classes, k)] += 1
    assert torch.all(counts[:4] == trials)
    p = (k - 4) / (classes - 4)
    sd = math.sqrt(trials * p * (1 - p))
    assert torch.all((counts[4:] - trials * p).abs() < 5 * sd), counts


def _heads(rate: float, classes: int = 16, dim: int = 8) -> tuple[MarginHead, MarginHead]:
    torch.manual_seed(3)
    full = MarginHead(dim, classes, "arcface", 32.0, 0.5)
    sampled = MarginHead(dim, classes, "arcface", 32.0, 0.5, sample_rate=rate)
    sampled.load_state_dict(full.state_dict())
    return full, sampled


def test_sampling_every_class_equals_the_plain_head_loss_and_gradients():
    """A batch holding all C classes keeps them all: the sampled path (index, remap, gather) equals the full head."""
    full, sampled = _heads(0.25)
    labels = torch.arange(16).repeat(2)
    x = torch.randn(32, 8)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    la, lb = full(xa, labels), sampled(xb, labels)
    la.backward()
    lb.backward()
    assert sampled.last_index is not None and sampled.last_index.numel() == 16
    assert abs(la.item() - lb.item()) < 1e-6
    assert torch.allclose(xa.grad, xb.grad, atol=1e-6)
    assert torch.allclose(full.weight.grad, sampled.weight.grad, atol=1e-6)


def test_rate_one_is_the_plain_head():
    full, same = _heads(1.0)
    labels = torch.randint(0, 16, (10,))
    x = torch.randn(10, 8)
    assert torch.equal(full(x, labels), same(x, labels))


def test_sampled_loss_is_the_margin_softmax_over_the_sampled_centres_only():
    """Naive reference: per sample, cross-entropy over the sampled columns with the margin at its own class;
    rows never sampled get no gradient."""
    torch.manual_seed(4)
    head = MarginHead(8, 100, "arcface", 32.0, 0.5, sample_rate=0.1)
    labels = torch.tensor([5, 17, 17, 60, 99, 5])
    x = torch.randn(6, 8)
    loss = head(x, labels)
    loss.backward()
    index = head.last_index
    assert index is not None and index.numel() == 10
    w = F.normalize(head.weight.detach(), dim=1)
    e = F.normalize(x, dim=1)
    total = 0.0
    for i, y in enumerate(labels.tolist()):
        logits = []
        for c in index.tolist():
            cos = float(e[i] @ w[c])
            logits.append(32.0 * (math.cos(math.acos(cos) + 0.5) if c == y else cos))
        m = max(logits)
        lse = m + math.log(sum(math.exp(v - m) for v in logits))
        total += lse - logits[index.tolist().index(y)]
    assert abs(loss.item() - total / len(labels)) < 1e-4
    untouched = torch.ones(100, dtype=torch.bool)
    untouched[index] = False
    assert torch.all(head.weight.grad[untouched] == 0)
    assert torch.all(head.weight.grad[index].abs().sum(1) > 0)


def test_sgd_decays_and_moves_untouched_rows_as_arcface_torch_does():
    """The documented optimiser behaviour: one dense parameter in SGD, so an unsampled row is decayed and moved
    by its momentum buffer (arcface_torch v2's train_v2 SGD), and never by a gradient."""
    torch.manual_seed(5)
    head = MarginHead(4, 50, "arcface", 32.0, 0.5, sample_rate=0.1)
    opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    labels = torch.tensor([1, 2])
    head(torch.randn(2, 4), labels).backward()
    first = head.last_index
    before = head.weight.detach().clone()
    opt.step()
    opt.zero_grad()
    assert first is not None
    out = torch.ones(50, dtype=torch.bool)
    out[first] = False
    row = int(out.nonzero()[0])
    # step 1: buf = wd * w, w -= lr * buf
    assert torch.allclose(head.weight[row], before[row] * (1 - 0.1 * 0.01), atol=1e-7)
    mid = head.weight.detach().clone()
    head(torch.randn(2, 4), labels).backward()
    if row not in head.last_index.tolist():  # step 2 (row unsampled again): buf = 0.9 buf + wd * w
        buf = 0.9 * 0.01 * before[row] + 0.01 * mid[row]
        opt.step()
        assert torch.allclose(head.weight[row], mid[row] - 0.1 * buf, atol=1e-7)


def _sharded_worker(rank: int, world: int, init: str, out: str, rate: float) -> None:
    """One rank of the sharded head on its half of a fixed global batch; writes its loss and gradients."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(11)
        weight, x, labels = torch.randn(11, 6), torch.randn(8, 6), torch.tensor([0, 3, 3, 10, 5, 6, 9, 1])
        head = MarginHead(6, 11, "arcface", 32.0, 0.5, sample_rate=rate, rank=rank, world=world)
        start, count = head.class_start, head.weight.shape[0]
        with torch.no_grad():
            head.weight.copy_(weight[start:start + count])
        mine = x[rank * 4:(rank + 1) * 4].clone().requires_grad_()
        loss = head(mine, labels[rank * 4:(rank + 1) * 4])
        loss.backward()
        torch.save({"loss": loss.item(), "start": start, "count": count, "w_grad": head.weight.grad,
                    "x_grad": mine.grad, "index": head.last_index}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("rate", [1.0, 0.5])
def test_two_rank_sharded_head_equals_the_one_process_head(tmp_path, rate):
    """Each rank holds its C/N classes; loss and gradients over the gathered batch equal the full head's
    (the embeddings' gradient times the world size, for DistributedDataParallel's average). At rate 0.5 each
    shard's sample holds the batch's classes of that shard; the reference then scores the union of them."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "rank")
    mp.spawn(_sharded_worker, args=(2, f"file://{tmp_path / 'init'}", out, rate), nprocs=2, join=True)
    parts = [torch.load(f"{out}.{r}") for r in range(2)]
    assert [(p["start"], p["count"]) for p in parts] == [(0, 6), (6, 5)]
    torch.manual_seed(11)
    weight, x, labels = torch.randn(11, 6), torch.randn(8, 6), torch.tensor([0, 3, 3, 10, 5, 6, 9, 1])
    keep = torch.arange(11)
    if rate < 1.0:
        for p in parts:
            local = labels - p["start"]
            mine = set(local[(local >= 0) & (local < p["count"])].tolist())
            assert mine <= set(p["index"].tolist()) and p["index"].numel() == max(len(mine), int(rate * p["count"]))
        keep = torch.cat([p["index"] + p["start"] for p in parts])
    full = MarginHead(6, len(keep), "arcface", 32.0, 0.5)
    with torch.no_grad():
        full.weight.copy_(weight[keep])
    xr = x.clone().requires_grad_()
    loss = full(xr, torch.searchsorted(keep, labels))
    loss.backward()
    for p in parts:
        assert abs(p["loss"] - loss.item()) <= 1e-6 * abs(loss.item())  # float32, relative
    w_grad = torch.zeros(11, 6)
    w_grad[keep] = full.weight.grad
    for r, p in enumerate(parts):
        assert torch.allclose(p["w_grad"], w_grad[p["start"]:p["start"] + p["count"]], atol=1e-6)
        assert torch.allclose(p["x_grad"], 2 * xr.grad[r * 4:(r + 1) * 4], atol=1e-6)


def test_given_draws_rank_the_other_classes():
    draws = torch.tensor([0.1, 0.9, 0.5, 0.8, 0.2, 0.7])
    assert sample_centres(torch.tensor([0]), 6, 3, draws).tolist() == [0, 1, 3]
    with pytest.raises(ValueError, match="shape"):
        sample_centres(torch.tensor([0]), 6, 3, draws[:5])


def _draw_worker(rank: int, world: int, init: str, out: str) -> None:
    """Both ranks seeded alike (as a run's ranks are); each records the rows its shard sampled per step."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(7)
        head = MarginHead(4, 20, "arcface", 32.0, 0.5, sample_rate=0.3, rank=rank, world=world)
        torch.manual_seed(21)
        picked = []
        for _ in range(4):
            head(torch.randn(2, 4), torch.tensor([0, 10]))  # one class per shard, local row 0 on both
            assert head.last_index is not None
            picked.append(head.last_index.tolist())
        torch.save(picked, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_ranks_sharing_a_seed_sample_their_slice_of_one_draw(tmp_path):
    """Equal shards under one seed must not sample the same local rows: each rank ranks its rows by its
    slice of one draw over all C classes (as one process would draw them)."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "rank")
    mp.spawn(_draw_worker, args=(2, f"file://{tmp_path / 'init'}", out), nprocs=2, join=True)
    got = [torch.load(f"{out}.{r}") for r in range(2)]
    torch.manual_seed(21)
    for step in range(4):
        torch.randn(2, 4)
        draw = torch.rand(20)
        for rank in range(2):
            expect = sample_centres(torch.tensor([0]), 10, 3, draw[rank * 10:(rank + 1) * 10])
            assert got[rank][step] == expect.tolist()
    assert any(got[0][s] != got[1][s] for s in range(4))
