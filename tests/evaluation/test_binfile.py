"""`evaluation.binfile`: the restricted insightface .bin unpickler (Python 2 and 3 pickles, refusals, damage)."""
from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError
from evaluation.binfile import load_bin


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
