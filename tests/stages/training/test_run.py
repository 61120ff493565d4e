"""`stages.training.run`: what `build_run` refuses before anything is built."""
from __future__ import annotations

import pytest

from common.errors import ConfigError
from config import PipelineConfig, apply_overrides
from stages.training.run import check_sample_rate


@pytest.mark.parametrize("sets, key", [
    (['loss.method="adadistill"', "loss.sample_rate=0.5"], "loss.sample_rate"),
    (['loss.method="fcd"', "loss.margin_weight=0.0", "loss.sample_rate=0.5"], "loss.margin_weight"),
])
def test_sample_rate_without_a_margin_head_to_sample_is_refused(sets, key):
    cfg = apply_overrides(PipelineConfig(), sets)
    with pytest.raises(ConfigError, match=key):
        check_sample_rate(cfg, cfg.loss.method, cfg.loss.margin_weight > 0)
    check_sample_rate(apply_overrides(cfg, ["loss.sample_rate=1.0"]), cfg.loss.method, False)


@pytest.mark.parametrize("value", ["0.0", "1.5", "-0.2", "nan"])
def test_sample_rate_outside_zero_one_is_a_config_error_naming_the_key(value):
    with pytest.raises(ConfigError, match="loss.sample_rate"):
        apply_overrides(PipelineConfig(), [f"loss.sample_rate={value}"])
