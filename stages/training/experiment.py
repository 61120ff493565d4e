"""Which settings make a checkpoint another experiment: the config sections a resume must match.

A checkpoint stores its whole resolved config. On resume it is read back through
`config.config_from_dict` (defaults filled in for keys added since, retired keys translated), so a
checkpoint written before a new key existed matches a config that leaves the key at its default;
settings that only say how the run executes (`EXECUTION_KEYS`) may change between the two.
"""
from __future__ import annotations

from typing import Any

from config import PipelineConfig, config_from_dict, to_dict

# Sections whose change makes a checkpoint a different experiment (refused on resume).
RESUME_SECTIONS = ("data", "student", "loss", "icd", "rkd", "ekd", "adadistill", "margindistillation", "cache")
# Keys of those sections that change how a run executes, not what it computes.
EXECUTION_KEYS = ("data.workers",)


def experiment_sections(cfg: PipelineConfig) -> dict[str, dict[str, Any]]:
    """The RESUME_SECTIONS of `cfg` as plain dicts, without the EXECUTION_KEYS."""
    d = to_dict(cfg)
    out = {s: dict(d[s]) for s in RESUME_SECTIONS}
    for key in EXECUTION_KEYS:
        section, name = key.split(".")
        out[section].pop(name, None)
    return out


def changed_sections(stored: dict[str, Any], cfg: PipelineConfig, source: str) -> list[str]:
    """The RESUME_SECTIONS in which the stored config dict of checkpoint `source` differs from `cfg`."""
    then, now = experiment_sections(config_from_dict(stored, source)), experiment_sections(cfg)
    return [s for s in RESUME_SECTIONS if then[s] != now[s]]
