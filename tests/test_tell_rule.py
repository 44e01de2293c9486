"""The tell rule: Optuna learns COMPLETE only from trials that trained to their end, read back from the study."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from optuna.trial import TrialState

from sweeps.ablation.plan import AblationPlan
from sweeps.ablation.search import AblationSearcher
from sweeps.space import load_space, make_sampler
from sweeps.space.tell import TellingOptunaSearch, state_of
from sweeps.trainable.report import FINAL_KEY

ROOT = Path(__file__).resolve().parents[1]
METRIC = "val/weighted_f1"


@pytest.mark.parametrize(
    "outcome, value, state",
    [
        ("ok", 0.8, TrialState.COMPLETE),
        ("ok", float("nan"), TrialState.FAIL),
        ("ok", None, TrialState.FAIL),
        ("pruned", 0.4, TrialState.PRUNED),
        ("diverged", 0.0, TrialState.FAIL),
        ("invalid", -1.0, TrialState.FAIL),
        ("error", None, TrialState.FAIL),
    ],
)
def test_state_of_each_outcome(outcome, value, state):
    assert state_of(outcome, value) == state


def test_trial_mode_tells_pruned_trials_as_pruned_with_their_epochs():
    space = load_space(ROOT / "search_spaces/quick.yaml")
    sampler = make_sampler("tpe", 0, space=space, n_startup_trials=3)
    search = TellingOptunaSearch(space=space.define_by_run, metric=METRIC, mode="max", sampler=sampler)
    ids = ["finished", "stopped_by_asha", "diverged", "crashed"]
    for trial_id in ids:
        assert search.suggest(trial_id) is not None
        for epoch, value in ((1, 0.3), (2, 0.5)):
            search.on_trial_result(trial_id, {METRIC: value, "training_iteration": epoch})
    search.on_trial_result("finished", {METRIC: 0.7, "training_iteration": 3, FINAL_KEY: 1, "status": "ok"})
    search.on_trial_complete("finished", {METRIC: 0.7, "training_iteration": 3, FINAL_KEY: 1, "status": "ok"})
    search.on_trial_complete("stopped_by_asha", {METRIC: 0.5, "training_iteration": 2})  # no final report
    search.on_trial_complete("diverged", {METRIC: 0.0, FINAL_KEY: 1, "status": "diverged"})
    search.on_trial_complete("crashed", None, error=True)
    trials = search.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL]
    assert trials[0].value == 0.7
    assert trials[1].intermediate_values == {1: 0.3, 2: 0.5}  # Optuna keeps the last one as its value
    assert math.isclose(trials[1].last_step, 2)


def test_ablation_retuning_tells_the_same_rule():
    plan = AblationPlan(variants=("a",), seeds=(0,), retune_trials=3)
    searcher = AblationSearcher(plan, space=load_space(ROOT / "search_spaces/quick.yaml"), algorithm="random", seed=0)
    for i in range(3):
        searcher.suggest(f"t{i}")
    searcher.on_trial_complete("t0", {METRIC: 0.6, FINAL_KEY: 1, "status": "ok"})
    searcher.on_trial_complete("t1", {METRIC: 0.4})  # stopped by the scheduler
    searcher.on_trial_complete("t2", {METRIC: 0.0, FINAL_KEY: 1, "status": "diverged"})
    states = [t.state for t in searcher._studies["a"].trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
