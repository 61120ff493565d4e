"""Pair-set readers: LFW pairs.txt parsing and the restricted insightface .bin unpickler."""
from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError
from evaluation.binfile import load_bin
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


def test_bin_python3_pickle(tmp_path: Path) -> None:
    path = tmp_path / "lfw.bin"
    bins = [b"\xff\xd8img%d" % k for k in range(4)]
    path.write_bytes(pickle.dumps((bins, [True, False]), protocol=pickle.HIGHEST_PROTOCOL))
    loaded, issame = load_bin(path)
    assert loaded == bins
    assert issame.dtype == bool and issame.tolist() == [True, False]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_bin_numpy_issame_and_array_images(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "cfp.bin"
    bins = [b"abc", bytearray(b"de"), np.frombuffer(b"fgh", dtype=np.uint8).copy(), b""]
    issame = np.array([False, True])
    path.write_bytes(pickle.dumps((bins, issame), protocol=protocol))
    loaded, flags = load_bin(path)
    assert loaded == [b"abc", b"de", b"fgh", b""]
    assert all(type(item) is bytes for item in loaded)
    assert flags.tolist() == [False, True]


def _python2_pickle(bins: list[bytes], issame: list[bool]) -> bytes:
    """Protocol-2 bytes as Python 2's cPickle writes them: images as SHORT_BINSTRING/BINSTRING."""
    out = bytearray(b"\x80\x02]q\x00(")
    for item in bins:
        out += (b"U" + bytes([len(item)]) if len(item) < 256 else b"T" + struct.pack("<i", len(item))) + item
    out += b"e]q\x01("
    for flag in issame:
        out += b"\x88" if flag else b"\x89"
    out += b"e\x86q\x02."
    return bytes(out)


def _python2_numpy_bool_array(values: bytes) -> bytes:
    """The opcodes Python 2 numpy writes for a 1-D bool array (without PROTO and STOP)."""

    def short(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + short(b"b") + b"\x87R"
        + b"(K\x01" + b"K" + bytes([len(values)]) + b"\x85cnumpy\ndtype\n" + short(b"b1") + b"K\x00K\x01\x87R"
        + b"(K\x03" + short(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + short(values) + b"tb"
    )


def test_bin_python2_pickle(tmp_path: Path) -> None:
    path = tmp_path / "old.bin"
    bins = [b"\x89PNG\xff\x00" * 3, b"x" * 300, b"\xff\xd8\xff", b"y"]
    path.write_bytes(_python2_pickle(bins, [True, False]))
    loaded, flags = load_bin(path)
    assert loaded == bins
    assert flags.tolist() == [True, False]

    with_numpy = tmp_path / "old_numpy.bin"
    bins_part = _python2_pickle(bins + [b"z", b"w"], [])[: -len(b"]q\x01(e\x86q\x02.")]
    with_numpy.write_bytes(bins_part + _python2_numpy_bool_array(b"\x01\x00\x01") + b"\x86.")
    loaded, flags = load_bin(with_numpy)
    assert loaded == bins + [b"z", b"w"]
    assert flags.tolist() == [True, False, True]


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


class _CallsEval:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, ("1 + 1",))


def test_bin_refuses_command_execution(tmp_path: Path) -> None:
    marker = tmp_path / "pwned_x"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([b"a", _RunsCommand(f"touch {marker}")], [True])))
    with pytest.raises(ConfigError) as err:
        load_bin(path)
    assert str(path) in str(err.value) and "system" in str(err.value)
    assert not marker.exists()


def test_bin_refuses_eval_and_subprocess(tmp_path: Path) -> None:
    path = tmp_path / "evil2.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b"], _CallsEval())))
    with pytest.raises(ConfigError, match="builtins.eval"):
        load_bin(path)
    crafted = tmp_path / "evil3.bin"
    crafted.write_bytes(b"\x80\x02csubprocess\ncheck_output\nq\x00.")
    with pytest.raises(ConfigError, match="subprocess.check_output"):
        load_bin(crafted)


def test_bin_truncated_and_malformed(tmp_path: Path) -> None:
    whole = pickle.dumps(([b"a" * 50, b"b" * 50], [True]))
    truncated = tmp_path / "cut.bin"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ConfigError, match="cut.bin"):
        load_bin(truncated)
    for name, obj in [
        ("count.bin", ([b"a", b"b", b"c"], [True])),
        ("shape.bin", {"bins": [b"a", b"b"]}),
        ("flags.bin", ([b"a", b"b"], ["yes"])),
        ("items.bin", ([b"a", 3], [True])),
        ("nopairs.bin", ([], [])),
    ]:
        path = tmp_path / name
        path.write_bytes(pickle.dumps(obj))
        with pytest.raises(ConfigError, match=name):
            load_bin(path)
    with pytest.raises(ConfigError, match="missing.bin"):
        load_bin(tmp_path / "missing.bin")
