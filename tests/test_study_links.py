"""The driver's link between Ray trials and Optuna trials: found among the running trials when they
start, and among the whole history for a trial that ended (a resumed sweep relinking it)."""

from __future__ import annotations

import optuna

from sweeps.space.study import MLFLOW_RUN_ATTR, StudyLinks, StudyRef, tag_ray_trial


def test_links_find_running_and_ended_trials(tmp_path) -> None:
    ref = StudyRef(f"sqlite:///{tmp_path / 'optuna.db'}", "s")
    study = ref.create(sampler=optuna.samplers.RandomSampler(seed=0), mode="max")
    trials = [study.ask() for _ in range(3)]
    for i, trial in enumerate(trials):
        trial.suggest_float("x", 0.0, 1.0)
        tag_ray_trial(trial, f"ray{i}")
    study.tell(trials[0], 0.5)
    links = StudyLinks(ref)
    assert links.link({"ray1": "run-1", "ray2": None}) == {"ray1": 1, "ray2": 2}
    assert links.link({"ray0": "run-0"}) == {"ray0": 0}  # ended: found, but frozen (no run id added)
    stored = {
        t.number: t.user_attrs.get(MLFLOW_RUN_ATTR)
        for t in optuna.load_study(study_name="s", storage=ref.storage).trials
    }
    assert stored == {0: None, 1: "run-1", 2: None}
