"""Training checkpoints, the one format `train`, `distill`, `evaluate` and `demo` share.

A checkpoint is a dict saved by `save_checkpoint` (atomic) and read by `load_checkpoint` (torch's
restricted unpickler). What the training loop stores is described in `checkpoints.format`.
"""
from checkpoints.format import (
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    nonfinite_entries,
    prune_checkpoints,
    save_checkpoint,
)
from checkpoints.rng import capture_rng, restore_rng, seed_everything

__all__ = [
    "capture_rng", "checkpoint_path", "latest_checkpoint", "list_checkpoints", "load_checkpoint", "nonfinite_entries",
    "prune_checkpoints", "restore_rng", "save_checkpoint", "seed_everything",
]
