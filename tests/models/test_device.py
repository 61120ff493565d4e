"""`resolve_device`: the one rule for `run.device`."""
from __future__ import annotations

import pytest
import torch

from common.errors import ConfigError
from models.device import resolve_device


def test_auto_and_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_bad_names_are_config_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="run.device"):
        resolve_device("gpu please")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_to_device_on_the_cpu_is_a_plain_copy_with_the_dtype() -> None:
    import torch

    from models.device import to_device

    x = torch.arange(4, dtype=torch.int64)
    y = to_device(x, torch.device("cpu"), torch.float32)
    assert y.dtype == torch.float32 and torch.equal(y, x.float())
    assert to_device(x, torch.device("cpu")) is x
