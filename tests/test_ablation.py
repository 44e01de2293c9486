"""Ablation sweeps: the searcher's plan (paired seeds, re-tuning), spec checks, and a real run
compared with `python -m analysis compare`."""

from __future__ import annotations

import csv
import io
import signal
import time

import pytest
from mlflow.tracking import MlflowClient
from ray.tune.search import Searcher

from mer_core.errors import ConfigError
from sweeps.ablation.plan import (
    INIT_KEY,
    PHASE_KEY,
    SEED_KEY,
    SPLIT_KEY,
    VARIANT_KEY,
    AblationPlan,
    ablation_overrides,
    ablation_plan,
)
from sweeps.ablation.search import AblationSearcher
from sweeps.ablation.summary import variant_summary
from sweeps.execution.results import TrialRow
from sweeps.space import load_space
from sweeps.spec import load_sweep
from sweeps.trainable.report import FINAL_KEY
from tests.driver_helpers import Drivers
from tests.sweep_helpers import ROOT, SMALL_DATA, SMALL_SET, children_of, run_analysis_here, write_sweep

SPACE = ROOT / "search_spaces/quick.yaml"


def _drain(searcher: AblationSearcher, prefix: str = "t") -> list[dict]:
    out, i = [], 0
    while True:
        config = searcher.suggest(f"{prefix}{i}")
        if config is None or config == Searcher.FINISHED:
            return out
        out.append(config)
        i += 1


def test_without_retuning_every_variant_runs_on_every_seed():
    plan = AblationPlan(variants=("full", "no_nee", "x"), seeds=(3, 1, 4))
    searcher = AblationSearcher(plan, space=None, algorithm="tpe", seed=0)
    configs = _drain(searcher)
    assert searcher.suggest("late") == Searcher.FINISHED
    pairs = sorted((c[VARIANT_KEY], c[SEED_KEY]) for c in configs)
    assert pairs == sorted((v, s) for v in plan.variants for s in plan.seeds)
    assert {c[PHASE_KEY] for c in configs} == {"eval"}
    assert len(configs) == plan.total_trials == 9


def test_retuning_runs_first_then_eval_trials_use_the_best_nuisance_values():
    plan = AblationPlan(variants=("a", "b"), seeds=(0, 1), retune_trials=3)
    searcher = AblationSearcher(plan, space=load_space(SPACE), algorithm="random", seed=0)
    first = _drain(searcher)
    assert [c[VARIANT_KEY] for c in first] == ["a", "a", "a", "b", "b", "b"]
    assert {c[PHASE_KEY] for c in first} == {"retune"} and {c[SEED_KEY] for c in first} == {0}
    assert searcher.suggest("wait") is None  # nothing to hand out until re-tuning ends
    scores = [0.5, 0.9, 0.7, 0.2, 0.3, 0.1]
    for i, value in enumerate(scores[:3]):
        searcher.on_trial_complete(f"t{i}", {"val/weighted_f1": value, "status": "ok", FINAL_KEY: 1})
    evals_a = _drain(searcher, "e")
    assert [(c[VARIANT_KEY], c[SEED_KEY]) for c in evals_a] == [("a", 0), ("a", 1)]
    assert all(c["optim.lr"] == first[1]["optim.lr"] for c in evals_a)  # the best (0.9) retune trial
    searcher.on_trial_complete("t3", {"val/weighted_f1": 0.2, "status": "ok", FINAL_KEY: 1})
    searcher.on_trial_complete("t4", None, error=True)  # a failed re-tuning trial counts, as failed
    searcher.on_trial_complete("t5", {"val/weighted_f1": 0.1, "status": "diverged", FINAL_KEY: 1})
    evals_b = _drain(searcher, "f")
    assert all(c["optim.lr"] == first[3]["optim.lr"] for c in evals_b)
    assert searcher.suggest("end") == Searcher.FINISHED


def test_searcher_state_survives_save_and_restore(tmp_path):
    plan = AblationPlan(variants=("a", "b"), seeds=(0, 1), retune_trials=2)
    searcher = AblationSearcher(plan, space=load_space(SPACE), algorithm="tpe", seed=5)
    issued = _drain(searcher)
    searcher.on_trial_complete("t0", {"val/weighted_f1": 0.4, "status": "ok", FINAL_KEY: 1})
    searcher.save(str(tmp_path / "s.pkl"))
    restored = AblationSearcher(plan, space=load_space(SPACE), algorithm="tpe", seed=5)
    restored.restore(str(tmp_path / "s.pkl"))
    restored.on_trial_complete("t1", {"val/weighted_f1": 0.6, "status": "ok", FINAL_KEY: 1})
    evals = _drain(restored, "e")
    assert [c[SEED_KEY] for c in evals] == [0, 1]
    assert evals[0]["optim.lr"] == issued[1]["optim.lr"]


