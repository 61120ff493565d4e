"""`ModelResult`: what the demo measured of one model, the record `command` fills and `report` reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evaluation.verify import SetResult
from stages.demo.heldout import ALL_PAIRS, SAMPLED


@dataclass
class ModelResult:
    """One model of the demo: its held-out results by set, training throughput and training-set compactness."""

    held_out: dict[str, SetResult]
    images_per_s: float
    compactness: dict[str, Any] | None = None
    checkpoint: str = ""
    size: dict[str, Any] = field(default_factory=dict)  # parameters, flops (models.size)

    @property
    def sampled(self) -> SetResult:
        return self.held_out[SAMPLED]

    @property
    def all_pairs(self) -> SetResult:
        return self.held_out[ALL_PAIRS]

    def public(self) -> dict[str, Any]:
        """Its entry in the summary's `models`: `eval` (the 1,000-pair set), `eval_all` (all-vs-all pairs)."""
        out: dict[str, Any] = {"eval": self.sampled.record, "eval_all": self.all_pairs.record,
                               "images_per_s": self.images_per_s, **self.size}
        if self.compactness:
            out["train_intra_gap"] = self.compactness["gap"]
        return out
