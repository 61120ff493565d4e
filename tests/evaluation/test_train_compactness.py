"""`evaluation.train_compactness`: the student against the cached teacher on training identities, both
read as the images themselves (view 0), not their flips."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cache import TeacherCache, cache_file
from config import load_config
from evaluation.compactness import sample_rows, similarity_stats
from evaluation.train_compactness import training_compactness
from readers import build_dataset


class Pixels:
    """A stand-in model: the flattened image, so its statistics can be computed here independently."""

    def embed(self, images: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(images), dtype=torch.float32).flatten(1)


def test_teacher_and_student_statistics_are_those_of_the_unflipped_images(trained: list[str], tmp_path: Path) -> None:
    cfg = load_config(None, trained)
    record = training_compactness(cfg, Pixels(), tmp_path, "pixels")  # type: ignore[arg-type]
    assert record is not None
    with TeacherCache(cache_file(cfg.cache.path, cfg.run.dir), in_ram="never") as cache:
        rows = sample_rows(cache.labels, cache.done, 2000, cfg.run.seed)
        view0 = cache.targets(rows, np.zeros_like(rows))
        view1 = cache.targets(rows, np.ones_like(rows))
        labels = cache.labels[rows]
    assert record["teacher"] == similarity_stats(view0, labels)
    assert record["teacher"] != similarity_stats(view1, labels)  # the flips differ, so the test can tell
    dataset = build_dataset(cfg.data)
    images = np.stack([dataset.load(int(r)) for r in rows])
    student = F.normalize(torch.as_tensor(images, dtype=torch.float32).flatten(1), dim=-1).numpy()
    assert record["student"] == similarity_stats(student, labels)
    assert record["rows"] == len(rows) and Path(record["plot"]).is_file()