def test_a_seed_sets_the_model_seed_and_the_folds():
    variants = {"no_nee": {"nee.enabled": False}}
    out = ablation_overrides({VARIANT_KEY: "no_nee", SEED_KEY: 7, PHASE_KEY: "eval"}, variants)
    assert out == {"nee.enabled": False, "seed": 7, "data.fold_seed": 7}
    assert ablation_overrides({"optim.lr": 0.1}, variants) == {}


def _truth(variant: str, seed: int) -> float:
    """Scores of a planted study: `big` is 0.05 better, `same` within 0.001 of the reference, `noisy`
    scatters by 0.03 around it; a shared per-seed effect cancels in the pairing."""
    shared = 0.02 * ((seed * 7919) % 13 - 6) / 6
    jitter = ((seed * 104729 + len(variant) * 31) % 17 - 8) / 8  # in [-1, 1], deterministic
    return (
        0.7 + shared + {"full": 0.0, "big": 0.05 + 0.002 * jitter, "same": 0.0005 * jitter}.get(variant, 0.03 * jitter)
    )


def _run_adaptive(searcher: AblationSearcher, *, restore_at: int | None = None, tmp_path=None) -> list[dict]:
    """Drive the searcher as Tune would with max_concurrent=2: suggest, complete the oldest, repeat."""
    issued, running, i = [], [], 0
    while True:
        while len(running) < 2:
            config = searcher.suggest(f"t{i}")
            if config is None or config == Searcher.FINISHED:
                break
            issued.append(config)
            running.append((f"t{i}", config))
            i += 1
        if config == Searcher.FINISHED and not running:
            return issued
        if not running:
            raise AssertionError("the searcher waits with nothing running")
        trial_id, config = running.pop(0)
        value = _truth(config[VARIANT_KEY], config[SEED_KEY])
        searcher.on_trial_complete(trial_id, {"val/weighted_f1": value, "status": "ok", FINAL_KEY: 1})
        if restore_at is not None and len(issued) == restore_at:
            searcher.save(str(tmp_path / "s.pkl"))
            fresh = AblationSearcher(searcher.plan, space=None, algorithm="tpe", seed=0)
            fresh.restore(str(tmp_path / "s.pkl"))
            searcher = fresh
            restore_at = None


def _adaptive_plan(**extra) -> AblationPlan:
    return AblationPlan(
        variants=("full", "big", "same", "noisy"),
        seeds=tuple(range(8)),
        looks=(3, 4, 5, 6, 7, 8),
        min_effect=0.01,
        **extra,
    )


def test_adaptive_seeds_stop_each_variant_once_decided_and_the_reference_runs_while_any_is_open():
    plan = _adaptive_plan()
    searcher = AblationSearcher(plan, space=None, algorithm="tpe", seed=0)
    assert "verdicts after the first look" in searcher.status()
    issued = _run_adaptive(searcher)
    seeds = {v: sorted(c[SEED_KEY] for c in issued if c[VARIANT_KEY] == v) for v in plan.variants}
    assert seeds["full"] == seeds["noisy"] == list(range(8))  # noisy stays undecided to the maximum
    assert len(seeds["big"]) < 8 and len(seeds["same"]) < 8  # decided early: no more seeds spent on them
    assert seeds["big"] == list(range(len(seeds["big"])))  # seeds stay paired: always the first ones
    verdicts = searcher.verdicts
    assert verdicts["big"].decision == "different" and verdicts["same"].decision == "equivalent"
    assert verdicts["noisy"].decision == "undecided" and verdicts["noisy"].n == 8
    assert searcher.finished and searcher.suggest("late") == Searcher.FINISHED
    assert "(final)" in searcher.status() and "1 different" in searcher.status()
    assert len(issued) < plan.total_trials == 32


