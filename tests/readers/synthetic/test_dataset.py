"""`readers.synthetic.dataset`: keys, labels and shapes, argument checks, determinism, ImageRows over it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from common.errors import ConfigError
from readers.synthetic import SyntheticDataset
from readers.torch_rows import ImageRows


def test_keys_labels_and_shapes() -> None:
    ds = SyntheticDataset(3, 4, 16, 5, 1.0)
    assert len(ds) == 12 and ds.num_classes == 3
    assert ds.keys[:5] == ["syn/00000/0000", "syn/00000/0001", "syn/00000/0002", "syn/00000/0003", "syn/00001/0000"]
    assert ds.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert ds.describe()["root"] == "synthetic:v1:seed=5:difficulty=1"
    for size in (16, 32, 48, 112):
        for difficulty in (0.0, 1.0, 2.0):
            img = SyntheticDataset(2, 2, size, 0, difficulty).load(3)
            assert img.shape == (size, size, 3) and img.dtype == np.uint8
            assert img.std() > 10  # not blank


@pytest.mark.parametrize("kwargs", [dict(image_size=24), dict(image_size=8), dict(seed=-1), dict(difficulty=-0.5),
                                    dict(identities=0)])
def test_invalid_arguments_are_config_errors(kwargs: dict) -> None:
    args = dict(identities=2, images_per_identity=2, image_size=16, seed=0, difficulty=1.0) | kwargs
    with pytest.raises(ConfigError):
        SyntheticDataset(**args)


def test_deterministic_regardless_of_order_and_instance() -> None:
    a = SyntheticDataset(6, 5, 32, 11, 1.0)
    forward = [a.load(i) for i in range(len(a))]
    b = SyntheticDataset(6, 5, 32, 11, 1.0)
    backward = {i: b.load(i) for i in reversed(range(len(b)))}
    assert all(np.array_equal(forward[i], backward[i]) for i in range(len(a)))
    # a larger data set with the same seed renders the same identities and images
    c = SyntheticDataset(9, 7, 32, 11, 1.0)
    assert np.array_equal(c.render(4, 3), forward[4 * 5 + 3])
    # images of one identity differ from one another at difficulty 1
    assert not np.array_equal(forward[0], forward[1])


def test_image_rows_over_synthetic() -> None:
    ds = SyntheticDataset(2, 3, 16, 0, 1.0)
    images, labels, rows, oks, _ = next(iter(DataLoader(ImageRows(ds, np.array([5, 0])), batch_size=2)))
    assert images.dtype == torch.uint8 and images.shape == (2, 16, 16, 3)
    assert labels.tolist() == [1, 0] and rows.tolist() == [5, 0] and oks.all()
    assert np.array_equal(images[0].numpy(), ds.load(5))
