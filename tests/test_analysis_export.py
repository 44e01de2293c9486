"""`python -m analysis export-best`: choosing by mean over seeds, the served model, and end to end."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch

from analysis.export_model import MASK_INPUT, VotedMRCCL, example_inputs
from analysis.export_select import (
    choose_best,
    eligible,
    extra_seeds,
    group_runs,
    needs_reseed,
    rank,
    seed_overrides,
)
from analysis.runs import SweepRuns, TrialRun
from mer_core import voting
from mer_core.configs import load_config
from mer_core.data import load_data
from mer_core.models import build_model
from sweeps.tracking.names import EXPORT_SOURCE_TAG, PHASE_TAG, RESEED_PHASE
from tests.sweep_helpers import run_analysis, run_analysis_here

METRIC = "val/weighted_f1"


def _run(run_id: str, value: float, *, seed: int = 0, lr: str = "0.001", tags=None, params=None) -> TrialRun:
    return TrialRun(
        run_id=run_id,
        trial_id=run_id,
        name=f"trial_{run_id}",
        status="ok",
        params={"seed": str(seed), "optim.lr": lr, "model.fusion": "concat", **(params or {})},
        metrics={METRIC: value},
        tags=dict(tags or {}),
    )


def _sweep(trials: list[TrialRun], kind: str = "search", mode: str = "max") -> SweepRuns:
    spec = {"kind": kind, "metric": METRIC, "mode": mode}
    return SweepRuns("sqlite:///x.db", "exp", "1", "parent", "exp", spec, tuple(trials))


def test_search_runs_group_by_config_without_the_seed():
    runs = [
        _run("a0", 0.60, seed=0, lr="0.001"),
        _run("a1", 0.70, seed=1, lr="0.001"),
        _run("b0", 0.66, seed=0, lr="0.01"),
    ]
    groups = {g.label: g for g in group_runs(runs, metric=METRIC)}
    assert set(groups) == {"trial_a0", "trial_b0"}
    assert groups["trial_a0"].seeds == (0, 1)
    assert groups["trial_a0"].mean == pytest.approx(0.65)
    assert not needs_reseed(list(groups.values()))


def test_a_one_seed_search_needs_reseeding_and_reseeds_join_their_source():
    runs = [_run("a0", 0.60), _run("b0", 0.66, lr="0.01")]
    groups = group_runs(runs, metric=METRIC)
    assert needs_reseed(groups)
    assert [g.label for g in rank(groups, mode="max")] == ["trial_b0", "trial_a0"]
    # A re-seeded run joins the run it re-ran even if its params are spelled differently.
    reseed = _run("b1", 0.50, seed=1, lr="1.0e-2", tags={PHASE_TAG: RESEED_PHASE, EXPORT_SOURCE_TAG: "b0"})
    groups = {g.label: g for g in group_runs([*runs, reseed], metric=METRIC)}
    assert groups["trial_b0"].seeds == (0, 1)
    assert groups["trial_b0"].representative.run_id == "b0"  # the original run's config is exported
    assert not needs_reseed(list(groups.values()))


def test_best_mean_beats_a_lucky_single_seed():
    runs = [
        _run("a0", 0.70, seed=0),
        _run("a1", 0.68, seed=1),
        _run("b0", 0.80, seed=0, lr="0.01"),  # one lucky seed, never re-run
        _run("c0", 0.75, seed=0, lr="0.1"),
        _run("c1", 0.55, seed=1, lr="0.1"),
    ]
    groups = group_runs(runs, metric=METRIC)
    assert choose_best(groups, mode="max").label == "trial_a0"  # 0.69 beats 0.65; b has one seed only
    assert choose_best(groups, mode="min").label == "trial_c0"  # 0.65 is the lowest mean over 2+ seeds
    assert choose_best(group_runs(runs[2:3], metric=METRIC), mode="max").label == "trial_b0"
    with pytest.raises(ValueError):
        choose_best([], mode="max")


def test_ablation_groups_eval_runs_by_variant():
    def ablation_run(run_id, variant, seed, value, phase="eval"):
        params = {"ablation.variant": variant, "ablation.seed": str(seed), "ablation.phase": phase}
        return _run(run_id, value, seed=seed, lr=f"0.00{seed + 1}", params=params)  # nuisance differs per seed

    trials = [
        ablation_run("f0", "full", 0, 0.70),
        ablation_run("f1", "full", 1, 0.72),
        ablation_run("n0", "no_nee", 0, 0.69),
        ablation_run("n1", "no_nee", 1, 0.64),
        ablation_run("r0", "no_nee", 0, 0.99, phase="retune"),  # tuning runs are not measurements
    ]
    sweep = _sweep(trials, kind="ablation")
    groups = {g.label: g for g in group_runs(eligible(sweep), metric=METRIC, by_variant=True)}
    assert set(groups) == {"full", "no_nee"}
    assert groups["no_nee"].mean == pytest.approx(0.665)
    assert choose_best(list(groups.values()), mode="max").label == "full"
    assert seed_overrides("ablation", 3) == {"seed": 3, "data.fold_seed": 3}
    assert seed_overrides("search", 3) == {"seed": 3}


def test_extra_seeds():
    group = group_runs([_run("a0", 0.6, seed=0), _run("a2", 0.6, seed=2)], metric=METRIC)[0]
    assert extra_seeds(group, None, count=3) == [1, 3, 4]
    assert extra_seeds(group, [2, 5, 5, 1], count=3) == [5, 1]


@pytest.mark.parametrize("space", ["logit", "prob"])
def test_served_model_is_the_trainers_vote(space, tiny_data_cfg):
    from mer_core.configs import ModelConfig, VotingConfig

    data = load_data(tiny_data_cfg)
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_dim=16, ff_dim=32), data.dims, data.n_classes).eval()
    weights, _ = voting.resolve_weights(VotingConfig(space=space), model.head_names)
    served = VotedMRCCL(model, weights, space).eval()
    inputs = example_inputs(data, rows=5)
    assert list(inputs) == [*data.modalities, MASK_INPUT]
    tensors = [torch.from_numpy(inputs[name]) for name in served.input_names]
    with torch.no_grad():
        probs = served(*tensors)
        logits = model({m: t for m, t in zip(data.modalities, tensors, strict=False)}, tensors[-1]).logits
    expected = voting.vote_probs({h: v.numpy() for h, v in logits.items()}, weights, space=space)
    assert probs.shape == (5, data.n_classes)
    assert np.allclose(probs.numpy(), expected, atol=1e-5)


def test_export_rejects_bad_options_with_exit_2(tmp_path):
    proc = run_analysis_here(["export-best", "--experiment", "x", "--top", "0"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: --top: invalid value; allowed: an integer >= 1; given: 0"]


@pytest.mark.slow
def test_export_best_reseeds_writes_yaml_and_registers_a_loadable_model(search_sweep, tmp_path):
    import mlflow
    from mlflow.models import get_model_info
    from mlflow.tracking import MlflowClient

    work, _, experiment = search_sweep
    shutil.copy(work / "mlflow.db", tmp_path / "mlflow.db")  # our runs and models stay out of the shared store
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "best.yaml"
    args = ["export-best", "--experiment", experiment, "--tracking-uri", uri, "--top", "2", "--seeds", "1"]
    proc = run_analysis([*args, "--out", str(out), "--model-name", "an-best"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    reseeds = [r for r in runs if r.data.tags.get(PHASE_TAG) == RESEED_PHASE]
    assert reseeds and all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in reseeds)
    assert {r.data.params["seed"] for r in reseeds} == {"1"}
    assert all(METRIC in r.data.metrics and r.data.tags["mersweep.status"] == "ok" for r in reseeds)

    text = out.read_text()
    cfg = load_config(out)
    assert f"parent run: {parent.info.run_id}" in text and f"Reproduce: python -m mer_core.train {out}" in text
    assert "95% bootstrap CI" in text and "(seeds 0, 1)" in text
    chosen = re.search(r"config of run (\w+)", text).group(1)
    assert load_config(client.download_artifacts(chosen, "config.yaml", str(tmp_path))) == cfg
    assert any(r.info.run_id in text and r.data.tags[EXPORT_SOURCE_TAG] == chosen for r in reseeds)
    assert client.list_artifacts(parent.info.run_id, "export")[0].path == "export/best.yaml"

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        info = get_model_info("models:/an-best/1")
        model = mlflow.pytorch.load_model("models:/an-best/1")
    finally:
        mlflow.set_tracking_uri(previous)
    inputs = info.signature.inputs.inputs
    n_classes = len(cfg.data.synthetic.classes)
    assert [spec.name for spec in inputs] == ["audio", "text", "video", MASK_INPUT]
    assert [spec.shape for spec in inputs] == [(-1, 24), (-1, 32), (-1, 16), (-1, 3)]  # SMALL_DATA's dims
    assert info.signature.outputs.inputs[0].shape == (-1, n_classes)
    batch = [torch.randn(7, spec.shape[1]) for spec in inputs[:-1]] + [torch.ones(7, 3, dtype=torch.bool)]
    with torch.no_grad():
        probs = model(*batch)
    assert probs.shape == (7, n_classes)
    assert torch.allclose(probs.sum(dim=1), torch.ones(7), atol=1e-5)


def test_out_paths_that_cannot_be_written_are_refused_before_any_work(tmp_path):
    from analysis.sources import check_out_file, out_folder
    from mer_core.errors import UserInputError

    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    # Were FileExistsError / IsADirectoryError (exit 1) at the very end: export-best had re-run seeds by then.
    with pytest.raises(UserInputError, match=r"^--out: .*f is a file, expected a folder; given: '.*f/sub'$"):
        out_folder(str(tmp_path / "f" / "sub"), tmp_path)
    with pytest.raises(UserInputError, match=r"^--out: expected the path of a YAML file to write; given: .* folder$"):
        check_out_file(str(tmp_path / "d"))
    with pytest.raises(UserInputError, match=r"f is a file"):
        check_out_file(str(tmp_path / "f" / "best.yaml"))
    assert out_folder(None, tmp_path / "reports" / "x") == tmp_path / "reports" / "x"
    check_out_file(str(tmp_path / "d" / "best.yaml"))
    check_out_file(None)


def _val_test_run(run_id, seed, val, test, params):
    trial = _run(run_id, val, seed=seed, params=params)
    return TrialRun(**{**trial.__dict__, "metrics": {METRIC: val, "test/weighted_f1": test}})


def test_export_chooses_by_validation_and_compare_judges_the_held_out_metric():
    """Validation prefers `full`, the held-out test split prefers `no_nee`: export-best ships `full`
    (the test split chooses nothing) and reports full's test mean; compare judges the test scores."""
    from argparse import Namespace
    from pathlib import Path

    from analysis.compare import ablation_table
    from analysis.export import header, select

    def run(run_id, variant, seed, val, test):
        params = {"ablation.variant": variant, "ablation.seed": str(seed), "ablation.phase": "eval"}
        return _val_test_run(run_id, seed, val, test, params)

    trials = [run("f0", "full", 0, 0.80, 0.60), run("f1", "full", 1, 0.82, 0.62)]
    trials += [run("n0", "no_nee", 0, 0.70, 0.70), run("n1", "no_nee", 1, 0.72, 0.71)]
    spec = {"kind": "ablation", "metric": METRIC, "report_metric": "test/weighted_f1", "mode": "max"}
    spec["ablation"] = {"reference": "full", "variants": {"full": {}, "no_nee": {}}}
    sweep = SweepRuns("sqlite:///x.db", "exp", "1", "parent", "exp", spec, tuple(trials))
    assert sweep.report_metric == "test/weighted_f1"
    _, best = select(sweep, Namespace(top=3, seeds=None), data=None)
    assert best.label == "full" and best.metric == METRIC
    text = header(sweep, best, Path("best.yaml"))
    assert "test/weighted_f1 (max): mean 0.6100 over 2 runs" in text  # the chosen variant's held-out score
    assert "0.7050" not in text  # the unchosen variant's better test score is reported nowhere
    assert "config of run f0 (seed 0), which logged val/weighted_f1 0.8000, test/weighted_f1 0.6000" in text
    table = ablation_table(sweep, n_boot=200)
    assert table.metric == "test/weighted_f1"
    assert {r.variant: r.mean for r in table.rows}["no_nee"] == pytest.approx(0.705)
    assert ablation_table(sweep, metric=METRIC, n_boot=200).metric == METRIC  # configurable per call
    # A sweep recorded before report_metric existed reports its metric.
    legacy = {k: v for k, v in spec.items() if k != "report_metric"}
    assert SweepRuns("u", "e", "1", "p", "e", legacy, ()).report_metric == METRIC