def test_an_adaptive_ablation_resumes_mid_look_with_the_same_trials(tmp_path):
    plan = _adaptive_plan()
    straight = _run_adaptive(AblationSearcher(plan, space=None, algorithm="tpe", seed=0))
    resumed = _run_adaptive(
        AblationSearcher(plan, space=None, algorithm="tpe", seed=0), restore_at=13, tmp_path=tmp_path
    )
    assert resumed == straight


def test_adaptive_seeds_after_retuning_start_once_every_variant_is_tuned():
    plan = AblationPlan(variants=("full", "big"), seeds=tuple(range(6)), looks=(3, 6), retune_trials=2, min_effect=0.01)
    searcher = AblationSearcher(plan, space=load_space(SPACE), algorithm="random", seed=0)
    first = _drain(searcher)
    assert [c[PHASE_KEY] for c in first] == ["retune"] * 4 and "re-tuning 2 variants" in searcher.status()
    for i in range(2):
        searcher.on_trial_complete(f"t{i}", {"val/weighted_f1": 0.5 + i / 10, "status": "ok", FINAL_KEY: 1})
    evals = _drain(searcher, "e")
    assert [(c[VARIANT_KEY], c[SEED_KEY]) for c in evals] == [("full", 0), ("full", 1), ("full", 2)]
    assert all(c["optim.lr"] == first[1]["optim.lr"] for c in evals)
    for i in range(2, 4):
        searcher.on_trial_complete(f"t{i}", {"val/weighted_f1": 0.5, "status": "ok", FINAL_KEY: 1})
    more = _drain(searcher, "f")
    assert [(c[VARIANT_KEY], c[SEED_KEY]) for c in more] == [("big", 0), ("big", 1), ("big", 2)]
    assert searcher.suggest("wait") is None  # the first look needs every eval trial ended


def test_vary_holds_one_source_fixed_and_the_variance_design_crosses_init_and_split(tmp_path):
    plan = AblationPlan(variants=("full", "x"), seeds=(0, 1, 2), init_seed=11, variance_seeds=2)
    configs = _drain(AblationSearcher(plan, space=None, algorithm="tpe", seed=0))
    evals = [c for c in configs if c[PHASE_KEY] == "eval"]
    assert {c[INIT_KEY] for c in evals} == {11} and SPLIT_KEY not in evals[0]
    out = ablation_overrides(evals[0], {"full": {}, "x": {}})
    assert out == {"seed": 11, "data.fold_seed": evals[0][SEED_KEY]}
    crossed = [(c[INIT_KEY], c[SPLIT_KEY]) for c in configs if c[PHASE_KEY] == "variance"]
    assert sorted(crossed) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert {c[VARIANT_KEY] for c in configs if c[PHASE_KEY] == "variance"} == {"full"}
    assert plan.total_trials == 2 * 3 + 4
    path = write_sweep(
        tmp_path, "abl", kind="ablation", search_space=None,
        ablation={"variants": {"full": {}, "x": {}}, "seeds": [0, 1], "vary": {"init": False}},
    )  # fmt: skip
    spec = load_sweep(path)
    spec_plan = ablation_plan(spec)
    assert spec_plan is not None and spec_plan.init_seed == spec.base_config().seed and spec_plan.split_seed is None


def test_the_end_of_sweep_summary_gives_verdicts_and_why_it_stopped():
    plan = _adaptive_plan()
    searcher = AblationSearcher(plan, space=None, algorithm="tpe", seed=0)
    issued = _run_adaptive(searcher)
    rows = [TrialRow(f"t{i}", "ok", _truth(c[VARIANT_KEY], c[SEED_KEY]), c, 1) for i, c in enumerate(issued)]
    text = variant_summary(rows, plan=plan)
    assert "different: better" in text and "equivalent within ±0.01" in text
    assert "stopped at the seed maximum (8): 1 different, 1 equivalent, 1 undecided" in text
    assert "more paired seeds" in text


