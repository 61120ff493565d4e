"""The model card: evaluation figures picked from an evaluate summary, and the markdown rendering."""
from __future__ import annotations

from typing import Any

from deploy.model_card import CARD_FORMAT, card_markdown, evaluation_summary, model_card

RECORD = {"accuracy_mean": 0.9, "accuracy_std": 0.01, "auc": 0.95, "tar_at_far": {"1e-3": 0.5},
          "thresholds": {"1e-3": 0.31}, "roc_plot": "x.png"}
SIZE = {"parameters": 1234567, "flops": 875000000, "onnx_bytes": 4900000, "latency_ms": {"1": 3.5, "32": 80.25}}


def test_evaluation_summary_of_one_and_of_several_models() -> None:
    one = {"model": "student", "sets": {"lfw": RECORD}}
    assert evaluation_summary(one, "student") == {"lfw": {k: RECORD[k] for k in ("accuracy_mean", "accuracy_std",
                                                                               "auc", "tar_at_far", "thresholds")}}
    assert evaluation_summary(one, "teacher") == {}
    several = {"models": {"teacher": {"model": "teacher", "sets": {"lfw": {"auc": 0.99}}},
                          "student": {"model": "student", "sets": {"lfw": {"auc": 0.8}}}}}
    assert evaluation_summary(several, "student") == {"lfw": {"auc": 0.8}}


def _card(evaluation: dict[str, Any]) -> dict[str, Any]:
    return model_card(arch="mobilefacenet", embedding_size=128,
                      input_spec={"name": "input", "shape": ["batch", 3, 112, 112], "dtype": "float32",
                                  "layout": "NCHW", "color": "RGB", "size": 112, "mean": [0.5] * 3, "std": [0.5] * 3},
                      output_spec={"name": "embedding", "shape": ["batch", 128], "dtype": "float32", "note": "raw"},
                      onnx={"file": "student.onnx", "opset": 17, "dtype": "float32", "sha256": "ab"},
                      training={"command": "distill"}, teacher={"arch": "iresnet50"}, evaluation=evaluation,
                      size=SIZE)


def test_markdown_holds_the_input_spec_the_figures_and_the_licence_gap() -> None:
    card = _card({"source": "runs/x/evaluate.json", "sets": {"lfw": RECORD}})
    assert card["format"] == CARD_FORMAT and card["licence"] == ""
    text = card_markdown(card)
    assert "112 x 112" in text and "mean [0.5, 0.5, 0.5]" in text and "teacher arch | iresnet50" in text
    assert "| lfw | 0.9000 ± 0.0100 | 0.9500 | 1e-3: 0.5000 | 1e-3: 0.3100 |" in text
    assert {k: card[k] for k in SIZE} == SIZE
    assert "1234567 parameters, 875000000 FLOPs per face, ONNX file 4900000 bytes" in text
    assert "3.5 ms at batch 1, 80.25 ms at batch 32" in text
    assert "fill in the licence" in text
    assert "Not evaluated" in card_markdown(_card({}))
