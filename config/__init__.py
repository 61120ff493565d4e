"""Configuration: typed sections of `pipeline.toml`, loading, overrides, hashing, saving."""
from config.loader import (
    apply_overrides,
    config_from_dict,
    config_hash,
    derive,
    load_config,
    save_resolved,
    to_dict,
    to_toml,
    validate,
    value_at,
)
from config.schema import (
    AdaDistillConfig,
    AlignConfig,
    CacheConfig,
    DataConfig,
    DemoConfig,
    EkdConfig,
    EvalConfig,
    ExportConfig,
    IcdConfig,
    LossConfig,
    MarginDistillationConfig,
    PipelineConfig,
    RkdConfig,
    RunConfig,
    StudentConfig,
    SyntheticConfig,
    TeacherConfig,
    TrainConfig,
)

__all__ = [
    "apply_overrides", "config_from_dict", "config_hash", "derive", "load_config", "save_resolved", "to_dict",
    "to_toml", "validate", "value_at", "AlignConfig",
    "CacheConfig", "DataConfig", "DemoConfig", "EvalConfig", "ExportConfig",
    "IcdConfig",
    "LossConfig", "PipelineConfig", "AdaDistillConfig", "EkdConfig", "MarginDistillationConfig", "RkdConfig",
    "RunConfig", "StudentConfig", "SyntheticConfig", "TeacherConfig", "TrainConfig",
]
