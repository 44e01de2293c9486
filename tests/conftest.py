"""Shared pytest fixtures: small, fast, seeded data configs (generic, any test may use them)."""

from __future__ import annotations

import pytest

from mer_core.configs.fields import FrozenDict
from mer_core.configs.schema import DataConfig, SyntheticConfig
from tests.pg_helpers import postgres  # noqa: F401  (session fixture: one PostgreSQL for all server tests)


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


@pytest.fixture(scope="session")
def search_sweep(tmp_path_factory):
    """A finished 6-trial TPE + ASHA sweep on small synthetic data, logged to a temporary sqlite
    MLflow store through the real CLI (shared by the analysis tests; runs once per session).

    Returns (work folder, tracking URI, experiment name); the sweep folder is work/runs/an-search.
    """
    from tests.sweep_helpers import run_cli, write_sweep

    work = tmp_path_factory.mktemp("analysis-search")
    spec = write_sweep(work, "an-search")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    proc = run_cli([str(spec), "--tracking-uri", uri], cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, uri, "an-search"


@pytest.fixture(scope="session")
def ablation_sweep(tmp_path_factory):
    """A finished ablation (3 variants x 3 paired seeds, no re-tuning) on small synthetic data,
    logged to a temporary sqlite MLflow store through the real CLI (runs once per session).

    Returns (work folder, tracking URI, experiment name); the sweep folder is work/runs/an-ablation.
    """
    from tests.sweep_helpers import SMALL_SET, run_cli, write_sweep

    work = tmp_path_factory.mktemp("analysis-ablation")
    variants = {"full": {}, "no_nee": {"nee.enabled": False}, "fusion_only": {"loss.cls_heads": "fusion"}}
    spec = write_sweep(
        work,
        "an-ablation",
        kind="ablation",
        search_space=None,
        ablation={"reference": "full", "variants": variants, "seeds": [0, 1, 2]},
        resources={"cpu": 1, "gpu": 0, "max_concurrent": 2},
        set={**SMALL_SET, "optim.max_epochs": 4, "self_training.rounds": 0},  # 9 short trials
    )
    uri = f"sqlite:///{work / 'mlflow.db'}"
    proc = run_cli([str(spec), "--tracking-uri", uri], cwd=work, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, uri, "an-ablation"
