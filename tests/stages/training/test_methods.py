"""`stages.training.methods`: each `loss.method` end to end through `distill` (its terms as metrics.csv columns,
a decreasing loss), the refusals of bad settings, and ICD's SDC term against a naive loop."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from config import IcdConfig, LossConfig, PipelineConfig
from losses import similarity_grid
from stages.training.methods import StepInputs, icd_terms, method_weights, step_inputs, step_stats
from tests.conftest import invoke
from tests.stages.conftest import read_metrics
from tests.stages.training.test_pairs import TableTargets

# method -> its term columns in metrics.csv (at the default weights)
METHOD_COLUMNS = {
    "icd": ["margin", "fcd", "sdc"],
    "fcd": ["margin", "fcd"],
    "rkd": ["margin", "fcd", "rkd_distance", "rkd_angle"],
    "ekd": ["margin", "fcd", "ekd"],
    "adadistill": ["adadistill"],
    "margindistillation": ["margindistillation"],
    "icd_rkd": ["margin", "fcd", "sdc", "rkd_distance", "rkd_angle"],
}
ALL_TERMS = {c for cols in METHOD_COLUMNS.values() for c in cols}


def _distill(extracted: tuple[Path, list[str], dict], out_dir: Path, *changes: str) -> tuple[int, str, dict | None]:
    run, settings, _ = extracted
    return invoke("distill", settings + [f"run.dir={out_dir}", f"cache.path={run / 'cache' / 'teacher.h5'}",
                                         "train.checkpoint_every=100", *changes])


@pytest.mark.parametrize("method", list(METHOD_COLUMNS))
def test_each_method_logs_its_terms_and_lowers_the_loss(extracted: tuple[Path, list[str], dict], tmp_path: Path,
                                                        method: str) -> None:
    code, out, summary = _distill(extracted, tmp_path, f'loss.method="{method}"', "train.steps=10")
    assert code == 0, out
    with open(tmp_path / "metrics.csv") as fh:
        header = fh.readline().strip().split(",")
    assert header[:2] == ["step", "loss"] and [c for c in header if c in ALL_TERMS] == METHOD_COLUMNS[method]
    rows = read_metrics(tmp_path / "metrics.csv")
    assert len(rows) == 10 and set(summary["final_terms"]) == set(METHOD_COLUMNS[method])
    values = np.array([[float(r[c]) for c in ["loss", *METHOD_COLUMNS[method]]] for r in rows])
    assert np.isfinite(values).all()
    losses = values[:, 0]
    assert losses[-3:].mean() < losses[:3].mean(), losses
    if method not in ("icd", "fcd", "icd_rkd"):
        assert values[:, -1].max() > 0.0  # the method's own term is live, not a constant 0


def test_fcd_is_icd_with_sdc_off(extracted: tuple[Path, list[str], dict], tmp_path: Path) -> None:
    assert _distill(extracted, tmp_path / "fcd", 'loss.method="fcd"', "train.steps=4")[0] == 0
    assert _distill(extracted, tmp_path / "icd", "loss.sdc_weight=0.0", "train.steps=4")[0] == 0
    fcd, icd = (read_metrics(tmp_path / name / "metrics.csv") for name in ("fcd", "icd"))
    assert "sdc" not in fcd[0]
    for a, b in zip(fcd, icd, strict=True):
        for key in ("loss", "margin", "fcd", "ts_cos"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6), key


def test_icd_rkd_is_icd_plus_rkds_terms(extracted: tuple[Path, list[str], dict], tmp_path: Path) -> None:
    """The first step (same seed, same batch, same initial student) gives icd's and rkd's own term values."""
    for method in ("icd", "rkd", "icd_rkd"):
        assert _distill(extracted, tmp_path / method, f'loss.method="{method}"', "train.steps=1")[0] == 0
    icd, rkd, both = (read_metrics(tmp_path / m / "metrics.csv")[0] for m in ("icd", "rkd", "icd_rkd"))
    for key, ref in (("margin", icd), ("fcd", icd), ("sdc", icd), ("rkd_distance", rkd), ("rkd_angle", rkd)):
        assert float(both[key]) == pytest.approx(float(ref[key]), abs=1e-6), key
    weighted = float(icd["loss"]) + 25 * float(rkd["rkd_distance"]) + 50 * float(rkd["rkd_angle"])
    assert float(both["loss"]) == pytest.approx(weighted, rel=1e-5)


def test_centre_methods_replace_the_margin_head(extracted: tuple[Path, list[str], dict], tmp_path: Path) -> None:
    from checkpoints import load_checkpoint

    code, out, summary = _distill(extracted, tmp_path, 'loss.method="adadistill"', "train.steps=2")
    assert code == 0, out
    state = load_checkpoint(Path(summary["checkpoint"]))
    assert set(state["modules"]) == {"student", "projector"}  # student 16-d, teacher 32-d: projected
    centres = state["method_state"]["adadistill_centres"]
    assert tuple(centres.shape) == (8, 32) and bool((centres.norm(dim=1) > 0).any())


@pytest.mark.parametrize("setting, key", [
    ('loss.method="kd"', "loss.method"),
    ("rkd.distance_weight=-1.0", "rkd.distance_weight"),
    ("rkd.angle_weight=-0.5", "rkd.angle_weight"),
    ("ekd.weight=-1.0", "ekd.weight"),
    ("ekd.temperature=0.0", "ekd.temperature"),
    ("ekd.top_k=0", "ekd.top_k"),
    ("ekd.momentum=0.0", "ekd.momentum"),
    ("ekd.fprs=[0.1, 2.0]", "ekd.fprs[1]"),
    ("ekd.fprs=[]", "ekd.fprs"),
    ("ekd.pos_weight=-1", "ekd.pos_weight"),
    ('adadistill.head="sphereface"', "adadistill.head"),
    ("adadistill.scale=0", "adadistill.scale"),
    ("adadistill.margin=-0.1", "adadistill.margin"),
    ("adadistill.weighted_alpha=1", "adadistill.weighted_alpha"),
    ("margindistillation.scale=-1", "margindistillation.scale"),
    ("margindistillation.margin_max=4.0", "margindistillation.margin_max"),
    ("margindistillation.margin_min=0.6", "margindistillation.margin_min"),
    ("rkd.gamma=1.0", "rkd.gamma"),
])
def test_bad_method_settings_exit_2_naming_the_key(extracted: tuple[Path, list[str], dict], tmp_path: Path,
                                                   setting: str, key: str) -> None:
    code, out, _ = _distill(extracted, tmp_path, setting, "train.steps=1")
    assert code == 2 and f"'{key}'" in out, out
    assert not (tmp_path / "metrics.csv").exists()


def test_all_weights_zero_is_refused_naming_the_keys(extracted: tuple[Path, list[str], dict], tmp_path: Path) -> None:
    code, out, _ = _distill(extracted, tmp_path, 'loss.method="rkd"', "loss.margin_weight=0", "loss.fcd_weight=0",
                            "rkd.distance_weight=0", "rkd.angle_weight=0", "train.steps=1")
    assert code == 2, out
    assert all(f"'{k}'" in out for k in ("loss.margin_weight", "loss.fcd_weight", "rkd.distance_weight",
                                         "rkd.angle_weight")), out


def test_train_refuses_a_distillation_method(extracted: tuple[Path, list[str], dict], tmp_path: Path) -> None:
    _run, settings, _ = extracted
    code, out, _ = invoke("train", settings + [f"run.dir={tmp_path}", 'loss.method="rkd"', "train.steps=1"])
    assert code == 2 and "'loss.method'" in out and "'rkd'" in out, out
    assert not (tmp_path / "metrics.csv").exists()


def _inputs(run: SimpleNamespace, emb: torch.Tensor, batch: dict[str, torch.Tensor], labels: torch.Tensor,
            rows: torch.Tensor) -> StepInputs:
    return step_inputs(run, emb, labels, rows, batch)  # type: ignore[arg-type]


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
    cfg = PipelineConfig(loss=dataclasses.replace(loss, margin_weight=0.0), icd=icd)  # no margin head here
    run = SimpleNamespace(inputs=SimpleNamespace(provider=TableTargets(table)), grid=similarity_grid(icd.grid_step),
                          cfg=cfg, weights=method_weights(cfg, True, "distill"), device=torch.device("cpu"),
                          nets={}, bank=None, step=0, sdc_start=0)
    return run, {"rows": rows, "flips": flips}, emb, labels, table[rows, flips], icd


def test_sdc_term_weights_each_distinct_image_pair_once() -> None:
    run, batch, emb, labels, targets, icd = _two_identity_batch(2, LossConfig(method="icd"))
    rows = batch["rows"]
    x = _inputs(run, emb, batch, labels, rows)
    terms, stats = icd_terms(run, x), step_stats(x)
    want_sdc, want_intra = _reference_sdc(rows.tolist(), labels.tolist(), emb, targets, run.grid.tolist(), icd.sigma,
                                          icd.kl_eps)
    assert terms["sdc"].item() == pytest.approx(want_sdc, rel=1e-4)
    assert stats["intra_teacher"].item() == pytest.approx(want_intra, rel=1e-5)


def test_impostor_term_is_sdc_over_distinct_different_identity_pairs() -> None:
    # row 10 twice, row 11 once: its impostor pairs occur twice or once, so unweighted copies would skew the density
    run, batch, emb, labels, targets, icd = _two_identity_batch(3, LossConfig(method="icd", impostor_sdc_weight=0.5),
                                                                ([10, 11, 10, 20, 21, 22, 23, 24],
                                                                 [0, 0, 0, 1, 1, 1, 1, 1]))
    rows = batch["rows"]
    terms = icd_terms(run, _inputs(run, emb, batch, labels, rows))
    want, _ = _reference_sdc(rows.tolist(), labels.tolist(), emb, targets, run.grid.tolist(), icd.sigma, icd.kl_eps,
                             same=False)
    assert terms["impostor_sdc"].item() == pytest.approx(want, rel=1e-4)
    run.weights = method_weights(PipelineConfig(loss=LossConfig(method="icd", margin_weight=0.0)), True, "distill")
    assert "impostor_sdc" not in icd_terms(run, _inputs(run, emb, batch, labels, rows))


def test_per_identity_distribution_gives_each_identity_its_own_kl() -> None:
    run, batch, emb, labels, targets, icd = _two_identity_batch(4, LossConfig(method="icd"))
    rows = batch["rows"]
    run.cfg.icd = IcdConfig(pairs="batch", grid_step=0.05, sigma=0.1, distribution="per_identity")
    terms = icd_terms(run, _inputs(run, emb, batch, labels, rows))
    want = []
    for c in (0, 1):
        keep = [k for k in range(len(rows)) if int(labels[k]) == c]
        kl, _ = _reference_sdc([int(rows[k]) for k in keep], [c] * len(keep), emb[keep], targets[keep],
                               run.grid.tolist(), icd.sigma, icd.kl_eps)
        want.append(kl)
    assert terms["sdc"].item() == pytest.approx(sum(want) / 2, rel=1e-4)
