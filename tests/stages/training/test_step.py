"""`distillation_terms`: the SDC term counts each distinct image pair once, against a naive loop."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from config import IcdConfig, LossConfig
from losses import similarity_grid
from stages.training.step import distillation_terms
from tests.stages.training.test_pairs import TableTargets


def _reference_sdc(rows: list[int], labels: list[int], emb: torch.Tensor, targets: torch.Tensor, grid: list[float],
                   sigma: float, eps: float, same: bool = True) -> tuple[float, float]:
    """KL(P_t || P_s) with each distinct in-batch image pair once (copies averaged), and their mean teacher cosine;
    same-identity pairs, or (same=False) different-identity pairs."""
    copies: dict[frozenset[int], list[tuple[float, float]]] = {}
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if (labels[i] == labels[j] and rows[i] != rows[j]) if same else labels[i] != labels[j]:
                sims = (float(emb[i] @ emb[j]), float(targets[i] @ targets[j]))
                copies.setdefault(frozenset((rows[i], rows[j])), []).append(sims)

    def density(side: int) -> list[float]:
        dens = [sum(sum(math.exp(-((g - c[side]) ** 2) / (2 * sigma * sigma)) for c in cs) / len(cs)
                    for cs in copies.values()) for g in grid]
        return [d / sum(dens) for d in dens]

    p_s, p_t = density(0), density(1)
    kl = sum(t * (math.log(t + eps) - math.log(s + eps)) for t, s in zip(p_t, p_s, strict=True))
    intra_teacher = sum(sum(c[1] for c in cs) / len(cs) for cs in copies.values()) / len(copies)
    return kl, intra_teacher


GROUPED = ([10, 11, 10, 11, 20, 21, 22, 23], [0, 0, 0, 0, 1, 1, 1, 1])


def _two_identity_batch(seed: int, loss: LossConfig, batch_rows: tuple[list[int], list[int]] = GROUPED
                        ) -> tuple[SimpleNamespace, dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor,
                                   IcdConfig]:
    """By default a two-image identity's group [10, 11, 10, 11] (four copies of one pair) next to a four-image
    identity, and a stand-in `Run` reading targets from a table: (run, batch, emb, labels, table targets, icd)."""
    rows, labels = torch.tensor(batch_rows[0]), torch.tensor(batch_rows[1])
    flips = torch.tensor([0, 1, 1, 0, 0, 1, 0, 1])
    torch.manual_seed(seed)
    emb = F.normalize(torch.randn(8, 6), dim=1)
    table = F.normalize(torch.randn(30, 2, 6), dim=-1)
    icd = IcdConfig(pairs="batch", grid_step=0.05, sigma=0.1)
    run = SimpleNamespace(inputs=SimpleNamespace(provider=TableTargets(table)), grid=similarity_grid(icd.grid_step),
                          cfg=SimpleNamespace(icd=icd, loss=loss), device=torch.device("cpu"), projector=None,
                          bank=None, step=0, sdc_start=0)
    return run, {"rows": rows, "flips": flips}, emb, labels, table[rows, flips], icd


def test_sdc_term_weights_each_distinct_image_pair_once() -> None:
    run, batch, emb, labels, targets, icd = _two_identity_batch(2, LossConfig())
    rows = batch["rows"]
    terms, stats = distillation_terms(run, emb, batch, labels, rows)
    want_sdc, want_intra = _reference_sdc(rows.tolist(), labels.tolist(), emb, targets, run.grid.tolist(), icd.sigma,
                                          icd.kl_eps)
    assert terms["sdc"].item() == pytest.approx(want_sdc, rel=1e-4)
    assert stats["intra_teacher"].item() == pytest.approx(want_intra, rel=1e-5)


def test_impostor_term_is_sdc_over_distinct_different_identity_pairs() -> None:
    # row 10 twice, row 11 once: its impostor pairs occur twice or once, so unweighted copies would skew the density
    run, batch, emb, labels, targets, icd = _two_identity_batch(3, LossConfig(impostor_sdc_weight=0.5),
                                                                ([10, 11, 10, 20, 21, 22, 23, 24],
                                                                 [0, 0, 0, 1, 1, 1, 1, 1]))
    rows = batch["rows"]
    terms, _ = distillation_terms(run, emb, batch, labels, rows)
    want, _ = _reference_sdc(rows.tolist(), labels.tolist(), emb, targets, run.grid.tolist(), icd.sigma, icd.kl_eps,
                             same=False)
    assert terms["impostor_sdc"].item() == pytest.approx(want, rel=1e-4)
    run.cfg.loss = LossConfig()
    assert "impostor_sdc" not in distillation_terms(run, emb, batch, labels, rows)[0]


def test_per_identity_distribution_gives_each_identity_its_own_kl() -> None:
    run, batch, emb, labels, targets, icd = _two_identity_batch(4, LossConfig())
    rows = batch["rows"]
    run.cfg.icd = IcdConfig(pairs="batch", grid_step=0.05, sigma=0.1, distribution="per_identity")
    terms, _ = distillation_terms(run, emb, batch, labels, rows)
    want = []
    for c in (0, 1):
        keep = [k for k in range(len(rows)) if int(labels[k]) == c]
        kl, _ = _reference_sdc([int(rows[k]) for k in keep], [c] * len(keep), emb[keep], targets[keep],
                               run.grid.tolist(), icd.sigma, icd.kl_eps)
        want.append(kl)
    assert terms["sdc"].item() == pytest.approx(sum(want) / 2, rel=1e-4)
