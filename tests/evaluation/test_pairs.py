"""`evaluation.pairs`: LFW pairs.txt parsing and load_pair_set for pair files and .bin sets."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
from PIL import Image

from common.errors import ConfigError
from evaluation.pairs import PairSet, load_pair_set, read_lfw_pairs


def _touch_images(root: Path, names: dict[str, int], suffix: str = ".jpg") -> None:
    for name, count in names.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(1, count + 1):
            (root / name / f"{name}_{i:04d}{suffix}").write_bytes(f"{name}{i}".encode())


@pytest.fixture()
def lfw(tmp_path: Path) -> Path:
    root = tmp_path / "lfwset"
    _touch_images(root, {"Alice_A": 3, "Bob_B": 2})
    _touch_images(root, {"Carol": 1}, suffix=".png")
    return root


def test_both_line_forms_with_header_and_blank_lines(lfw: Path) -> None:
    pairs_txt = lfw / "pairs.txt"
    pairs_txt.write_text("10\t300\n\nAlice_A\t1\t3\nAlice_A 2 Carol 1\n  \nBob_B 1   2\nCarol\t1\tAlice_A\t1\n")
    pairs = read_lfw_pairs(pairs_txt, lfw)
    assert pairs == [
        (lfw / "Alice_A" / "Alice_A_0001.jpg", lfw / "Alice_A" / "Alice_A_0003.jpg", True),
        (lfw / "Alice_A" / "Alice_A_0002.jpg", lfw / "Carol" / "Carol_0001.png", False),
        (lfw / "Bob_B" / "Bob_B_0001.jpg", lfw / "Bob_B" / "Bob_B_0002.jpg", True),
        (lfw / "Carol" / "Carol_0001.png", lfw / "Alice_A" / "Alice_A_0001.jpg", False),
    ]


def test_single_integer_header_and_no_header(lfw: Path) -> None:
    with_header = lfw / "a.txt"
    with_header.write_text("2\nAlice_A 1 2\nBob_B 1 2\n")
    without = lfw / "b.txt"
    without.write_text("Alice_A 1 2\nBob_B 1 2\n")
    assert read_lfw_pairs(with_header, lfw) == read_lfw_pairs(without, lfw)
    assert len(read_lfw_pairs(without, lfw)) == 2


@pytest.mark.parametrize(
    "bad_line", ["Alice_A 1", "Alice_A x 2", "Alice_A 1 Bob_B 2 extra", "Alice_A -1 2", "7"]
)
def test_bad_line_names_file_and_line_number(lfw: Path, bad_line: str) -> None:
    pairs_txt = lfw / "pairs.txt"
    pairs_txt.write_text(f"10 300\nAlice_A 1 2\n\n{bad_line}\nBob_B 1 2\n")
    with pytest.raises(ConfigError) as err:
        read_lfw_pairs(pairs_txt, lfw)
    assert f"{pairs_txt}:4" in str(err.value)


def test_missing_image_names_path_and_line(lfw: Path) -> None:
    pairs_txt = lfw / "pairs.txt"
    pairs_txt.write_text("Alice_A 1 2\nBob_B 1 9\n")
    with pytest.raises(ConfigError) as err:
        read_lfw_pairs(pairs_txt, lfw)
    message = str(err.value)
    assert f"{pairs_txt}:2" in message and "Bob_B_0009" in message


@pytest.mark.parametrize("form", ["same", "different"])
def test_identity_names_cannot_leave_the_root(lfw: Path, form: str) -> None:
    outside = lfw.parent / "outside"
    _touch_images(outside, {"Eve": 2})
    for i in (1, 2):  # what `<outside>/Eve i j` would read: <outside>/Eve_000i.jpg
        (outside / f"Eve_{i:04d}.jpg").write_bytes(b"secret")
    for name in (str(outside / "Eve"), "../outside/Eve", "..", "Alice_A/../Bob_B", "sub\\Eve"):
        pairs_txt = lfw / "pairs.txt"
        line = f"{name} 1 2" if form == "same" else f"Alice_A 1 {name} 2"
        pairs_txt.write_text(f"Alice_A 1 2\n\n{line}\n")
        with pytest.raises(ConfigError) as err:
            read_lfw_pairs(pairs_txt, lfw)
        message = str(err.value)
        assert f"{pairs_txt}:3" in message and "identity name" in message, name


def test_missing_pair_file_and_empty_file(lfw: Path) -> None:
    with pytest.raises(ConfigError, match="nothere.txt"):
        read_lfw_pairs(lfw / "nothere.txt", lfw)
    empty = lfw / "empty.txt"
    empty.write_text("10 300\n\n")
    with pytest.raises(ConfigError, match="no pairs"):
        read_lfw_pairs(empty, lfw)


def test_load_pair_set_lfw_embeds_each_image_once(lfw: Path) -> None:
    pairs_txt = lfw / "pairs.txt"
    pairs_txt.write_text("Alice_A 1 2\nAlice_A 1 Bob_B 1\nBob_B 1 2\nAlice_A 2 Carol 1\n")
    pair_set = load_pair_set(pairs_txt)
    assert isinstance(pair_set, PairSet)
    assert pair_set.name == "lfwset"
    assert len(pair_set) == 4
    assert len(pair_set.images) == 5
    assert pair_set.issame.tolist() == [True, False, True, False]
    pairs = read_lfw_pairs(pairs_txt, lfw)
    for p, (path1, path2, _) in enumerate(pairs):
        assert pair_set.images[pair_set.idx1[p]] == path1
        assert pair_set.images[pair_set.idx2[p]] == path2
    names = [Path(image).parent.name for image in pair_set.images]
    assert pair_set.labels is not None
    for a in range(5):
        for b in range(5):
            assert (names[a] == names[b]) == (pair_set.labels[a] == pair_set.labels[b])
    assert pair_set.image_bytes(0) == b"Alice_A1"

    other = lfw / "view2.txt"
    other.write_text("Alice_A 1 2\n")
    assert load_pair_set(other, lfw).name == "view2"


def test_load_pair_set_bin_and_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "agedb_30.bin"
    bins = [bytes([k]) * 3 for k in range(6)]
    path.write_bytes(pickle.dumps((bins, [True, False, True])))
    pair_set = load_pair_set(path)
    assert pair_set.name == "agedb_30"
    assert pair_set.idx1.tolist() == [0, 2, 4] and pair_set.idx2.tolist() == [1, 3, 5]
    assert pair_set.issame.tolist() == [True, False, True]
    assert pair_set.image_bytes(3) == bins[3]
    assert pair_set.labels is None
    with pytest.raises(ConfigError, match="unsupported"):
        load_pair_set(tmp_path / "pairs.csv")


def test_pair_set_decode_says_why_an_image_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (90, 120, 150)).save(buf, format="PNG")
    png = buf.getvalue()
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps(([png, png[:-30]], [True])))
    with pytest.raises(ConfigError, match=r"lfw\.bin#1 cannot be decoded: truncated"):
        load_pair_set(path).decode(16)
    path.write_bytes(pickle.dumps(([png, png], [True])))
    monkeypatch.setattr("readers.base.MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ConfigError, match=r"lfw\.bin#0 cannot be decoded: too large: 24 x 24 pixels > 100"):
        load_pair_set(path).decode(16)
