"""Typed experiment configs and their single YAML boundary."""

from mer_core.configs.fields import FrozenDict, flatten, from_dict, to_dict
from mer_core.configs.loader import (
    build_config,
    dump_config,
    load_config,
    parse_override,
    read_yaml,
    save_config,
    with_overrides,
)
from mer_core.configs.schema import (
    MER2024_CLASSES,
    DataConfig,
    ExperimentConfig,
    FeaturesConfig,
    LossConfig,
    ModelConfig,
    NEEConfig,
    OptimConfig,
    RuntimeConfig,
    SelfTrainingConfig,
    SyntheticConfig,
    UciConfig,
    VotingConfig,
)

__all__ = [
    "MER2024_CLASSES",
    "DataConfig",
    "ExperimentConfig",
    "FeaturesConfig",
    "FrozenDict",
    "LossConfig",
    "ModelConfig",
    "NEEConfig",
    "OptimConfig",
    "RuntimeConfig",
    "SelfTrainingConfig",
    "SyntheticConfig",
    "UciConfig",
    "VotingConfig",
    "build_config",
    "dump_config",
    "flatten",
    "from_dict",
    "load_config",
    "parse_override",
    "read_yaml",
    "save_config",
    "to_dict",
    "with_overrides",
]
