"""The model card written beside an exported model: what it is, what it expects, where it came from, how it scored.

`model_card` assembles plain values into one JSON-ready dict (`CARD_FORMAT`); `card_markdown` renders
the same dict for people. `evaluation_summary` keeps, from an `evaluate` summary, the headline figures
of one model per set. The licence is left empty for the model's owner to fill in.
"""
from __future__ import annotations

from typing import Any

CARD_FORMAT = "icdface-model-card/1"
SIZE_KEYS = ("parameters", "flops", "onnx_bytes", "latency_ms")
HEADLINE_KEYS = ("accuracy_mean", "accuracy_std", "auc", "tar_at_far", "tar_at_far_bounded", "thresholds")


def evaluation_summary(summary: dict[str, Any], model: str) -> dict[str, Any]:
    """Per set, the headline figures (`HEADLINE_KEYS`) of `model` (an `eval.model` entry) in an `evaluate`
    summary (one model: `model` + `sets`; several: `models`); {} when the summary did not evaluate it.
    ValueError when the summary is JSON of another shape."""
    if not isinstance(summary, dict):
        raise ValueError(f"expected a JSON object, got {type(summary).__name__}")
    models = summary.get("models", {})
    records = [summary] if "sets" in summary else list(models.values()) if isinstance(models, dict) else None
    if records is None or not all(isinstance(r, dict) for r in records):
        raise ValueError("'models' must map model tags to records")
    for record in records:
        if record.get("model") == model:
            sets = record.get("sets", {})
            if not isinstance(sets, dict) or not all(isinstance(r, dict) for r in sets.values()):
                raise ValueError(f"the sets of model '{model}' must map set names to records")
            return {name: {k: r[k] for k in HEADLINE_KEYS if k in r} for name, r in sets.items()}
    return {}


def model_card(*, arch: str, embedding_size: int, input_spec: dict[str, Any], output_spec: dict[str, Any],
               onnx: dict[str, Any], training: dict[str, Any], teacher: dict[str, Any],
               evaluation: dict[str, Any], size: dict[str, Any]) -> dict[str, Any]:
    """The card's dict; every argument is plain JSON-ready data. `size` holds `parameters`, `flops` (one image
    at the input side), `onnx_bytes` and `latency_ms` (batch size -> median ms, onnxruntime on one CPU thread)."""
    return {
        "format": CARD_FORMAT, "arch": arch, "embedding_size": embedding_size, "input": input_spec,
        "output": output_spec, "onnx": onnx, "training": training, "teacher": teacher, "evaluation": evaluation,
        **{k: size.get(k) for k in SIZE_KEYS}, "licence": "",
    }


def _rows(table: dict[str, Any]) -> list[str]:
    return [f"| {k} | {v} |" for k, v in table.items()]


def _evaluation_lines(evaluation: dict[str, Any]) -> list[str]:
    """`evaluation` is {"source": the evaluate summary's path, "sets": set name -> headline figures}, or {}."""
    if not evaluation.get("sets"):
        return ["Not evaluated when exported: run `icdface evaluate` on the run, then export again."]
    lines = [f"From `{evaluation.get('source', '')}`.", "",
             "| set | accuracy | AUC | TAR@FAR | cosine threshold at that FAR |", "|---|---|---|---|---|"]
    for name, r in evaluation["sets"].items():
        acc = f"{r['accuracy_mean']:.4f} ± {r.get('accuracy_std', 0.0):.4f}" if "accuracy_mean" in r else "n/a"
        auc = f"{r['auc']:.4f}" if isinstance(r.get("auc"), float) else "n/a"
        tar = ", ".join(f"{far}: {v:.4f}" for far, v in r.get("tar_at_far", {}).items() if isinstance(v, float))
        thr = ", ".join(f"{far}: {v:.4f}" for far, v in r.get("thresholds", {}).items() if isinstance(v, float))
        lines.append(f"| {name} | {acc} | {auc} | {tar or 'n/a'} | {thr or 'n/a'} |")
    return lines


def _size_line(card: dict[str, Any]) -> str:
    """One sentence of the size and speed figures."""
    lat = card.get("latency_ms") or {}
    speed = ", ".join(f"{v} ms at batch {b}" for b, v in lat.items())
    return (f"{card.get('parameters')} parameters, {card.get('flops')} FLOPs per face, ONNX file "
            f"{card.get('onnx_bytes')} bytes; onnxruntime on one CPU thread (median): {speed or 'not measured'}.")


def card_markdown(card: dict[str, Any]) -> str:
    """The card as markdown: summary, input, output, provenance, evaluation, licence."""
    spec = card["input"]
    lines = [
        f"# Model card: {card['arch']} face embedding ({card['embedding_size']}-d)", "",
        f"ONNX file `{card['onnx']['file']}` (opset {card['onnx']['opset']}, {card['onnx']['dtype']}, "
        f"sha256 `{card['onnx']['sha256']}`).", "",
        "## Size and speed", "", _size_line(card), "",
        "## Input", "",
        f"`{spec['name']}`: {spec['dtype']} {spec['shape']} ({spec['layout']}), {spec['color']} aligned faces, "
        f"{spec['size']} x {spec['size']} pixels, value = (pixel / 255 - mean) / std with mean {spec['mean']} and "
        f"std {spec['std']}. The same is stored in the ONNX metadata (`icdface.*` keys).", "",
        "## Output", "",
        f"`{card['output']['name']}`: {card['output']['dtype']} {card['output']['shape']}. "
        f"{card['output']['note']}", "",
        "## Provenance", "", "| field | value |", "|---|---|",
        *_rows(card["training"]), *_rows({f"teacher {k}": v for k, v in card["teacher"].items()}), "",
        "## Evaluation", "", *_evaluation_lines(card["evaluation"]), "",
        "## Licence", "", card["licence"] or "Not stated: fill in the licence before you publish this model.", "",
    ]
    return "\n".join(lines)
