"""Fixtures of the stage tests: a tiny extracted run, a trained run, and held-out pair sets."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from readers.synthetic import SyntheticDataset, write_pair_set
from tests.conftest import invoke, tiny_settings


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory, teacher_weights: Path) -> tuple[Path, list[str], dict]:
    run = tmp_path_factory.mktemp("run")
    settings = tiny_settings(run, teacher_weights)
    code, out, summary = invoke("extract", settings)
    assert code == 0, out
    return run, settings, summary


@pytest.fixture(scope="module")
def pair_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic LFW-style pair set (8 identities x 4 images, 40 pairs) and the same pairs as a `.bin`
    written by `convert`."""
    root = tmp_path_factory.mktemp("pairs")
    held = SyntheticDataset(8, 4, 16, seed=4242, difficulty=1.0)
    pairs_txt = Path(write_pair_set(held, root / "heldout", 40, seed=0))
    from stages.convert import pairs_to_bin

    bin_path = root / "heldout.bin"
    pairs_to_bin(pairs_txt, None, bin_path)  # `convert`: the test comparing the two checks it
    return pairs_txt, bin_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, teacher_weights: Path) -> list[str]:
    run = tmp_path_factory.mktemp("evalrun")
    settings = tiny_settings(run, teacher_weights)
    assert invoke("extract", settings)[0] == 0
    code, out, _ = invoke("distill", settings + ["train.steps=3"])
    assert code == 0, out
    return settings
