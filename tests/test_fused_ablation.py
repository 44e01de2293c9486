"""Fused ablations: the seeds of one variant train as one population, each member equal to its single run.

An ablation seed sets `seed` and `data.fold_seed`, so the members of one variant's population have
different folds of the same data. The parity tests train such populations and compare every
member with `mer_core.train.run` of its config alone (`tests.parity.assert_same_run`, in float64), with
k-fold and hold-out splits, pre-training, self-training and test-time missing rates. The sweep
tests drive the ablation searcher's batches (no Ray) and, marked slow, run the session's
trial-mode ablation again fused through `run_sweep.py`, against MLflow and `python -m analysis compare`.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from ray.tune.search import Searcher

from mer_core.configs import ExperimentConfig, with_overrides
from mer_core.data import load_data
from mer_core.errors import ConfigError
from mer_core.train.fused import group_by_shape, train_population
from sweeps.ablation.batches import populations, ray_trials, seed_outcomes
from sweeps.ablation.plan import PHASE_KEY, SEED_KEY, VARIANT_KEY, AblationPlan
from sweeps.ablation.search import AblationSearcher
from sweeps.fused.members import MEMBERS_KEY, RUNGS_KEY
from sweeps.space import load_space
from sweeps.spec import load_sweep
from sweeps.trainable.report import FINAL_KEY
from tests.parity import FP64, assert_same_run, fused_runs, parity_data_cfg, single_run
from tests.sweep_helpers import (
    ROOT,
    SMALL_SET,
    children_of,
    run_analysis_here,
    run_cli_here,
    run_sweep_here,
    write_sweep,
)

SPACE = ROOT / "search_spaces/quick.yaml"
SMALL = {
    "model.hidden_dim": 16,
    "model.ff_dim": 32,
    "model.head_hidden": [32, 16],
    "optim.max_epochs": 3,
    "optim.patience": 2,
    "optim.pretrain_epochs": 0,
    "self_training.rounds": 0,
    "runtime.threads": 1,
    "runtime.device": "cpu",
}


@pytest.fixture
def base(tiny_data_cfg) -> ExperimentConfig:
    return with_overrides(ExperimentConfig(data=tiny_data_cfg), SMALL)


@pytest.fixture
def data(base):
    return load_data(base.data)


@pytest.fixture
def parity() -> ExperimentConfig:
    return with_overrides(ExperimentConfig(data=parity_data_cfg(folds=2)), {**SMALL, **FP64})


@pytest.fixture
def parity_data(parity):
    return load_data(parity.data)


def _seeds(cfg: ExperimentConfig, seeds: list[int]) -> list[ExperimentConfig]:
    """What an ablation makes of one variant's seeds: `seed` and `data.fold_seed` both set (ablation_overrides)."""
    return [with_overrides(cfg, {"seed": s, "data.fold_seed": s}) for s in seeds]


def _check_members_equal_single_runs(cfgs: list[ExperimentConfig], data) -> list:
    results = []
    for cfg, member in zip(cfgs, fused_runs(cfgs, data), strict=True):
        single = single_run(cfg, data)
        assert_same_run(single, member)
        for got, want in zip(member.result.folds, single.result.folds, strict=True):
            np.testing.assert_array_equal(got.val_idx, want.val_idx)  # the member's own folds
        results.append(member.result)
    return results


@pytest.mark.parity
def test_seeds_with_their_own_kfold_splits_match_their_single_runs(parity, parity_data):
    cfgs = _seeds(parity, [0, 1, 2])
    results = _check_members_equal_single_runs(cfgs, parity_data)
    vals = [set(r.folds[0].val_idx.tolist()) for r in results]
    assert vals[0] != vals[1] and vals[1] != vals[2]  # the folds really differ between members
    assert all(len(r.folds) == 2 for r in results)


@pytest.mark.parity
def test_holdout_splits_pretraining_and_self_training_match_single_runs(parity, parity_data):
    variant = with_overrides(
        parity,
        {
            "data.folds": 1,
            "optim.pretrain_epochs": 1,
            "self_training.rounds": 1,
            "self_training.oversample": False,
            "self_training.dominant_threshold": 0.3,
            "self_training.minority_threshold": 0.3,
            "missing.eval_rates": [0.5],
        },
    )
    results = _check_members_equal_single_runs(_seeds(variant, [3, 4]), parity_data)
    assert all(r.folds[0].pseudo for r in results)


def test_a_protocol_that_drops_pairs_keeps_each_fold_seed_in_its_own_population(base, data):
    """With missing-rate drops the fold mask depends on the validation rows: one fold seed per population."""
    dropping = with_overrides(base, {"missing.train_rate": 0.3, "missing.test_rate": 0.5})
    cfgs = [*_seeds(dropping, [0, 1]), with_overrides(dropping, {"seed": 7, "data.fold_seed": 0})]
    assert group_by_shape(cfgs) == [[0, 2], [1]]
    assert group_by_shape(_seeds(base, [0, 1, 2])) == [[0, 1, 2]]  # no drops: every seed in one
    with pytest.raises(ConfigError, match=r"data\.fold_seed"):
        train_population(cfgs, data)


