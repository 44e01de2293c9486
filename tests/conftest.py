"""Shared pytest fixtures: small, fast, seeded data configs (generic, any test may use them)."""

from __future__ import annotations

import pytest

from mer_core.configs.fields import FrozenDict
from mer_core.configs.schema import DataConfig, SyntheticConfig


@pytest.fixture
def tiny_data_cfg() -> DataConfig:
    """A few hundred synthetic samples with non-MER modality names (nothing may assume audio/text/video)."""
    return DataConfig(
        source="synthetic-mer",
        seed=0,
        folds=3,
        synthetic=SyntheticConfig(
            n_labelled=120,
            n_unlabelled=200,
            dims=FrozenDict({"alpha": 8, "beta": 12, "gamma": 6, "delta": 4}),
            signal=FrozenDict({"alpha": 1.0}),
        ),
    )