@pytest.mark.parametrize(
    ("seeds", "field"),
    [
        ({"initial": 5, "max": 3}, "ablation.seeds.max"),
        ({"initial": 1, "max": 3}, "ablation.seeds.initial"),
        ({"initial": 3, "maximum": 9}, "ablation.seeds.maximum"),
        ([0, 0, 1], "ablation.seeds"),
        ([0, -1], "ablation.seeds[1]"),
        ("three", "ablation.seeds"),
    ],
)
def test_bad_seed_schedules_are_refused_with_the_field_named(tmp_path, seeds, field):
    path = write_sweep(
        tmp_path,
        "abl",
        kind="ablation",
        search_space=None,
        ablation={"variants": {"full": {}, "x": {}}, "seeds": seeds},
    )
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("min_effect", 0.0, "ablation.min_effect"),
        ("alpha", 1.5, "ablation.alpha"),
        ("vary", {"init": False, "split": False}, "ablation.vary"),
        ("variance_seeds", 1, "ablation.variance_seeds"),
        ("variance_seeds", 9, "ablation.variance_seeds"),
    ],
)
def test_bad_verdict_and_variance_options_are_refused(tmp_path, key, value, field):
    ablation = {"variants": {"full": {}, "x": {}}, "seeds": {"initial": 3, "max": 6}, key: value}
    path = write_sweep(tmp_path, "abl", kind="ablation", search_space=None, ablation=ablation)
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert err.value.field == field


def test_a_seed_schedule_loads_into_looks_and_seed_values(tmp_path):
    ablation = {"variants": {"full": {}, "x": {}}, "seeds": {"initial": 3, "max": 8, "step": 2, "start": 10}}
    spec = load_sweep(write_sweep(tmp_path, "abl", kind="ablation", search_space=None, ablation=ablation))
    assert spec.ablation.looks() == (3, 5, 7, 8)
    assert spec.ablation.seed_values() == tuple(range(10, 18))
    again = tmp_path / "again.yaml"
    again.write_text(spec.to_yaml())
    assert load_sweep(again).ablation == spec.ablation  # what runs/<sweep>/ stores reads back the same


@pytest.mark.parametrize(
    ("variant", "field"),
    [
        ({"seed": 3}, "ablation.variants.bad.seed"),
        ({"data.fold_seed": 3}, "ablation.variants.bad.data.fold_seed"),
        ({"data.seed": 3}, "ablation.variants.bad.data.seed"),
        ({"data.source": "uci-mfeat"}, "ablation.variants.bad.data.source"),
        ({"optim.lr": -1.0}, "ablation.variants.bad.optim.lr"),
    ],
)
def test_variants_that_break_the_pairing_or_the_config_are_refused(tmp_path, variant, field):
    path = write_sweep(
        tmp_path, "abl", kind="ablation", search_space=None, ablation={"variants": {"full": {}, "bad": variant}}
    )
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert err.value.field == field


def test_retuning_may_not_touch_what_a_variant_sets(tmp_path):
    ablation = {
        "variants": {"full": {}, "lr": {"optim.lr": 0.1}},
        "retune": {"search_space": str(SPACE), "num_samples": 2},
    }
    path = write_sweep(tmp_path, "abl", kind="ablation", search_space=None, ablation=ablation)
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        load_sweep(path)


@pytest.mark.slow
def test_ablation_runs_paired_seeds_and_logs_them(ablation_sweep):
    _, uri, experiment = ablation_sweep
    _, children = children_of(MlflowClient(uri), experiment)
    pairs = sorted((c.data.params["ablation.variant"], int(c.data.params["ablation.seed"])) for c in children)
    assert pairs == sorted((v, s) for v in ("full", "no_nee", "fusion_only") for s in (0, 1, 2))
    for child in children:
        seed = child.data.params["ablation.seed"]
        assert child.data.params["seed"] == seed and child.data.params["data.fold_seed"] == seed
        assert child.data.params["data.seed"] == "0"  # the sweep's dataset draw, whatever the seed
        assert child.data.tags["mersweep.status"] == "ok"  # no early stopping in an ablation
    no_nee = [c for c in children if c.data.params["ablation.variant"] == "no_nee"]
    assert {c.data.params["nee.enabled"] for c in no_nee} == {"False"}


@pytest.mark.slow
def test_compare_writes_the_table_with_cis_tests_and_verdicts(ablation_sweep, tmp_path):
    work, _, _ = ablation_sweep
    proc = run_analysis_here(["compare", "--sweep-dir", str(work / "runs/an-ablation"), "--out", str(tmp_path)], work)
    assert proc.returncode == 0, proc.stderr
    assert "full (ref)" in proc.stdout and "verdict" in proc.stdout
    rows = list(csv.DictReader(io.StringIO((tmp_path / "compare.csv").read_text())))
    assert [r["variant"] for r in rows] == ["full", "no_nee", "fusion_only"]
    for row in rows:
        assert int(row["n_seeds"]) == 3
        assert float(row["ci_low"]) <= float(row["mean"]) <= float(row["ci_high"])
    for row in rows[1:]:
        assert float(row["diff_ci_low"]) <= float(row["diff_mean"]) <= float(row["diff_ci_high"])
        assert 0.0 <= float(row["p_value"]) <= float(row["p_adj"]) <= 1.0
        covers_zero = float(row["diff_ci_low"]) <= 0.0 <= float(row["diff_ci_high"])
        assert covers_zero == (row["decision"] != "different") == (float(row["p_adj"]) >= 0.05)
    markdown = (tmp_path / "compare.md").read_text()
    assert markdown.count("\n| ") == 4  # header + 3 variants


