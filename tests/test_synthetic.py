"""The synthetic face generator and the LFW-style pair-set writer."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from config import ConfigError
from readers import SyntheticDataset, write_pair_set
from readers.torch_rows import ImageRows


def _digest(seed: int, identity: int, index: int, size: int, difficulty: float) -> str:
    ds = SyntheticDataset(identity + 1, index + 1, size, seed, difficulty)
    return hashlib.sha256(ds.render(identity, index).tobytes()).hexdigest()


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


def test_deterministic_across_processes() -> None:
    code = (
        "import hashlib; from readers import SyntheticDataset; "
        "print(hashlib.sha256(SyntheticDataset(4, 3, 32, 11, 1.0).render(3, 2).tobytes()).hexdigest())"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": "123"}
    remote = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True)
    assert remote.stdout.strip() == _digest(11, 3, 2, 32, 1.0)


def test_different_seeds_give_different_identities() -> None:
    a, b = SyntheticDataset(4, 1, 32, 1, 0.0), SyntheticDataset(4, 1, 32, 2, 0.0)
    for c in range(4):
        assert a.identity(c).face_w != b.identity(c).face_w
        assert np.abs(a.load(c).astype(int) - b.load(c).astype(int)).mean() > 5


def _pixel_distances(ds: SyntheticDataset) -> tuple[float, float]:
    """Mean squared pixel distance over same-identity and over different-identity pairs."""
    x = np.stack([ds.load(i) for i in range(len(ds))]).reshape(len(ds), -1).astype(np.float64)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).mean(-1)
    same = ds.labels[:, None] == ds.labels[None, :]
    off_diag = ~np.eye(len(ds), dtype=bool)
    return d[same & off_diag].mean(), d[~same].mean()


def test_same_identity_closer_than_different_in_pixel_space() -> None:
    same0, diff0 = _pixel_distances(SyntheticDataset(8, 4, 32, 3, 0.0))
    assert same0 == 0.0 < diff0  # clean: every image of an identity is the canonical face
    same1, diff1 = _pixel_distances(SyntheticDataset(8, 4, 32, 3, 1.0))
    assert 0.0 < same1 < diff1
    same2, _ = _pixel_distances(SyntheticDataset(8, 4, 32, 3, 2.0))
    assert same2 > same1  # nuisances grow with difficulty


def test_render_speed_is_in_the_right_range() -> None:
    ds = SyntheticDataset(4, 10, 112, 0, 1.0)
    ds.load(0)
    start = time.perf_counter()
    for i in range(len(ds)):
        ds.load(i)
    per_image = (time.perf_counter() - start) / len(ds)
    assert per_image < 0.03  # target ~2 ms; the bound only catches pathological slow-downs on busy machines


def test_image_rows_over_synthetic() -> None:
    ds = SyntheticDataset(2, 3, 16, 0, 1.0)
    images, labels, rows, oks = next(iter(DataLoader(ImageRows(ds, np.array([5, 0])), batch_size=2)))
    assert images.dtype == torch.uint8 and images.shape == (2, 16, 16, 3)
    assert labels.tolist() == [1, 0] and rows.tolist() == [5, 0] and oks.all()
    assert np.array_equal(images[0].numpy(), ds.load(5))


def test_write_pair_set_lfw_format(tmp_path: Path) -> None:
    ds = SyntheticDataset(5, 3, 16, 9, 1.0)
    out = tmp_path / "heldout"
    pairs = write_pair_set(ds, out, 45, seed=1)
    assert pairs == out / "pairs.txt"
    lines = pairs.read_text().splitlines()
    assert lines[0] == "10\t2"  # 45 pairs -> 2 same + 2 different per fold
    body = [line.split("\t") for line in lines[1:]]
    assert len(body) == 40
    for fold in range(10):
        block = body[fold * 4:(fold + 1) * 4]
        assert [len(f) for f in block] == [3, 3, 4, 4]
        for f in block[:2]:
            assert f[0].startswith("id_") and f[1] != f[2]
        for f in block[2:]:
            assert f[0] != f[2]
    for f in body:
        names = [(f[0], f[1]), (f[0], f[2])] if len(f) == 3 else [(f[0], f[1]), (f[2], f[3])]
        for name, num in names:
            assert 1 <= int(num) <= 3 and (out / name / f"{name}_{int(num):04d}.png").is_file()
    assert sorted(p.name for p in out.iterdir())[:2] == ["id_00000", "id_00001"]
    assert len(list(out.glob("*/*.png"))) == 15
    png = np.asarray(Image.open(out / "id_00003" / "id_00003_0002.png").convert("RGB"))
    assert np.array_equal(png, ds.render(3, 1))
    first = pairs.read_text()
    assert write_pair_set(ds, out, 45, seed=1).read_text() == first
    assert write_pair_set(ds, out, 45, seed=2).read_text() != first
    assert [p.name for p in tmp_path.iterdir()] == ["heldout"]  # no temporary or old folders left


def test_write_pair_set_rejects_too_few_pairs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="num_pairs"):
        write_pair_set(SyntheticDataset(3, 2, 16, 0, 1.0), tmp_path / "p", 10, seed=0)
    with pytest.raises(ConfigError):
        write_pair_set(SyntheticDataset(1, 5, 16, 0, 1.0), tmp_path / "p", 40, seed=0)
    assert not (tmp_path / "p").exists()
