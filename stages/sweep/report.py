"""`sweep.md` and `roc.png` of a sweep: per-variant metrics over seeds, differences to the baseline with
their intervals, and the ROC of the first seed."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_write_text
from evaluation.compare import mean_std, verdict
from evaluation.plots import plot_roc
from evaluation.verify import SetResult
from stages.sweep.runs import SweepRun
from stages.sweep.spec import SweepSpec

METRICS = (("auc", "AUC"), ("tar@1e-2", "TAR@FAR=1e-2"), ("tar@1e-3", "TAR@FAR=1e-3"), ("tar@1e-4", "TAR@FAR=1e-4"))


def metric_value(record: dict[str, Any], metric: str) -> float | None:
    """`auc` or `tar@<far>` of a set record."""
    if metric == "auc":
        return record.get("auc")
    return record.get("tar_at_far", {}).get(metric.removeprefix("tar@"))


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def metrics_table(set_name: str, spec: SweepSpec, runs: list[SweepRun], reference: dict[str, SetResult]) -> list[str]:
    """One row per variant (mean ± std over seeds) and the teacher's row, on one set."""
    lines = [f"### {set_name}", "", "| variant | accuracy | " + " | ".join(t for _, t in METRICS)
             + " | intra | inter | gap to teacher | train intra gap | train img/s |", "|---" * (8 + len(METRICS)) + "|"]
    if set_name in reference:
        rec = reference[set_name].record
        lines.append(f"| teacher | {rec['accuracy_mean']:.4f} | " + " | ".join(
            _fmt(metric_value(rec, m)) for m, _ in METRICS)
            + f" | {_fmt(rec.get('intra_mean'))} | {_fmt(rec.get('inter_mean'))} | | | |")
    for name in spec.variants:
        recs = [r.results[set_name].record for r in runs if r.variant == name]
        speeds = [r.images_per_s for r in runs if r.variant == name]
        train_gaps = [r.compactness["gap"]["intra_mean"] if r.compactness else None for r in runs if r.variant == name]
        lines.append(f"| {name} | {mean_std([x['accuracy_mean'] for x in recs])} | " + " | ".join(
            mean_std([metric_value(x, m) for x in recs]) for m, _ in METRICS)
            + f" | {mean_std([x.get('intra_mean') for x in recs])} | {mean_std([x.get('inter_mean') for x in recs])}"
            f" | {mean_std([x.get('teacher_gap') for x in recs])} | {mean_std(train_gaps)} | {np.mean(speeds):.0f} |")
    return lines + [""]


def difference_summary(spec: SweepSpec, comparisons: list[dict[str, Any]]) -> list[str]:
    """Per set, variant and metric: the mean difference to the baseline and on how many seeds its interval
    lies above 0 or below 0."""
    lines = [f"Difference to the baseline `{spec.baseline}` (variant - baseline), mean over seeds; seeds whose "
             "95% paired-bootstrap interval lies above / below 0:", "",
             "| set | variant | metric | mean difference | above 0 | below 0 |", "|---|---|---|---|---|---|"]
    keys = dict.fromkeys((c["set"], c["b"].split("/")[0], c["metric"]) for c in comparisons)
    for set_name, variant, metric in keys:
        rows = [c for c in comparisons if (c["set"], c["b"].split("/")[0], c["metric"]) == (set_name, variant, metric)]
        diffs = [c["difference"] for c in rows]
        mean = "n/a" if any(d is None for d in diffs) else f"{np.mean(diffs):+.4f}"
        above = sum(1 for c in rows if c["ci_low"] is not None and c["ci_low"] > 0)
        below = sum(1 for c in rows if c["ci_high"] is not None and c["ci_high"] < 0)
        lines.append(f"| {set_name} | {variant} | {metric} | {mean} | {above}/{len(rows)} | {below}/{len(rows)} |")
    return lines + [""]


def comparison_rows(comparisons: list[dict[str, Any]]) -> list[str]:
    lines = ["| set | a | b | metric | b - a | 95% interval | verdict |", "|---|---|---|---|---|---|---|"]
    for c in comparisons:
        diff = "n/a" if c["difference"] is None else f"{c['difference']:+.4f}"
        lines.append(f"| {c['set']} | {c['a']} | {c['b']} | {c['metric']} | {diff} | "
                     f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}] | {verdict(c)} |")
    return lines + [""]


def write_report(root: Path, spec: SweepSpec, runs: list[SweepRun], reference: dict[str, SetResult],
                 comparisons: list[dict[str, Any]]) -> Path:
    """`<root>/sweep.md` and `<root>/roc.png` (first set, first seed, every variant and the teacher)."""
    names = list(runs[0].results)
    lines = ["# Sweep", "", f"Sweep file `{spec.source}` (copied to `sweep.toml`); variants "
             + ", ".join(f"`{v}`" for v in spec.variants) + f"; baseline `{spec.baseline}`; seeds {spec.seeds}. "
             "Metrics are mean ± std over seeds; intra / inter: mean same / different-identity cosine; gap to teacher: "
             "mean |student cosine - teacher cosine| over the set's pairs; train intra gap: teacher minus student mean "
             "same-identity cosine on training identities (cached teacher; > 0: the student is less compact).", ""]
    for name in names:
        lines += metrics_table(name, spec, runs, reference)
    if comparisons:
        lines += difference_summary(spec, comparisons) + comparison_rows(comparisons)
    first = [r for r in runs if r.seed == spec.seeds[0]]
    curves = {r.variant: (r.results[names[0]].fpr, r.results[names[0]].tpr) for r in first}
    if names[0] in reference:
        curves["teacher"] = (reference[names[0]].fpr, reference[names[0]].tpr)
    plot_roc(curves, root / "roc.png", f"{names[0]}, seed {spec.seeds[0]}")
    lines += ["![ROC](roc.png)", ""]
    out = root / "sweep.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out
