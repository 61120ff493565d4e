"""TensorBoard scalars of a training run, in `<run.dir>/tensorboard/` (the optional `tensorboard` extra).

`train.tensorboard`: auto (written when the package is installed), always (its absence is a config
error), never. Tags: `loss/total` and `loss/<term>` for each term of the method, `train/lr`,
`train/images_per_s`, `compactness/<stat>` (distill's teacher-student cosine and intra-class spreads)
and `verification/<set>` (the periodic verification accuracy). A resumed run purges the events after
its step, so a resumed curve has no doubled tail.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from common.errors import ConfigError

LOG_DIR = "tensorboard"
COMPACTNESS_STATS = ("ts_cos", "intra_teacher", "intra_student")
TRAIN_SCALARS = ("lr", "images_per_s")


def tensorboard_available() -> bool:
    """True when `torch.utils.tensorboard` can be imported (the tensorboard package is installed)."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def open_writer(run_dir: Path, mode: str, resume_step: int | None) -> Any:
    """A `SummaryWriter` on `<run_dir>/tensorboard` (events after `resume_step` purged), or None for mode
    never, or auto without the package; mode always without it is a ConfigError naming the key."""
    if mode == "never" or (mode == "auto" and not tensorboard_available()):
        return None
    if not tensorboard_available():
        raise ConfigError("config key 'train.tensorboard' is 'always' but tensorboard is not installed: "
                          "pip install -e '.[tensorboard]' (or set train.tensorboard = \"auto\")")
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / LOG_DIR), purge_step=None if resume_step is None else resume_step + 1)


def scalar_tag(name: str) -> str:
    """The TensorBoard tag of a `metrics.csv` column."""
    if name == "loss":
        return "loss/total"
    if name in TRAIN_SCALARS:
        return f"train/{name}"
    if name in COMPACTNESS_STATS:
        return f"compactness/{name}"
    return f"loss/{name}"


class Scalars:
    """One run's writer, shared by the hooks that write scalars (one event stream, so one purge on resume).

    `open` is idempotent (each hook calls it at its start); with no writer every method does nothing.
    """

    def __init__(self) -> None:
        self.writer: Any = None

    def open(self, run_dir: Path, mode: str, resume_step: int | None) -> None:
        if self.writer is None:
            self.writer = open_writer(run_dir, mode, resume_step)

    def add(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def add_row(self, row: dict[str, float]) -> None:
        """One `metrics.csv` row as scalars at its `step`."""
        for name, value in row.items():
            if name != "step":
                self.add(scalar_tag(name), value, int(row["step"]))

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
