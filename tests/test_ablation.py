"""Ablation sweeps: the searcher's plan (paired seeds, re-tuning), spec checks, and a real run
compared with `python -m analysis compare`."""

from __future__ import annotations

import csv
import io

import pytest
from mlflow.tracking import MlflowClient
from ray.tune.search import Searcher

from mer_core.errors import ConfigError
from sweeps.ablation.plan import PHASE_KEY, SEED_KEY, VARIANT_KEY, AblationPlan, ablation_overrides
from sweeps.ablation.search import AblationSearcher
from sweeps.space import load_space
from sweeps.spec import load_sweep
from sweeps.trainable.report import FINAL_KEY
from tests.sweep_helpers import ROOT, children_of, run_analysis, write_sweep

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
    assert out == {"nee.enabled": False, "seed": 7, "data.seed": 7}
    assert ablation_overrides({"optim.lr": 0.1}, variants) == {}


@pytest.mark.parametrize(
    ("variant", "field"),
    [
        ({"seed": 3}, "ablation.variants.bad.seed"),
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
        assert child.data.params["seed"] == seed and child.data.params["data.seed"] == seed
        assert child.data.tags["mersweep.status"] == "ok"  # no early stopping in an ablation
    no_nee = [c for c in children if c.data.params["ablation.variant"] == "no_nee"]
    assert {c.data.params["nee.enabled"] for c in no_nee} == {"False"}


@pytest.mark.slow
def test_compare_writes_the_table_with_cis_tests_and_verdicts(ablation_sweep, tmp_path):
    work, _, _ = ablation_sweep
    proc = run_analysis(["compare", "--sweep-dir", str(work / "runs/an-ablation"), "--out", str(tmp_path)], cwd=work)
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
        if covers_zero:
            assert row["verdict"] == "no detectable difference"
    markdown = (tmp_path / "compare.md").read_text()
    assert markdown.count("\n| ") == 4  # header + 3 variants


@pytest.mark.slow
def test_compare_refuses_a_search_sweep_and_unknown_selectors(search_sweep, tmp_path):
    work, uri, experiment = search_sweep
    proc = run_analysis(
        ["compare", "--experiment", experiment, "--tracking-uri", uri, "--out", str(tmp_path)], cwd=work
    )
    assert proc.returncode == 2 and "kind" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_analysis(["compare", "--experiment", "nope", "--tracking-uri", uri], cwd=work)
    assert proc.returncode == 2 and "no such MLflow experiment" in proc.stderr and experiment in proc.stderr
    assert not list(tmp_path.iterdir())
