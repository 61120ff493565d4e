"""The preprocessing metadata of exported ONNX models: written and read back, malformed entries refused."""
from __future__ import annotations

import json

import pytest

from common.errors import ConfigError
from models.onnx_metadata import PREFIX, preprocessing_metadata, read_preprocessing


def test_round_trip() -> None:
    meta = preprocessing_metadata(112, "NHWC", "BGR", (0.5, 0.4, 0.3), [0.2, 0.25, 1 / 255])
    assert read_preprocessing(meta, "m") == {"input_size": 112, "input_layout": "NHWC", "color": "BGR",
                                             "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 1 / 255]}


def test_a_model_without_the_keys_has_none() -> None:
    assert read_preprocessing({"other": "1"}, "m") is None


@pytest.mark.parametrize(("key", "value", "message"), [
    ("input_size", "0", "input_size"), ("input_size", "true", "input_size"), ("input_layout", '"CHW"', "input_layout"),
    ("color", '"rgb"', "color"), ("mean", "[0.5, 0.5]", "mean"), ("std", "[0.5, 0, 0.5]", "non-zero"),
    ("mean", "not json", "not JSON"), ("std", '[1, 1, "x"]', "std"),
])
def test_malformed_values_name_the_key(key: str, value: str, message: str) -> None:
    meta = preprocessing_metadata(112, "NCHW", "RGB", [0.5] * 3, [0.5] * 3)
    meta[PREFIX + key] = value
    with pytest.raises(ConfigError, match=message) as err:
        read_preprocessing(meta, "model.onnx")
    assert "model.onnx" in str(err.value) and PREFIX + key in str(err.value)


def test_some_keys_but_not_all_is_an_error() -> None:
    meta = preprocessing_metadata(112, "NCHW", "RGB", [0.5] * 3, [0.5] * 3)
    del meta[PREFIX + "std"]
    with pytest.raises(ConfigError, match="lacks icdface.std"):
        read_preprocessing(meta, "m")
    assert json.loads(meta[PREFIX + "mean"]) == [0.5, 0.5, 0.5]
