"""Schedulers and BOHB-style search: YAML -> the right Ray scheduler, refusals, seeded brackets, budget TPE.

Also the MF-Hartmann6 function of the `search_mf` benchmark against its published values, and a
small end-to-end Hyperband sweep whose cut trials Optuna holds as PRUNED (read back from the study).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState, create_trial
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, TrialScheduler

from benchmarks.mf_hartmann import F_STAR, NOISE_STD, X_STAR, curve, mf_hartmann6
from mer_core.errors import ConfigError
from sweeps.execution.tuner import SeededHyperBand, hyperband_brackets, make_scheduler, make_study
from sweeps.space import load_space, make_sampler
from sweeps.space.budget_tpe import BudgetTPESampler, at_budget, model_budget
from sweeps.space.study import StudyRef
from sweeps.spec import SchedulerConfig, load_sweep
from sweeps.spec.schema import GRACE_PERIOD, STARTUP_TRIALS
from sweeps.trainable.report import TIME_ATTR

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "search_spaces/quick.yaml"


def _spec(tmp_path: Path, scheduler: str, extra: str = ""):
    path = tmp_path / "sweep.yaml"
    fixed = "data: {folds: 1}\nset: {optim.max_epochs: 26, self_training.rounds: 0}\n"  # 27 results per trial
    path.write_text(f"name: s\nsearch_space: {QUICK}\n{fixed}scheduler: {scheduler}\n{extra}")
    return load_sweep(path)


def _rungs(scheduler) -> list[list[float]]:
    return [[m for m, _ in b._rungs] for b in scheduler._brackets]


@pytest.mark.parametrize(
    "scheduler, kind",
    [
        ("{kind: asha}", ASHAScheduler),
        ("{kind: median}", MedianStoppingRule),
        ("{kind: none}", FIFOScheduler),
        ("{kind: hyperband}", SeededHyperBand),
    ],
)
def test_the_yaml_kind_builds_that_ray_scheduler(tmp_path, scheduler, kind):
    spec = _spec(tmp_path, scheduler)
    built = make_scheduler(spec, spec.base_config())
    assert type(built) is kind


def test_hyperband_has_every_bracket_unless_told_and_asha_one(tmp_path):
    # max_t = 26 epochs + the final report = 27 results; grace 1, reduction 3: rungs 1, 3, 9 (27 is max_t).
    spec = _spec(tmp_path, "{kind: hyperband, grace_period: 1, reduction_factor: 3}")
    full = make_scheduler(spec, spec.base_config())
    assert _rungs(full) == [[27.0, 9.0, 3.0, 1.0], [27.0, 9.0, 3.0], [27.0, 9.0], [27.0], []]
    assert hyperband_brackets(1, 27, 3) == 5
    spec = _spec(tmp_path, "{kind: hyperband, grace_period: 1, reduction_factor: 3, brackets: 2}")
    assert _rungs(make_scheduler(spec, spec.base_config())) == [[27.0, 9.0, 3.0, 1.0], [27.0, 9.0, 3.0]]
    spec = _spec(tmp_path, "{kind: asha, grace_period: 3, reduction_factor: 3}")
    assert _rungs(make_scheduler(spec, spec.base_config())) == [[27.0, 9.0, 3.0]]


def test_hyperband_bracket_draws_repeat_with_the_seed(tmp_path):
    def draws(seed: int) -> list[int]:
        spec = _spec(tmp_path, "{kind: hyperband}", f"search: {{seed: {seed}}}\n")
        scheduler = make_scheduler(spec, spec.base_config())
        scheduler.set_search_properties("val/weighted_f1", "max")
        trials = [Trial("fn", stub=True, trial_id=f"t{i}") for i in range(40)]
        for trial in trials:
            scheduler.on_trial_add(None, trial)
        return [scheduler._brackets.index(scheduler._trial_info[t.trial_id]) for t in trials]

    first = draws(0)
    np.random.seed(123)  # Ray's own draw would follow the global generator; ours must not
    assert draws(0) == first
    assert draws(1) != first
    assert len(set(first)) > 1  # trials do land in several brackets


@pytest.mark.parametrize(
    "extra, field",
    [
        ("scheduler: {kind: hyperbandd}\n", "scheduler.kind"),
        ("scheduler: {kind: asha, brackets: 3}\n", "scheduler.brackets"),
        ("scheduler: {kind: median, brackets: 2}\n", "scheduler.brackets"),
        ("scheduler: {kind: hyperband, brackets: 0}\n", "scheduler.brackets"),
        ("search: {algorithm: bohb2}\n", "search.algorithm"),
        ("scheduler: {kind: hyperband}\nexecution: {mode: fused}\n", "scheduler.kind"),
    ],
)
def test_bad_scheduler_settings_are_one_line_errors(tmp_path, extra, field):
    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: s\nsearch_space: {QUICK}\n{extra}")
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    message = str(info.value)
    assert message.startswith(f"{field}:") and "\n" not in message, message


def test_asha_accepts_one_bracket_and_hyperband_fused_names_what_fused_allows(tmp_path):
    assert _spec(tmp_path, "{kind: asha, brackets: 1}").scheduler.brackets == 1
    path = tmp_path / "fused.yaml"
    path.write_text(f"name: s\nsearch_space: {QUICK}\nscheduler: {{kind: hyperband}}\nexecution: {{mode: fused}}\n")
    with pytest.raises(ConfigError, match=r"asha, none .*hyperband"):
        load_sweep(path)


def test_the_median_rule_continues_a_trial_it_cannot_judge_yet_instead_of_pausing_it(tmp_path):
    """Ray's rule would PAUSE a trial while fewer than 3 others got as far and another waits to start; our
    trials checkpoint only at their end (a paused one would restart from scratch), so ours continues it."""

    class Controller:  # what the rule reads of Tune's controller
        def get_live_trials(self) -> set:
            return {running, waiting}

    running, waiting = Trial("fn", stub=True, trial_id="a"), Trial("fn", stub=True, trial_id="b")
    running.set_status(Trial.RUNNING)
    waiting.set_status(Trial.PENDING)
    result = {TIME_ATTR: 4, "val/weighted_f1": 0.5}
    spec = _spec(tmp_path, "{kind: median, grace_period: 3}")
    for rule, expected in [
        (make_scheduler(spec, spec.base_config()), TrialScheduler.CONTINUE),
        (MedianStoppingRule(time_attr=TIME_ATTR, grace_period=3), TrialScheduler.PAUSE),  # Ray's own default
    ]:
        rule.set_search_properties("val/weighted_f1", "max")
        rule.on_trial_add(Controller(), running)
        assert rule.on_trial_result(Controller(), running, result) == expected


def test_a_fused_search_that_names_no_scheduler_kind_runs_asha(tmp_path):
    """The default rule (median) is one fused populations cannot run: left unnamed there, the kind is asha."""
    head = f"name: s\nsearch_space: {QUICK}\n"
    fused = "execution: {mode: fused, population: 4}\n"
    for extra, grace in [("", GRACE_PERIOD), ("scheduler: {grace_period: 2}\n", 2), ("scheduler:\n", GRACE_PERIOD)]:
        path = tmp_path / "fused.yaml"
        path.write_text(head + fused + extra)
        spec = load_sweep(path)
        assert (spec.scheduler.kind, spec.scheduler.grace_period) == ("asha", grace), extra
        again = tmp_path / "again.yaml"
        again.write_text(spec.to_yaml())
        assert load_sweep(again) == spec  # what runs/<sweep>/ stores reads back the same
    path = tmp_path / "trial.yaml"
    path.write_text(head)
    assert load_sweep(path, sets=["sweep.execution.mode=fused"]).scheduler.kind == "asha"
    assert load_sweep(path).scheduler == SchedulerConfig()  # trial mode: the default, median
    path.write_text("name: s\nkind: ablation\nablation: {variants: {full: {}}, seeds: [0]}\n" + fused)
    assert load_sweep(path).scheduler == SchedulerConfig()  # an ablation stops no member: its kind is not used


def test_median_named_in_fused_mode_is_refused_in_one_line(tmp_path):
    path = tmp_path / "fused.yaml"
    path.write_text(f"name: s\nsearch_space: {QUICK}\nexecution: {{mode: fused}}\nscheduler: {{kind: median}}\n")
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    message = str(info.value)
    assert message.startswith("scheduler.kind:") and "\n" not in message, message
    assert "asha, none" in message and "median" in message.partition("asha, none")[2], message


def _finished(number: int, curve_values: dict[int, float], state: TrialState = TrialState.PRUNED):
    trial = create_trial(
        state=state,
        value=None if state == TrialState.PRUNED else curve_values[max(curve_values)],
        params={"x": float(number)},
        distributions={"x": optuna.distributions.FloatDistribution(0.0, 100.0)},
        intermediate_values=curve_values,
    )
    trial.number = number
    return trial


def test_the_model_budget_is_the_largest_epoch_enough_trials_reached():
    trials = [_finished(i, {1: 0.1 * i}) for i in range(5)]  # five cut at epoch 1
    trials += [_finished(5 + i, {1: 0.5, 2: 0.6, 3: 0.2 * i}) for i in range(3)]  # three cut at epoch 3
    trials += [_finished(8, {1: 0.9, 2: 0.9, 3: 0.9, 4: 0.95}, TrialState.COMPLETE)]  # one finished
    assert model_budget(trials, 3) == 3  # 4 trials reached epoch 3, 1 reached epoch 4
    assert model_budget(trials, 5) == 1
    assert model_budget(trials, 10) is None
    seen = at_budget(trials, 3)
    assert [t.number for t in seen] == [5, 6, 7, 8]  # the ones cut at epoch 1 are left out
    assert all(t.state == TrialState.COMPLETE for t in seen)
    assert [t.value for t in seen] == [0.0, 0.2, 0.4, 0.9]  # each scored at epoch 3, not its last epoch
    assert trials[5].state == TrialState.PRUNED  # the study's own records are untouched
    assert at_budget(trials, 10) == trials


def test_bohb_sampler_models_at_the_budget_and_stays_seeded():
    space = load_space(QUICK)
    sampler = make_sampler("bohb", 3, space=space, n_startup_trials=4)
    assert isinstance(sampler, BudgetTPESampler) and sampler._min_points == len(space.params) + 1

    def proposals(seed: int) -> list[dict]:
        study = optuna.create_study(direction="maximize", sampler=make_sampler("bohb", seed, space=space))
        out = []
        for i in range(14):
            trial = study.ask()
            space.define_by_run(trial)
            score = -abs(math.log10(trial.params["optim.lr"]) + 3.0)  # best at lr = 1e-3
            for epoch in range(1, 4 if i % 2 else 2):
                trial.report(score + 0.1 * epoch, epoch)
            study.tell(trial, state=TrialState.PRUNED)
            out.append(trial.params)
        return out

    assert proposals(0) == proposals(0)
    assert proposals(0) != proposals(1)


def test_mf_hartmann6_matches_its_published_values():
    assert mf_hartmann6(X_STAR) == pytest.approx(F_STAR, abs=1e-5)  # Hartmann6's global minimum
    # Its second-best local minimum, -3.2032 at P's last row (Hartmann6's usual table; to 4 digits).
    assert mf_hartmann6(np.array([0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381])) == pytest.approx(-3.2032, abs=1e-3)
    # Fidelity enters linearly: at z every alpha_i is lower by 0.1 * (1 - z).
    low, half = mf_hartmann6(X_STAR, 0.0), mf_hartmann6(X_STAR, 0.5)
    assert low > F_STAR and half == pytest.approx((low + mf_hartmann6(X_STAR)) / 2, abs=1e-9)
    rng = np.random.default_rng(0)
    points = rng.random((20_000, 6))
    assert mf_hartmann6(points).min() > F_STAR  # no random point beats the optimum
    assert mf_hartmann6(np.zeros(6)) == pytest.approx(-0.0054, abs=1e-3)  # far from every basin: ~0
    lows = mf_hartmann6(points, 0.2)
    assert np.all(lows >= mf_hartmann6(points))  # a lower fidelity is never better
    first, again = curve(X_STAR, epochs=9, seed=4), curve(X_STAR, epochs=9, seed=4)
    assert np.array_equal(first, again) and not np.array_equal(first, curve(X_STAR, epochs=9, seed=5))
    noise = curve(X_STAR, epochs=4000, seed=0) - mf_hartmann6(
        np.broadcast_to(X_STAR, (4000, 6)), np.arange(1, 4001) / 4000
    )
    assert np.std(noise) == pytest.approx(NOISE_STD, rel=0.05)


@pytest.mark.slow
def test_a_hyperband_sweep_tells_optuna_pruned_for_the_trials_it_cut(tmp_path, mlflow_uri):
    from tests.resume_checks import optuna_history, ray_trials
    from tests.sweep_helpers import run_sweep_here, write_sweep

    spec = write_sweep(
        tmp_path,
        "hb",
        search={"algorithm": "bohb", "num_samples": 8, "seed": 0, "n_startup_trials": 3},
        scheduler={"kind": "hyperband", "grace_period": 1, "reduction_factor": 2, "brackets": 2},
        set={
            "model.ff_dim": 32,
            "model.hidden_dim": 16,
            "optim.max_epochs": 4,
            "optim.patience": 4,
            "optim.pretrain_epochs": 0,
            "self_training.rounds": 0,
            "runtime.threads": 1,
        },
    )
    proc = run_sweep_here([str(spec), "--tracking-uri", mlflow_uri], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "runs" / "hb"
    history, by_ray_id = optuna_history(folder)  # the study's trials as Ray saved them, by number
    trials = ray_trials(folder)
    assert len(history) == 8
    states = {history[t.number].state for t in by_ray_id.values()}
    assert {TrialState.PRUNED, TrialState.COMPLETE} <= states
    for ray_id, ot_trial in by_ray_id.items():
        told = history[ot_trial.number]
        last = trials[ray_id].last_result
        if last.get("final"):
            assert told.state == TrialState.COMPLETE
        else:  # cut by Hyperband: PRUNED, with every epoch it reported, the one it was cut at included
            assert told.state == TrialState.PRUNED
            assert sorted(told.intermediate_values) == list(range(1, last["training_iteration"] + 1))


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("resources: {max_concurrent: 2}\n", STARTUP_TRIALS),
        ("resources: {max_concurrent: 32}\n", 32),
        ("resources: {max_concurrent: 4}\nexecution: {mode: fused, population: 8}\n", 32),
        ("resources: {max_concurrent: 32}\nsearch: {n_startup_trials: 3}\n", 3),
    ],
)
def test_startup_trials_default_to_at_least_the_trials_proposed_at_once(tmp_path, extra, expected):
    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: s\nsearch_space: {QUICK}\n{extra}")
    spec = load_sweep(path)
    assert spec.startup_trials() == expected
    ref = StudyRef(f"sqlite:///{tmp_path / 'optuna.db'}", "s")  # the sweep's stored study carries the sampler
    sampler = make_study(spec, spec.load_search_space(), ref, None).sampler
    assert sampler._n_startup_trials == expected
