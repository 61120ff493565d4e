"""How easy in-batch positive pairs are under each `train.positive_policy`, next to the identity's pairs.

    python bench/positive_policy.py [--identities 64] [--per-identity 24] [--image-size 32]
        [--teacher-epochs 14] [--teacher-weights PATH] [--cache PATH] [--epochs 3] [--batch-size 128]
        [--images-per-identity 4] [--positives-k 8] [--seed 0] [--workdir DIR] [--device auto]

Data: the project's synthetic generator (`data.format = synthetic`, `--identities` x `--per-identity`
images at `--image-size`, generator seed 1234 as `pipeline.toml`). Teacher: trained here with
`stages.train.run_train` as the demo trains its own (IResNet-18, 256-d, the `[demo]` teacher budget
`--teacher-epochs`, lr 0.1, scale 32, 50 warm-up steps), or `--teacher-weights` (an IResNet-18
`backbone.pth` of that size), or with `--teacher-epochs 0` random weights (calibrated BatchNorm,
`bench.common.save_random_backbone`); its cache is extracted with `stages.extract.run_extract`
(`cache.positives_k = --positives-k`). `--cache` measures an existing cache instead (no training,
no extraction). `--workdir` keeps the teacher and cache, and a rerun reuses them.

For every policy, `stages.training.policy.positive_table` gives the table that `distill` hands the
sampler, and `stages.training.sampler.IdentityBatchSampler` (batch `--batch-size` = P x M with M =
`--images-per-identity`, no random rows, as `distill` builds it) plans `--epochs` epochs. Figures,
all teacher cosines of view 0 (the image as stored):
- `in_batch_cos`: mean over the distinct same-identity pairs of every batch, pooled over batches;
- `all_pairs_cos`: mean over every same-identity pair of the set, each once (what the identity's
  similarity distribution is);
- `bias`: in_batch_cos - all_pairs_cos (positive: in-batch pairs easier than the identity's);
- `hard_coverage`: share of each identity's hardest quarter of pairs (lowest cosine) that some batch of
  an epoch holds, averaged over epochs; `coverage`: the same share of all its pairs.
Deterministic given the seeds (no timing). On 2 shared CPU cores the default run took 28 min, nearly
all of it the teacher's 168 training steps; `--teacher-epochs 0` takes about a minute.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import preamble

from bench.common import emit_json, machine_info, pick_device, print_table, quiet, save_random_backbone
from cache import TeacherCache
from config import DemoConfig, load_config
from config.choices import POSITIVE_POLICIES
from stages.training.policy import positive_table
from stages.training.run import sampler_inputs
from stages.training.sampler import IdentityBatchSampler

TEACHER_ARCH = "iresnet18"
TEACHER_DIM = 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = preamble.parser(__doc__)
    ap.add_argument("--identities", type=int, default=64)
    ap.add_argument("--per-identity", type=int, default=24)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--teacher-epochs", type=float, default=DemoConfig().teacher_epochs,
                    help="epochs of the teacher trained here (0: random weights)")
    ap.add_argument("--teacher-weights", default="", help="an IResNet-18 backbone.pth (256-d) instead of training one")
    ap.add_argument("--cache", default="", help="measure this teacher cache (skips the teacher and extraction)")
    ap.add_argument("--epochs", type=int, default=3, help="sampler epochs measured per policy")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--images-per-identity", type=int, default=4)
    ap.add_argument("--positives-k", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0, help="run.seed: teacher training and the sampler's plans")
    ap.add_argument("--workdir", default="", help="where the teacher and cache go (default: a temp dir)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (teacher training and extraction)")
    return ap.parse_args(argv)


def shared_settings(args: argparse.Namespace, work: Path) -> list[str]:
    """`--set` overrides shared by the teacher's training and the extraction."""
    return [
        f"run.seed={args.seed}", f"run.device={pick_device(args.device)}", "data.format=synthetic",
        f"data.image_size={args.image_size}", f"data.synthetic.identities={args.identities}",
        f"data.synthetic.images_per_identity={args.per_identity}", f"cache.path={work / 'cache' / 'teacher.h5'}",
        f"cache.positives_k={args.positives_k}", f"train.batch_size={args.batch_size}",
        f"train.images_per_identity={args.images_per_identity}",
    ]


def teacher_weights(args: argparse.Namespace, work: Path) -> str:
    """The teacher's backbone.pth: given, random, or trained here (reused when `work` already holds it)."""
    if args.teacher_weights:
        return args.teacher_weights
    path = work / "teacher" / "backbone.pth"
    if path.exists():
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not args.teacher_epochs:
        return str(save_random_backbone(TEACHER_ARCH, TEACHER_DIM, args.image_size, path))
    from stages.train import run_train

    cfg = load_config(None, shared_settings(args, work) + [
        f"run.dir={path.parent}", "train.resume=auto", f"student.arch={TEACHER_ARCH}",
        f"student.embedding_size={TEACHER_DIM}", f"train.epochs={args.teacher_epochs}", "train.lr=0.1",
        "loss.scale=32.0", "train.warmup_steps=50", "train.checkpoint_every=1000000", "train.log_every=50"])
    return str(run_train(cfg)["backbone"])


