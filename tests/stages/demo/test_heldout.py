"""`stages.demo.heldout`: the all-vs-all held-out pair file and its evaluation."""
from __future__ import annotations

from itertools import combinations
from pathlib import Path

from evaluation.pairs import read_lfw_pairs
from stages.demo.heldout import all_pair_lines


def test_all_pair_lines_hold_every_genuine_pair_once_and_distinct_impostors(tmp_path: Path) -> None:
    lines, genuine, impostor = all_pair_lines(5, 4, seed=3)
    for c in range(5):
        (tmp_path / f"id_{c:05d}").mkdir()
        for i in range(1, 5):
            (tmp_path / f"id_{c:05d}" / f"id_{c:05d}_{i:04d}.png").touch()
    (tmp_path / "all.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    pairs = read_lfw_pairs(tmp_path / "all.txt", tmp_path)
    keys = [(a.stem, b.stem) for a, b, _ in pairs]
    assert len(set(keys)) == len(keys) == genuine + impostor
    same = {k for k, (_, _, s) in zip(keys, pairs, strict=True) if s}
    expected = {(f"id_{c:05d}_{i:04d}", f"id_{c:05d}_{j:04d}")
                for c in range(5) for i, j in combinations(range(1, 5), 2)}
    assert same == expected and genuine == 5 * 6
    # 20 images: 190 pairs, 30 genuine, so all 160 impostor pairs (fewer than the default 100,000)
    assert impostor == 160
    assert all(a.parent.name != b.parent.name for a, b, s in pairs if not s)


def test_all_pair_lines_are_seeded() -> None:
    assert all_pair_lines(6, 3, seed=1) == all_pair_lines(6, 3, seed=1)
    assert all_pair_lines(6, 3, seed=1)[0] != all_pair_lines(6, 3, seed=2)[0]
