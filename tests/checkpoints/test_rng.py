"""`checkpoints.rng`: capture and restore of the Python, numpy and torch RNG states."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

import checkpoints as ckpt


def _draw() -> tuple:
    return (random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist(),
            torch.randint(0, 1000, (4,)).tolist())


def test_rng_capture_restore_reproduces_draws(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()
    state = ckpt.capture_rng()
    expected = _draw()
    _draw()
    ckpt.restore_rng(state)
    assert _draw() == expected
    path = ckpt.save_checkpoint(tmp_path / "rng.pt", {"rng": state})
    _draw()
    ckpt.restore_rng(ckpt.load_checkpoint(path)["rng"])
    assert _draw() == expected
