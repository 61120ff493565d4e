"""hflip, flip_fuse and the input normalisation against naive references."""
from __future__ import annotations

import numpy as np
import torch

from models.preprocess import flip_fuse, hflip, normalize_pixels, student_input


def test_hflip_mirrors_width_for_numpy_and_torch() -> None:
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(2, 3, 5, 3), dtype=np.uint8)
    naive = np.stack([[[img[y, img.shape[1] - 1 - x] for x in range(img.shape[1])] for y in range(img.shape[0])]
                      for img in batch])
    assert np.array_equal(hflip(batch), naive)
    assert np.array_equal(hflip(batch[0]), naive[0])  # one image [H, W, 3]
    assert torch.equal(hflip(torch.from_numpy(batch)), torch.from_numpy(naive))
    assert np.array_equal(hflip(hflip(batch)), batch)


def test_flip_fuse_sums_raw_outputs_then_normalises() -> None:
    a = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 5.0]])
    out = flip_fuse(a, b)
    expected = [[3 / np.sqrt(10), 1 / np.sqrt(10)], [0.0, 1.0]]
    assert torch.allclose(out, torch.tensor(expected, dtype=torch.float32))
    # the sum of unit views would give [[1, 1] / sqrt 2, ...]: the raw norms must matter
    assert not torch.allclose(out, flip_fuse(a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)))


def test_normalize_pixels_per_channel() -> None:
    pixels = torch.tensor([0.0, 51.0, 255.0]).view(1, 3, 1, 1)
    out = normalize_pixels(pixels, (0.5, 0.0, 0.5), (0.5, 1 / 255, 0.25))
    assert torch.allclose(out.view(-1), torch.tensor([-1.0, 51.0, 2.0]))


def test_student_input_is_insightface_normalisation_in_nchw() -> None:
    images = torch.randint(0, 256, (2, 4, 6, 3), dtype=torch.uint8)
    x = student_input(images)
    assert x.shape == (2, 3, 4, 6) and x.dtype == torch.float32
    naive = images.permute(0, 3, 1, 2).double() / 127.5 - 1.0
    assert torch.allclose(x.double(), naive, atol=1e-6)
