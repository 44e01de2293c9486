"""`objective`: a sweep names what its trials run; MR-CCL training unless it says otherwise."""

from __future__ import annotations

import pytest

from mer_core.errors import ConfigError
from sweeps.spec import load_sweep
from sweeps.trainable.bookkeeping import bookkeeping_main, config_score
from sweeps.trainable.objectives import OBJECTIVES, objective_of, trial_iterations
from sweeps.trainable.report import max_iterations
from sweeps.trainable.trial import trial_main
from tests.sweep_helpers import write_sweep

BOOKKEEPING = {"name": "bookkeeping", "trial_s": 3.0, "report_every_s": 1.0}


def test_the_default_objective_trains_mrccl(tmp_path) -> None:
    spec = load_sweep(write_sweep(tmp_path, "plain"))
    assert spec.objective.name == "mrccl" and objective_of(spec).trainable is trial_main
    assert trial_iterations(spec, spec.base_config()) == max_iterations(spec.base_config())
    assert set(OBJECTIVES) == {"bookkeeping", "mrccl"}


def test_the_bookkeeping_objective_reports_on_its_clock(tmp_path) -> None:
    spec = load_sweep(write_sweep(tmp_path, "bk", objective=BOOKKEEPING))
    assert objective_of(spec).trainable is bookkeeping_main
    assert trial_iterations(spec, spec.base_config()) == 3  # ASHA's top rung and the progress estimate


def test_an_unknown_objective_names_the_registered_ones(tmp_path) -> None:
    spec = load_sweep(write_sweep(tmp_path, "bad", objective={"name": "sleepy"}))
    with pytest.raises(ConfigError, match=r"objective\.name.*bookkeeping, mrccl.*sleepy"):
        objective_of(spec)


@pytest.mark.parametrize(
    "overrides",
    [
        {"execution": {"mode": "fused", "population": 2}},
        {
            "kind": "ablation",
            "search_space": None,
            "ablation": {"variants": {"full": {}, "b": {"nee.enabled": False}}, "seeds": [0, 1]},
        },
    ],
)
def test_a_stand_in_objective_is_refused_where_it_would_mean_nothing(tmp_path, overrides) -> None:
    with pytest.raises(ConfigError, match=r"objective\.name"):
        load_sweep(write_sweep(tmp_path, "x", objective=BOOKKEEPING, **overrides))


def test_a_config_always_scores_the_same() -> None:
    config = {"optim.lr": 0.001, "model.fusion": "gated", "__trial_index__": 3}
    score = config_score(config)
    assert 0.0 <= score < 1.0
    assert config_score({**config, "__trial_index__": 9}) == score  # Ray's own keys do not enter it
    assert config_score({**config, "optim.lr": 0.002}) != score
