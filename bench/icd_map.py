"""A map of when ICD-Face pays: FCD alone against FCD + SDC on synthetic data where every factor is set.

    python bench/icd_map.py --demo runs/demo_default --out runs/icd_map \\
        [--identities 150 500] [--images 5 20 60] [--students mobilefacenet iresnet18] [--epochs 4] \\
        [--seed 0] [--n-boot 300] [--jobs 2] [--results bench/results/icd_map.json]

`--demo` is a finished `python cli.py demo` run: its teacher (trained on the synthetic default), config and
held-out identities (`heldout/heldout_all.txt`, 100 identities disjoint from every training set here) are
shared by every cell. For each cell (identities x images per identity) the script extracts the teacher
cache once (`python cli.py extract`), then for each student architecture runs a sweep with two variants on
that cache: `fcd` (ICD-Face with SDC off: margin head + FCD) and `icd` (the shipped recipe), at
`train.epochs = --epochs` (a fixed budget per training image) and the demo's other settings
(`train.warmup_steps` is capped at half the run's steps so the smallest cells still reach the full rate).

Per cell and student the table gives FCD's training gap (teacher minus student mean same-identity cosine
on training identities, from the sweep's compactness report; > 0: the student is less compact, ICD-Face's
premise), FCD's held-out gap, and ICD minus FCD in AUC and TAR@FAR=1e-3 with the sweep's 95% paired-bootstrap
interval over identities. Cells run smallest first, `--jobs` at a time (one core each,
`OMP_NUM_THREADS=1 taskset`); every step resumes (extract reuses its cache, sweeps their runs), and the
table (`--results`, JSON + a markdown twin + a figure) is rewritten after every finished sweep, so a
stopped map continues where it stopped. Last stdout line: the table as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import preamble
from preamble import REPO

SWEEP = """# written by bench/icd_map.py: FCD alone (SDC off) against the shipped ICD-Face recipe
baseline = "fcd"
seeds = [{seed}]

[variants.fcd]
set = ["loss.method=\\"icd\\"", "loss.sdc_weight=0.0"]

[variants.icd]
set = ["loss.method=\\"icd\\""]
"""
FAR = "1e-3"


@dataclass(frozen=True)
class Cell:
    identities: int
    images: int

    @property
    def name(self) -> str:
        return f"n{self.identities}_m{self.images}"

    @property
    def rows(self) -> int:
        return self.identities * self.images


def _run(cmd: list[str], log: Path, core: int | None) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    if core is not None:
        env["OMP_NUM_THREADS"] = "1"
        cmd = ["taskset", "-c", str(core), *cmd]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        done = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit {done.returncode}; see {log}")


def _cell_sets(cell: Cell, out: Path) -> list[str]:
    return [f"data.synthetic.identities={cell.identities}", f"data.synthetic.images_per_identity={cell.images}",
            f'cache.path="{(out / cell.name / "cache" / "teacher.h5").as_posix()}"']


def extract(cell: Cell, demo: Path, out: Path, core: int | None) -> None:
    if (out / cell.name / "cache" / "teacher.h5").exists():
        return
    sets = [*_cell_sets(cell, out), f'run.dir="{(out / cell.name).as_posix()}"', "data.workers=0"]
    _run([sys.executable, "cli.py", "extract", "--config", str(demo / "config.toml"),
          *[a for s in sets for a in ("--set", s)]], out / cell.name / "extract.log", core)


def sweep(cell: Cell, student: str, args: argparse.Namespace, core: int | None) -> Path:
    run_dir = args.out / cell.name / student.replace("/", "_")
    if (run_dir / "sweep.json").exists():
        return run_dir
    sweep_file = args.out / "map_sweep.toml"
    steps = math.ceil(args.epochs * cell.rows / args.batch_size)
    sets = [*_cell_sets(cell, args.out), f'run.dir="{run_dir.as_posix()}"', f'student.arch="{student}"',
            f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}",
            f"train.warmup_steps={min(50, steps // 2)}", f"eval.n_boot={args.n_boot}", "data.workers=0",
            f'eval.pairs=["{(args.demo / "heldout" / "heldout_all.txt").as_posix()}"]']
    _run([sys.executable, "cli.py", "sweep", str(sweep_file), "--config", str(args.demo / "config.toml"),
          *[a for s in sets for a in ("--set", s)]], run_dir.parent / f"{run_dir.name}.log", core)
    return run_dir


def summarise(cell: Cell, student: str, run_dir: Path, seed: int) -> dict[str, Any]:
    """One row of the map from a finished sweep's `sweep.json`."""
    summary = json.loads((run_dir / "sweep.json").read_text())
    runs, teacher = summary["runs"], summary["teacher"]
    row: dict[str, Any] = {"identities": cell.identities, "images_per_identity": cell.images, "student": student,
                           "seed": seed}
    for variant in ("fcd", "icd"):
        run = runs[f"{variant}/seed{seed}"]
        held = run["sets"]["heldout_all"]
        row[variant] = {"auc": held["auc"], "tar@1e-3": held["tar_at_far"][FAR],
                        "tar@1e-4": held["tar_at_far"]["1e-4"], "intra": held["intra_mean"],
                        "train_gap": run["compactness"]["gap"]["intra_mean"],
                        "heldout_gap": teacher["heldout_all"]["intra_mean"] - held["intra_mean"],
                        "images_per_s": run["images_per_s"]}
    for comp in summary["comparisons"]:
        if comp["a"] == f"fcd/seed{seed}" and comp["b"] == f"icd/seed{seed}" and comp["metric"] in ("auc",
                                                                                                  f"tar@{FAR}"):
            row[f"icd_minus_fcd_{comp['metric']}"] = [comp["difference"], comp["ci_low"], comp["ci_high"]]
    row["teacher_auc"] = teacher["heldout_all"]["auc"]
    return row


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    lines = ["# When ICD pays: FCD's training gap against ICD minus FCD (synthetic)", "", f"`{command}`", "",
             "Training gap: teacher minus student mean same-identity cosine on training identities (FCD run; > 0: "
             "the student is less compact, ICD-Face's premise). Differences: ICD minus FCD on 100 held-out "
             "identities, 95% paired-bootstrap interval over identities.", "",
             "| identities | images/id | student | FCD train gap | FCD held-out gap | FCD AUC | ICD - FCD AUC "
             "| FCD TAR@1e-3 | ICD - FCD TAR@1e-3 |", "|---|---|---|---|---|---|---|---|---|"]

    def diff(v: list[float] | None) -> str:
        return "n/a" if v is None else f"{v[0]:+.4f} [{v[1]:+.4f}, {v[2]:+.4f}]"

    for r in rows:
        f = r["fcd"]
        lines.append(f"| {r['identities']} | {r['images_per_identity']} | {r['student']} | {f['train_gap']:+.4f} "
                     f"| {f['heldout_gap']:+.4f} | {f['auc']:.4f} | {diff(r.get('icd_minus_fcd_auc'))} "
                     f"| {f['tar@1e-3']:.3f} | {diff(r.get(f'icd_minus_fcd_tar@{FAR}'))} |")
    return "\n".join(lines) + "\n\n![ICD map](icd_map.png)\n"