@pytest.mark.slow
def test_compare_refuses_a_search_sweep_and_unknown_selectors(search_sweep, tmp_path):
    work, uri, experiment = search_sweep
    args = ["compare", "--experiment", experiment, "--tracking-uri", uri, "--out", str(tmp_path)]
    proc = run_analysis_here(args, work)
    assert proc.returncode == 2 and "kind" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_analysis_here(["compare", "--experiment", "nope", "--tracking-uri", uri], work)
    assert proc.returncode == 2 and "no such MLflow experiment" in proc.stderr and experiment in proc.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_adaptive_ablation_on_synthetic_data_finds_the_signal_modality_and_the_change_that_does_nothing(
    tmp_path, mlflow_uri
):
    """Audio carries all the class signal of the synthetic data: dropping it (train and test) must end
    *different*; a voting-weight nudge that flips no prediction must end *equivalent*, both within the
    seed maximum, and the decided variants stop getting seeds. The study is stopped with Ctrl-C
    after its first look and resumed: the looks continue where they were."""
    data = {**SMALL_DATA, "synthetic": {**SMALL_DATA["synthetic"], "signal": {"audio": 1.5, "text": 0.0, "video": 0.0}}}
    drop_audio = {"missing.train_rates": {"audio": 1.0}, "missing.test_rates": {"audio": 1.0}}
    ablation = {
        "reference": "full",
        "variants": {"full": {}, "no_audio": drop_audio, "text_weight": {"voting.weights.text": 0.32}},
        "seeds": {"initial": 3, "max": 6},
        "min_effect": 0.05,
    }
    spec = write_sweep(
        tmp_path, "adaptive", kind="ablation", search_space=None, data=data, ablation=ablation,
        resources={"cpu": 1, "gpu": 0, "max_concurrent": 1},  # one trial worker per driver: looks matter here
        set={**SMALL_SET, "optim.max_epochs": 4, "self_training.rounds": 0},
    )  # fmt: skip
    args = [str(spec), "--tracking-uri", mlflow_uri]
    drivers = Drivers()
    try:
        first = drivers.start(args, tmp_path)
        deadline = time.monotonic() + 600
        while "(look 2/4)" not in first.stderr():  # the progress line shows the looks
            assert first.proc.poll() is None and time.monotonic() < deadline, first.stderr()[-3000:]
            time.sleep(0.2)
        first.signal_group(signal.SIGINT)
        assert first.proc.wait(120) == 130, first.stderr()[-3000:]
        resumed = drivers.start([*args, "--resume"], tmp_path)
        assert resumed.proc.wait(900) == 0, resumed.stderr()[-3000:]
    finally:
        drivers.cleanup()
    assert "every variant decided (1 different, 1 equivalent, 0 undecided)" in resumed.stdout()
    out = tmp_path / "report"
    proc = run_analysis_here(["compare", "--sweep-dir", str(tmp_path / "runs/adaptive"), "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {r["variant"]: r for r in csv.DictReader(io.StringIO((out / "compare.csv").read_text()))}
    assert rows["no_audio"]["decision"] == "different" and float(rows["no_audio"]["diff_ci_high"]) < 0
    assert rows["text_weight"]["decision"] == "equivalent"
    assert int(rows["full"]["n_seeds"]) <= 6 and int(rows["text_weight"]["n_seeds"]) < int(rows["full"]["n_seeds"])
    # Every (variant, seed) ran once across the stop and the resume: no trial repeated or lost.
    _, children = children_of(MlflowClient(mlflow_uri), "adaptive")
    done = [(c.data.params["ablation.variant"], c.data.params["ablation.seed"]) for c in children
            if c.data.tags.get("mersweep.status") == "ok"]  # fmt: skip
    assert len(done) == len(set(done)) == sum(int(r["n_seeds"]) for r in rows.values())