def build_cache(args: argparse.Namespace, work: Path) -> Path:
    """The teacher cache to measure: `--cache`, or extracted here from the teacher."""
    if args.cache:
        return Path(args.cache)
    from stages.extract import run_extract

    weights = teacher_weights(args, work)
    cfg = load_config(None, shared_settings(args, work) + [
        f"run.dir={work}", f"teacher.arch={TEACHER_ARCH}", f"teacher.weights={weights}",
        f"teacher.embedding_size={TEACHER_DIM}"])
    return Path(run_extract(cfg)["cache"])


def identity_pairs(emb: np.ndarray, labels: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per identity: rows i, rows j (i < j) of all its pairs and their teacher cosines."""
    out = {}
    for c in np.unique(labels).tolist():
        rows = np.flatnonzero(labels == c)
        a, b = np.triu_indices(len(rows), k=1)
        out[c] = (rows[a], rows[b], np.einsum("nd,nd->n", emb[rows[a]], emb[rows[b]]))
    return out


def batch_pairs(batch: list[int], labels: np.ndarray) -> set[tuple[int, int]]:
    """The distinct same-identity pairs (lower row first) of one planned batch."""
    rows = np.asarray(batch)
    same = (labels[rows][:, None] == labels[rows][None, :]) & (rows[:, None] < rows[None, :])
    i, j = np.nonzero(same)
    return set(zip(rows[i].tolist(), rows[j].tolist(), strict=True))


def measure(policy: str, cache: TeacherCache, emb: np.ndarray, labels: np.ndarray,
            pairs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]], args: argparse.Namespace) -> dict[str, Any]:
    """One policy's in-batch pair figures over `args.epochs` epoch plans (see the module docstring)."""
    rows = np.arange(len(labels), dtype=np.int64)
    local_labels, table = sampler_inputs(labels, rows, positive_table(policy, cache))
    sampler = IdentityBatchSampler(local_labels, table, batch_size=args.batch_size,
                                   images_per_identity=args.images_per_identity, seed=args.seed)
    hard = {c: set(zip(a[s <= np.quantile(s, 0.25)].tolist(), b[s <= np.quantile(s, 0.25)].tolist(), strict=True))
            for c, (a, b, s) in pairs.items()}
    total_pairs = sum(len(s) for _, _, s in pairs.values())
    sims: list[np.ndarray] = []
    coverage, hard_coverage = [], []
    for epoch in range(args.epochs):
        seen: set[tuple[int, int]] = set()
        for batch in sampler.epoch_plan(epoch):
            found = batch_pairs(batch, labels)
            seen |= found
            if found:
                a, b = np.array(sorted(found)).T
                sims.append(np.einsum("nd,nd->n", emb[a], emb[b]))
        coverage.append(len(seen) / total_pairs)
        hard_coverage.append(np.mean([len(h & seen) / len(h) for h in hard.values() if h]))
    return {"in_batch_cos": float(np.concatenate(sims).mean()), "in_batch_pairs": int(sum(map(len, sims))),
            "coverage": float(np.mean(coverage)), "hard_coverage": float(np.mean(hard_coverage))}


def main() -> None:
    args = parse_args()
    quiet()
    with tempfile.TemporaryDirectory(prefix="positive_policy_") as tmp:
        work = Path(args.workdir or tmp)
        cache = TeacherCache(build_cache(args, work))
        emb = cache.read_view(0)
        labels = cache.labels
        pairs = identity_pairs(emb, labels)
        all_pairs = float(np.concatenate([s for _, _, s in pairs.values()]).mean())
        results = {p: measure(p, cache, emb, labels, pairs, args) for p in POSITIVE_POLICIES}
    rows = [[p, r["in_batch_cos"], all_pairs, r["in_batch_cos"] - all_pairs, r["coverage"], r["hard_coverage"]]
            for p, r in results.items()]
    m = args.images_per_identity
    print_table(f"teacher cosine of same-identity pairs ({len(labels)} rows, {len(pairs)} identities, "
                f"batch {args.batch_size} = {args.batch_size // m} x {m})",
                ["policy", "in_batch_cos", "all_pairs_cos", "bias", "coverage", "hard_coverage"], rows)
    emit_json({"rows": len(labels), "identities": len(pairs), "all_pairs_cos": all_pairs, "policies": results,
               "teacher": {"epochs": args.teacher_epochs, "weights": args.teacher_weights, "cache": args.cache},
               "batch_size": args.batch_size, "images_per_identity": args.images_per_identity,
               "positives_k": args.positives_k, "epochs": args.epochs, "seed": args.seed,
               "machine": machine_info(pick_device(args.device))})


if __name__ == "__main__":
    main()
