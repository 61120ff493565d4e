"""Partial FC's step cost: a distill step with the full margin head against one scoring a sample of the classes.

    python bench/partial_fc.py --classes 360232 --sample-rate 0.1 [--steps 4] [--repeats 3] [--batch-size 128]
        [--image-size 112] [--student mobilefacenet] [--threads -1] [--device auto] [--json FILE]

One process builds a MobileFaceNet student (512-d), the bias-free projector's place is empty (teacher and
student are both 512-d), and two margin heads over `--classes` identities that differ only in
`loss.sample_rate` (1.0 and `--sample-rate`; `losses.MarginHead`), each with its own SGD optimiser over
the student and its head at the training defaults (lr 0.1, momentum 0.9, weight decay 5e-4, gradient
norm clipped at 5, `[train]`). A step is what `distill` computes for `loss.method = "fcd"` with the margin
head on: student forward on a batch of `--batch-size` random images, FCD against random unit teacher
targets, the margin loss (ArcFace, s 64, m 0.5) over all classes or the sampled ones, backward, clipping,
the optimiser update (which, as in arcface_torch, still decays and moves the whole class matrix:
`losses.margin.MarginHead`). Data loading and the cache read are left out: they are the same in both.
Batch labels are drawn uniformly from the classes, as a random batch of a large set has them.

Rounds alternate full and sampled (`--repeats` rounds of `--steps` timed steps each after one untimed
warm-up step per variant); the figures are medians of the per-step times, and the ratio the median of
the per-round ratios. Peak RSS is the process's (both heads and their optimiser state live together).
Last stdout line: a JSON object with `classes`, `sample_rate`, `step_ms_full`, `step_ms_sampled`,
`ratio` (sampled / full), `peak_rss_mb` and the machine.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import preamble
import torch
import torch.nn.functional as F

from bench.common import (
    emit_json,
    machine_info,
    median,
    pick_device,
    print_table,
    report_json,
    rss_peak_mb,
    set_threads,
    sync,
)
from losses import MarginHead
from losses.fcd import feature_consistency_loss
from models.registry import create_backbone

EMBEDDING = 512


class Variant:
    """A student copy, its margin head at one sample rate and its SGD optimiser."""

    def __init__(self, student: torch.nn.Module, classes: int, rate: float, device: torch.device) -> None:
        self.student = student
        self.head = MarginHead(EMBEDDING, classes, "arcface", 64.0, 0.5, sample_rate=rate).to(device)
        self.params = [*student.parameters(), *self.head.parameters()]
        self.opt = torch.optim.SGD(self.params, lr=0.1, momentum=0.9, weight_decay=5e-4)

    def step(self, images: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> float:
        feats = self.student(images)
        emb = F.normalize(feats.float(), dim=1)
        loss = self.head(feats.float(), labels) + feature_consistency_loss(emb, targets)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 5.0)
        self.opt.step()
        return float(loss.detach())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = preamble.parser(__doc__)
    ap.add_argument("--classes", type=int, default=360232)
    ap.add_argument("--sample-rate", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    ap.add_argument("--repeats", type=int, default=3, help="rounds, alternating the variants")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--student", default="mobilefacenet")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core; -1: one on CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON figures to this file")
    args = ap.parse_args(argv)
    if not 0 < args.sample_rate < 1:
        ap.error(f"--sample-rate {args.sample_rate}: must be in (0, 1) (1.0 is the full head it is compared with)")
    if args.classes < 2 or args.steps < 1 or args.repeats < 1:
        ap.error("--classes >= 2, --steps >= 1 and --repeats >= 1")
    return args


def main() -> None:
    args = parse_args()
    device = pick_device(args.device)
    threads = set_threads(args.threads, device)
    torch.manual_seed(0)
    student = create_backbone(args.student, EMBEDDING, args.image_size, 0.0).to(device).train()
    variants = {1.0: Variant(student, args.classes, 1.0, device),
                args.sample_rate: Variant(student, args.classes, args.sample_rate, device)}
    gen = torch.Generator().manual_seed(1)

    def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=gen)
        labels = torch.randint(0, args.classes, (args.batch_size,), generator=gen)
        targets = F.normalize(torch.randn(args.batch_size, EMBEDDING, generator=gen), dim=1)
        return images.to(device), labels.to(device), targets.to(device)

    for v in variants.values():  # warm-up: allocator, kernels, optimiser state
        v.step(*batch())
    times: dict[float, list[float]] = {r: [] for r in variants}
    ratios: list[float] = []
    for round_ in range(args.repeats):
        order = list(variants) if round_ % 2 == 0 else list(variants)[::-1]
        per_round: dict[float, float] = {}
        for rate in order:
            spent = []
            for _ in range(args.steps):
                data = batch()
                sync(device)
                start = time.perf_counter()
                variants[rate].step(*data)
                sync(device)
                spent.append(time.perf_counter() - start)
            times[rate] += spent
            per_round[rate] = median(spent)
        ratios.append(per_round[args.sample_rate] / per_round[1.0])
    full_ms, sampled_ms = median(times[1.0]) * 1e3, median(times[args.sample_rate]) * 1e3
    figures: dict[str, Any] = {
        "classes": args.classes, "sample_rate": args.sample_rate, "sampled_centres":
            variants[args.sample_rate].head.num_sample, "batch_size": args.batch_size,
        "image_size": args.image_size, "student": args.student, "step_ms_full": round(full_ms, 1),
        "step_ms_sampled": round(sampled_ms, 1), "ratio": round(median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios], "peak_rss_mb": round(rss_peak_mb(), 1),
        "threads": threads, "machine": machine_info(device),
    }
    print_table(f"distill step, {args.classes} classes, batch {args.batch_size} at {args.image_size} px",
                ["head", "step ms"], [["full (1.0)", figures["step_ms_full"]],
                                      [f"sampled ({args.sample_rate})", figures["step_ms_sampled"]],
                                      ["ratio", figures["ratio"]]])
    if args.json is not None:
        report_json(figures, args.json)
    emit_json(figures)


if __name__ == "__main__":
    main()