# -- the searcher's batches ----------------------------------------------------------------------------
def seed_batch(variant: str, seeds: list[int], phase: str, params: dict, *, population: int | None) -> list[dict]:
    """The Ray configs of one look's seeds of a variant, as the searcher builds them."""
    configs = [{VARIANT_KEY: variant, SEED_KEY: s, PHASE_KEY: phase, **params} for s in seeds]
    return populations(configs, population=population)


def test_a_batch_of_seeds_is_one_trial_each_or_populations_of_the_same_member_configs():
    singles = seed_batch("no_nee", [3, 1, 4], "eval", {"optim.lr": 0.01}, population=None)
    assert singles == [{VARIANT_KEY: "no_nee", SEED_KEY: s, PHASE_KEY: "eval", "optim.lr": 0.01} for s in (3, 1, 4)]
    fused = seed_batch("no_nee", [3, 1, 4], "eval", {"optim.lr": 0.01}, population=2)
    assert fused == [{MEMBERS_KEY: singles[:2]}, {MEMBERS_KEY: singles[2:]}]
    assert all(RUNGS_KEY not in c for c in fused)  # ablation members are never stopped early
    assert ray_trials([3, 3, 5], population=None) == 11 and ray_trials([3, 3, 5], population=4) == 4


def test_the_fused_searcher_hands_out_one_population_per_variant_and_finishes():
    plan = AblationPlan(variants=("full", "no_nee"), seeds=(0, 1, 2, 3, 4))
    searcher = AblationSearcher(plan, space=None, algorithm="tpe", seed=0, population=8)
    configs = []
    while (config := searcher.suggest(f"t{len(configs)}")) not in (None, Searcher.FINISHED):
        configs.append(config)
    assert len(configs) == searcher.num_ray_trials == 2
    members = [m for c in configs for m in c[MEMBERS_KEY]]
    assert sorted((m[VARIANT_KEY], m[SEED_KEY]) for m in members) == sorted(
        (v, s) for v in plan.variants for s in plan.seeds
    )
    assert [{m[VARIANT_KEY] for m in c[MEMBERS_KEY]} for c in configs] == [{"full"}, {"no_nee"}]
    assert len(members) == plan.total_trials


def test_seed_outcomes_read_each_member_of_a_population_result():
    config = {MEMBERS_KEY: seed_batch("full", [0, 1], "eval", {}, population=None)}
    result = {FINAL_KEY: 1, "m0/status": "ok", "m0/val/weighted_f1": 0.7, "m1/status": "diverged"}
    result["m1/val/weighted_f1"] = 0.0
    got = seed_outcomes(config, result, metric="val/weighted_f1")
    assert [(o.variant, o.seed, o.phase, o.outcome, o.value) for o in got] == [
        ("full", 0, "eval", "ok", 0.7),
        ("full", 1, "eval", "diverged", 0.0),
    ]
    single = seed_batch("full", [5], "eval", {}, population=None)[0]
    (one,) = seed_outcomes(single, {FINAL_KEY: 1, "status": "ok", "val/weighted_f1": 0.5}, metric="val/weighted_f1")
    assert (one.seed, one.outcome, one.value) == (5, "ok", 0.5)
    assert seed_outcomes(single, None, metric="val/weighted_f1", errored=True)[0].outcome == "error"


def _ablation_spec(tmp_path, name: str, *, mode: str, **ablation) -> object:
    variants = {"full": {}, "no_nee": {"nee.enabled": False}}
    return write_sweep(
        tmp_path,
        name,
        kind="ablation",
        search_space=None,
        ablation={"reference": "full", "variants": variants, "seeds": [0, 1, 2], **ablation},
        execution={"mode": mode, "population": 8},
        resources={"cpu": 1, "gpu": 0, "max_concurrent": 1},
        set={**SMALL_SET, "optim.max_epochs": 2, "self_training.rounds": 0},
    )


def test_fused_ablations_with_retuning_are_accepted(tmp_path):
    retune = {"search_space": str(SPACE), "num_samples": 2}
    spec = load_sweep(_ablation_spec(tmp_path, "ok", mode="fused", retune=retune))
    assert spec.execution.mode == "fused" and spec.kind == "ablation" and spec.ablation.retune.num_samples == 2


