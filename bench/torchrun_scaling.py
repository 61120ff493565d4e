"""`extract` and `distill` in one process against `torchrun --nproc_per_node N`: images per second.

    python bench/torchrun_scaling.py [--procs 2] [--steps 30] [--batch 64] [--image-size 32] [--rounds 2]

A random-weight IResNet-18 teacher (written here, `--image-size` input) is extracted once over a
synthetic dataset with `cli.py extract`; then `cli.py distill` (MobileFaceNet student, `--batch` rows
a process, `--steps` steps) runs alternately in one process and under `torchrun --standalone
--nproc_per_node --procs` (gloo on the CPU, NCCL on a GPU machine), `--rounds` times each, in fresh run
directories; `extract` likewise into fresh cache files. Figures: each variant's median `images_per_s`
from its summary (all processes together:
the batch is per process, so N processes train N x `--batch` images a step, as arcface_torch counts
them), and the ratio. On the CPU one process uses `--threads` torch threads and each of N processes
`--threads` / N, so both use the same cores. The last stdout line is the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import preamble
import torch
from preamble import REPO

from bench.common import emit_json, machine_info, median, print_table


def settings(root: Path, args: argparse.Namespace) -> list[str]:
    """The `--set` overrides shared by extract and every distill run."""
    return [
        f"run.dir={root / 'extract'}", "run.seed=0", f"run.device={args.device}", "data.format=synthetic",
        f"data.image_size={args.image_size}", "data.workers=0", f"data.synthetic.identities={args.identities}",
        "data.synthetic.images_per_identity=16", "teacher.arch=iresnet18", f"teacher.weights={root / 'teacher.pth'}",
        "teacher.embedding_size=64", "student.arch=mobilefacenet", "student.embedding_size=64",
        f"cache.path={root / 'extract' / 'cache' / 'teacher.h5'}", f"train.batch_size={args.batch}",
        f"train.steps={args.steps}", "train.warmup_steps=0", "train.log_every=10", "train.checkpoint_every=1000",
        "icd.max_age=100",
    ]


def cli(command: str, sets: list[str], procs: int, threads: int) -> dict[str, Any]:
    """Run `cli.py <command>` in one process or under torchrun; its JSON summary."""
    launcher = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc_per_node={procs}"]
    args = [*launcher, str(REPO / "cli.py"), command, "--config", str(REPO / "pipeline.toml")]
    for s in sets:
        args += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // procs)), "HF_HUB_OFFLINE": "1",
           "TQDM_DISABLE": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{command} with {procs} process(es) failed:\n{done.stderr[-3000:]}")
    return json.loads([ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1])


def main(argv: list[str] | None = None) -> None:
    ap = preamble.parser(__doc__)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--identities", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    from models import create_backbone

    with tempfile.TemporaryDirectory(prefix="torchrun_scaling_") as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        torch.save(create_backbone("iresnet18", 64, image_size=args.image_size).state_dict(), root / "teacher.pth")
        base = settings(root, args)
        cli("extract", base, 1, args.threads)
        speeds: dict[str, dict[int, list[float]]] = {c: {1: [], args.procs: []} for c in ("extract", "distill")}
        for r in range(args.rounds):
            for procs in (1, args.procs) if r % 2 == 0 else (args.procs, 1):
                cache = f"cache.path={root / f'extract_{procs}_{r}.h5'}"
                out = cli("extract", base + [f"run.dir={root / f'extract_{procs}_{r}'}", cache], procs, args.threads)
                speeds["extract"][procs].append(float(out["images_per_s"]))
                out = cli("distill", base + [f"run.dir={root / f'distill_{procs}_{r}'}"], procs, args.threads)
                speeds["distill"][procs].append(float(out["images_per_s"]))
    figures: dict[str, Any] = {"procs": args.procs, "batch_per_process": args.batch, "steps": args.steps,
                               "image_size": args.image_size, "runs": speeds,
                               "machine": machine_info(torch.device(args.device))}
    rows = []
    for command, runs in speeds.items():
        one, many = median(runs[1]), median(runs[args.procs])
        rows.append([command, f"{one:.1f}", f"{many:.1f}", f"{many / one:.3f}"])
        figures.update({f"{command}_images_per_s_1": round(one, 1),
                        f"{command}_images_per_s_{args.procs}": round(many, 1),
                        f"{command}_ratio": round(many / one, 3)})
    print_table(f"1 process against {args.procs} under torchrun (medians)",
                ["command", "images/s, 1", f"images/s, {args.procs}", "ratio"], rows)
    emit_json(figures)


if __name__ == "__main__":
    main()
