"""`readers.synthetic.pairs`: the LFW-style held-out pair writer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import ConfigError
from readers.synthetic import SyntheticDataset, write_pair_set


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
