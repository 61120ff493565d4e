"""Which settings make a checkpoint another experiment: the config sections a resume must match.

A checkpoint stores its whole resolved config. On resume it is read back through
`config.config_from_dict` (defaults filled in for keys added since, retired keys translated), so a
checkpoint written before a new key existed matches a config that leaves the key at its default;
settings that only say how the run executes (`EXECUTION_KEYS`) may change between the two. A method's
own section counts only for the run of that method (`METHOD_SECTIONS`: [icd] is no part of a `train` or
`fcd` run), and of [train], whose budget may grow on resume, only how batches are drawn counts
(`BATCH_KEYS`).
"""
from __future__ import annotations

from typing import Any

from config import PipelineConfig, config_from_dict, to_dict
from stages.training.methods import METHOD_SECTIONS, TRAIN

# Sections whose change makes a checkpoint a different experiment (refused on resume).
RESUME_SECTIONS = ("data", "student", "loss", "icd", "rkd", "ekd", "adadistill", "margindistillation", "cache")
# Keys of those sections that change how a run executes, not what it computes (the FAISS index is not
# read by training; where the cache and the bank live changes no number).
EXECUTION_KEYS = ("data.workers", "cache.index", "cache.ivf_nlist", "cache.ivf_nprobe", "cache.pq_m", "cache.in_ram",
                  "cache.ram_limit_gb", "icd.bank_place")
# Sections read only by the runs of some methods (`methods.METHOD_SECTIONS`).
ONLY_SOME_METHODS = {s for sections in METHOD_SECTIONS.values() for s in sections}
# The [train] keys that decide which rows a batch holds (the rest of [train] is budget and optimiser).
BATCH_KEYS = ("batch_size", "identities_per_batch", "images_per_identity", "random_share", "positive_policy")


def experiment_sections(cfg: PipelineConfig, method: str) -> dict[str, dict[str, Any]]:
    """The sections of `cfg` a run of `method` (a `METHOD_TERMS` key) must match on resume, as plain dicts."""
    d = to_dict(cfg)
    own = METHOD_SECTIONS.get(method, ())
    out = {s: dict(d[s]) for s in RESUME_SECTIONS if s not in ONLY_SOME_METHODS or s in own}
    for key in EXECUTION_KEYS:
        section, name = key.split(".")
        out.get(section, {}).pop(name, None)
    out["train"] = {k: d["train"][k] for k in BATCH_KEYS}
    if method == TRAIN:  # `train` runs the margin loss whatever `loss.method` names ("auto" or "icd")
        out["loss"].pop("method", None)
    return out


def changed_sections(stored: dict[str, Any], cfg: PipelineConfig, source: str, method: str) -> list[str]:
    """The sections in which the stored config dict of checkpoint `source` differs from `cfg` for a run of `method`."""
    then, now = experiment_sections(config_from_dict(stored, source), method), experiment_sections(cfg, method)
    return [s for s in now if then[s] != now[s]]