def test_fused_retuning_asks_populations_of_one_study_and_tells_every_member():
    """5 re-tuning trials per variant in populations of 3 (3 + 2); each member's outcome reaches its
    Optuna trial, and the variant's seeds then run at the best member's values."""
    plan = AblationPlan(variants=("full", "no_nee"), seeds=(4, 5), retune_trials=5)
    searcher = AblationSearcher(plan, space=load_space(SPACE), algorithm="random", seed=0, population=3)
    assert searcher.num_ray_trials == 2 * 2 + 2 * 1
    populations = {}
    while (config := searcher.suggest(f"t{len(populations)}")) not in (None, Searcher.FINISHED):
        populations[f"t{len(populations)}"] = config
    assert [len(c[MEMBERS_KEY]) for c in populations.values()] == [3, 2, 3, 2]
    members = [m for c in populations.values() for m in c[MEMBERS_KEY]]
    assert {(m[SEED_KEY], m[PHASE_KEY]) for m in members} == {(4, "retune")}
    assert len({m["optim.lr"] for m in members}) == 10  # every member its own asked trial

    def score(member):
        return 1.0 - abs(member["optim.lr"] - 1e-3)  # the study's best: the lr nearest 1e-3

    diverged = populations["t0"][MEMBERS_KEY][2]  # a failed member is told as failed, not with a value
    for trial_id, config in populations.items():
        result = {FINAL_KEY: 1, "status": "ok"}
        for i, member in enumerate(config[MEMBERS_KEY]):
            status = "diverged" if member is diverged else "ok"
            result |= {f"m{i}/status": status, f"m{i}/val/weighted_f1": score(member)}
        searcher.on_trial_complete(trial_id, result)
    best = {
        v: max((m for m in members if m[VARIANT_KEY] == v and m is not diverged), key=score)["optim.lr"]
        for v in plan.variants
    }
    states = [t.state.name for t in searcher._studies["full"].trials]
    assert states.count("COMPLETE") == 4 and states.count("FAIL") == 1
    evals = []
    while (config := searcher.suggest(f"e{len(evals)}")) not in (None, Searcher.FINISHED):
        evals.append(config)
    assert len(evals) == 2  # one population of both seeds per variant
    for config in evals:
        (variant,) = {m[VARIANT_KEY] for m in config[MEMBERS_KEY]}
        assert [m[SEED_KEY] for m in config[MEMBERS_KEY]] == [4, 5]
        assert {m["optim.lr"] for m in config[MEMBERS_KEY]} == {best[variant]}


def test_a_variant_fused_mode_cannot_run_is_refused_by_name_before_anything_runs(tmp_path):
    path = _ablation_spec(tmp_path, "bad", mode="fused")
    work = tmp_path / "work"
    work.mkdir()
    text = path.read_text().replace("nee.enabled: false", "missing.impute: mean")
    path.write_text(text)
    proc = run_cli_here([str(path), "--dry-run"], cwd=work)
    assert proc.returncode == 2, proc.stderr
    assert "ablation.variants.no_nee.missing.impute" in proc.stderr and "execution.mode: fused" in proc.stderr
    assert not (work / "runs").exists()


# -- end to end ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_fused_ablation_logs_every_seed_as_its_own_run_and_compare_reads_it(ablation_sweep, tmp_path, mlflow_uri):
    """The session's trial-mode ablation (3 variants x 3 seeds, tests/conftest.py) run again fused:
    3 Ray trials of 3 members, 9 child runs with the params and metrics trial mode logged; compare works."""
    trial_work, trial_uri, trial_experiment = ablation_sweep
    spec = yaml.safe_load((trial_work / "an-ablation.yaml").read_text())
    spec.update(name="an-ablation-fused", execution={"mode": "fused", "population": 8})
    path = tmp_path / "an-ablation-fused.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    uri = mlflow_uri
    proc = run_sweep_here([str(path), "--tracking-uri", uri], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "9 trials: 9 finished" in proc.stdout, proc.stdout
    out = tmp_path / "report"
    compare = run_analysis_here(
        ["compare", "--sweep-dir", str(tmp_path / "runs/an-ablation-fused"), "--out", str(out)], tmp_path
    )
    assert compare.returncode == 0, compare.stderr
    rows = list(csv.DictReader(io.StringIO((out / "compare.csv").read_text())))
    assert [r["variant"] for r in rows] == ["full", "no_nee", "fusion_only"] and {r["n_seeds"] for r in rows} == {"3"}

    def by_pair(runs):
        return {(r.data.params["ablation.variant"], int(r.data.params["ablation.seed"])): r for r in runs}

    fused = by_pair(children_of(MlflowClient(uri), "an-ablation-fused")[1])
    trial = by_pair(children_of(MlflowClient(trial_uri), trial_experiment)[1])
    assert sorted(fused) == sorted(trial) and len(fused) == 9
    assert len({r.data.tags["mersweep.trial_id"].rsplit("-m", 1)[0] for r in fused.values()}) == 3  # one per variant
    for pair, run_ in fused.items():
        want = trial[pair]
        assert run_.data.params == want.data.params  # the full config, variant, seed and phase
        assert run_.data.tags["mersweep.status"] == "ok"
        assert set(run_.data.metrics) == set(want.data.metrics)
        # Both sweeps train in float64 (tests/conftest.py): the fused kernels' rounding stays far below this.
        assert run_.data.metrics["val/loss"] == pytest.approx(want.data.metrics["val/loss"], abs=1e-6), pair
