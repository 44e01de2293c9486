"""Every sweep YAML we ship validates, and its space samples build valid configs."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from mer_core.configs import with_overrides
from sweeps.space import load_space
from sweeps.spec import load_sweep

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweep_validates_and_samples(path):
    spec = load_sweep(path)
    base = spec.base_config()
    if spec.kind == "ablation":
        for name in spec.ablation.variants:  # every variant builds, and changes what it says
            variant = spec.variant_config(name)
            assert (variant == base) == (not spec.ablation.variants[name]), name
        return
    space = load_space(spec.search_space_path())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        fixed = space.define_by_run(trial) or {}
        cfg = with_overrides(base, space.sample_config_overrides({**trial.params, **fixed}))
        assert cfg != base or not trial.params
        study.tell(trial, 0.0)


def test_at_least_the_documented_sweeps_ship():
    names = {p.stem for p in SWEEPS}
    assert {"quickstart", "mer2024_full", "nee", "thresholds", "voting", "ablation_mrccl"} <= names


def test_the_ablation_study_asks_the_papers_questions():
    spec = load_sweep(Path(__file__).resolve().parents[1] / "sweeps/ablation_mrccl.yaml")
    assert spec.ablation.reference == "full" and spec.ablation.looks()[-1] >= 5 and spec.ablation.min_effect is not None
    wanted = {"no_nee", "no_modality_contrastive", "no_pretraining", "no_self_training", "fusion_head_only",
              "single_threshold_0.9", "no_threshold", "gaussian_dropout_not_nee"}  # fmt: skip
    assert wanted <= set(spec.ablation.variants)