def test_a_search_config_with_the_best_test_score_but_a_worse_validation_score_is_not_exported():
    """Two configurations over two seeds each; `b` is planted with the best test mean and a worse
    validation mean. export-best must ship `a` and report only a's test mean."""
    from argparse import Namespace
    from pathlib import Path

    from analysis.export import header, select

    trials = [
        _val_test_run("a0", 0, 0.80, 0.60, {"optim.lr": "0.001"}),
        _val_test_run("a1", 1, 0.82, 0.62, {"optim.lr": "0.001"}),
        _val_test_run("b0", 0, 0.78, 0.90, {"optim.lr": "0.01"}),
        _val_test_run("b1", 1, 0.79, 0.92, {"optim.lr": "0.01"}),
    ]
    spec = {"kind": "search", "metric": METRIC, "report_metric": "test/weighted_f1", "mode": "max"}
    sweep = SweepRuns("sqlite:///x.db", "exp", "1", "parent", "exp", spec, tuple(trials))
    _, best = select(sweep, Namespace(top=3, seeds=None), data=None)
    assert best.representative.run_id == "a0"
    text = header(sweep, best, Path("best.yaml"))
    assert "val/weighted_f1 (max): mean 0.8100" in text and "test/weighted_f1 (max): mean 0.6100" in text
    assert "0.9100" not in text
