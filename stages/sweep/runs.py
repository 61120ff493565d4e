"""`SweepRun`: one variant on one seed of a sweep, the record `command` fills and `report` reads."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.verify import SetResult


@dataclass
class SweepRun:
    """One variant on one seed: where it trained, how fast, and its results by set name."""

    variant: str
    seed: int
    run_dir: Path
    images_per_s: float
    results: dict[str, SetResult]
    compactness: dict[str, Any] | None  # training-set student vs cached teacher (`training_compactness`)

    @property
    def tag(self) -> str:
        return f"{self.variant}/seed{self.seed}"
