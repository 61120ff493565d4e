"""`readers.synthetic.renderer`: identities per seed, nuisances per difficulty, cross-process determinism, speed."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from readers.synthetic import SyntheticDataset


def _digest(seed: int, identity: int, index: int, size: int, difficulty: float) -> str:
    ds = SyntheticDataset(identity + 1, index + 1, size, seed, difficulty)
    return hashlib.sha256(ds.render(identity, index).tobytes()).hexdigest()


def test_deterministic_across_processes() -> None:
    code = (
        "import hashlib; from readers import SyntheticDataset; "
        "print(hashlib.sha256(SyntheticDataset(4, 3, 32, 11, 1.0).render(3, 2).tobytes()).hexdigest())"
    )
    root = Path(__file__).resolve().parents[3]
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


@pytest.mark.timeout(5)  # 41 images at 112 px take ~0.13 s (~3 ms each); the limit only catches pathological slow-downs
def test_render_speed_is_in_the_right_range() -> None:
    ds = SyntheticDataset(4, 10, 112, 0, 1.0)
    ds.load(0)
    for i in range(len(ds)):
        ds.load(i)


# What the renderer of each RENDERER_VERSION draws, pinned: a teacher cache records the version, so a change
# to the faces without a bump would let an old cache be accepted against new images. sha256 of the uint8
# pixels of every image of (identities, images each, size, seed, difficulty).
PINNED_RENDERS = {
    1: {(3, 2, 32, 7, 1.0): "fb071b8fc43b7bb063b842fb42311c740577c3bce8f251247b183428541e5206",
        (2, 2, 112, 11, 0.5): "6185352afa29dacdf0fe0ac7e6785b3938ea489c53370a9048168a9db7b99865"},
}


def test_the_renders_of_this_renderer_version_are_the_pinned_ones() -> None:
    from readers.synthetic import RENDERER_VERSION

    assert RENDERER_VERSION in PINNED_RENDERS, "a new RENDERER_VERSION: pin its renders here"
    for (ids, per, size, seed, difficulty), digest in PINNED_RENDERS[RENDERER_VERSION].items():
        ds = SyntheticDataset(ids, per, size, seed=seed, difficulty=difficulty)
        h = hashlib.sha256()
        for i in range(len(ds)):
            h.update(np.ascontiguousarray(ds.load(i)).tobytes())
        assert h.hexdigest() == digest, ("the synthetic faces changed without a RENDERER_VERSION bump: bump it "
                                         "(old caches are then refused) and pin the new renders")