def figure(rows: list[dict[str, Any]], path: Path) -> None:
    """ICD minus FCD (AUC, with its interval) against FCD's training gap, one marker per student."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("auc", f"tar@{FAR}"), strict=True):
        for student, marker in zip(sorted({r["student"] for r in rows}), "os^v", strict=False):
            own = [r for r in rows if r["student"] == student and r.get(f"icd_minus_fcd_{metric}")]
            x = [r["fcd"]["train_gap"] for r in own]
            d = [r[f"icd_minus_fcd_{metric}"] for r in own]
            ax.errorbar(x, [v[0] for v in d], yerr=[[v[0] - v[1] for v in d], [v[2] - v[0] for v in d]],
                        fmt=marker, capsize=3, label=student)
            for r, xi, v in zip(own, x, d, strict=True):
                ax.annotate(f"{r['identities']}x{r['images_per_identity']}", (xi, v[0]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("FCD training gap (teacher - student same-identity cosine)")
        ax.set_ylabel(f"ICD - FCD {metric.upper()}")
        ax.legend(fontsize=8)
    fig.suptitle("Does ICD's gain follow FCD's gap? (identities x images per identity)")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main() -> None:
    ap = preamble.parser(__doc__)
    ap.add_argument("--demo", type=preamble.existing, required=True, help="a finished `cli.py demo` run folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--identities", type=int, nargs="+", default=[150, 500])
    ap.add_argument("--images", type=int, nargs="+", default=[5, 20, 60])
    ap.add_argument("--students", nargs="+", default=["mobilefacenet", "iresnet18"])
    ap.add_argument("--epochs", type=float, default=4.0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=2, help="parallel runs, one core each (0: one run, all cores)")
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "icd_map.json")
    args = ap.parse_args()
    if not (args.demo / "config.toml").is_file() or not (args.demo / "heldout" / "heldout_all.txt").is_file():
        ap.error(f"--demo {args.demo}: not a finished demo run (config.toml and heldout/heldout_all.txt)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "map_sweep.toml").write_text(SWEEP.format(seed=args.seed))
    command = "python bench/icd_map.py " + " ".join(sys.argv[1:])
    cells = sorted((Cell(n, m) for n in args.identities for m in args.images), key=lambda c: c.rows)
    jobs = max(1, args.jobs)
    cores = [i % (os.cpu_count() or 1) for i in range(jobs)] if args.jobs > 0 else [None]
    free, lock = list(cores), threading.Lock()
    rows: dict[tuple[int, int, str], dict[str, Any]] = {}

    def on_core(fn: Any, *a: Any) -> Any:
        with lock:
            core = free.pop()
        try:
            return fn(*a, core)
        finally:
            with lock:
                free.append(core)

    def publish() -> None:
        table = [rows[k] for k in sorted(rows, key=lambda k: (k[2], k[0], k[1]))]
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps({"command": command, "epochs": args.epochs, "rows": table}, indent=1))
        args.results.with_suffix(".md").write_text(markdown(table, command))
        figure(table, args.results.with_name("icd_map.png"))

    cell_locks = {c: threading.Lock() for c in cells}

    def one(task: tuple[Cell, str]) -> None:
        cell, student = task

        def work(core: int | None) -> Path:
            with cell_locks[cell]:  # a cell's cache is extracted once, by the first of its tasks
                extract(cell, args.demo, args.out, core)
            return sweep(cell, student, args, core)
        run_dir = on_core(work)
        with lock:
            rows[(cell.identities, cell.images, student)] = summarise(cell, student, run_dir, args.seed)
            publish()

    with ThreadPoolExecutor(jobs) as pool:  # smallest cells first, each extracted just before its first sweep
        list(pool.map(one, [(c, s) for s in args.students for c in cells]))
    print(json.dumps({"command": command, "rows": [rows[k] for k in sorted(rows)]}))


if __name__ == "__main__":
    main()
