"""`python -m analysis report`: boundary hits, the fANOVA rebuild, the sections on synthetic data, and
the whole report of real sweeps logged to MLflow, rendered in headless Chromium."""

from __future__ import annotations

import base64
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.report.boundary import boundary_hit, boundary_hits
from analysis.report.browser import FLAGS
from analysis.report.importance import active_params, fanova_importance, rebuild_study
from sweeps.space.params import Param
from tests.sweep_helpers import cli_env, run_analysis_here

CHROMIUM_FLAGS = list(FLAGS)  # the report and README-picture scripts start Chromium the same way


def _space(tmp_path: Path, text: str):
    from sweeps.space import load_space

    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_space(path)


LR = Param("optim.lr", "float", low=1e-4, high=1e-2, log=True)


# --- boundary hits ---------------------------------------------------------------------------------


def test_best_value_near_the_upper_edge_of_a_log_range_is_a_hit_that_says_widen_it():
    hit = boundary_hit(LR, 9.8e-3)
    assert hit is not None and (hit.edge, hit.bound) == ("upper", 1e-2)
    assert hit.message() == "optim.lr: best 0.0098 is at the upper edge 0.01 of the range: widen it"


def test_log_params_are_judged_in_log_scale():
    # 5.5e-4 is 4.5% of the linear range above 1e-4 but 37% of the way in log10: no hit.
    assert boundary_hit(LR, 5.5e-4) is None
    hit = boundary_hit(LR, 1.2e-4)  # 2% of the log range above the lower edge
    assert hit is not None and hit.edge == "lower"
    linear = Param("optim.lr", "float", low=1e-4, high=1e-2)
    assert boundary_hit(linear, 5.5e-4) is not None


def test_an_edge_that_is_the_fields_own_limit_is_reported_without_advice_to_widen():
    dropout = Param("model.dropout", "float", low=0.0, high=0.5)
    hit = boundary_hit(dropout, 0.01)
    assert hit is not None and hit.at_field_limit
    assert "widen" not in hit.message() and "field's limit" in hit.message()
    assert boundary_hit(dropout, 0.49).message().endswith("widen it")  # dropout < 1: 0.5 is not its limit


def test_values_inside_the_range_and_non_range_params_are_no_hits():
    assert boundary_hit(LR, 1e-3) is None
    assert boundary_hit(Param("model.fusion", "categorical", choices=("concat", "gated")), "concat") is None
    assert boundary_hit(Param("model.hidden_dim", "int", low=32, high=256), 250).edge == "upper"
    with pytest.raises(ValueError, match="tolerance"):
        boundary_hit(LR, 1e-3, tolerance=0.6)


def test_boundary_hits_cover_the_params_the_best_trial_used(tmp_path):
    space = _space(
        tmp_path,
        """params:
  optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  loss.w_modality: {type: float, low: 0.0, high: 2.0}
  model.fusion: {type: categorical, choices: [concat, tensor_lowrank]}
  model.fusion_rank: {type: int, low: 2, high: 16, when: {model.fusion: tensor_lowrank}}
""",
    )
    hits = boundary_hits(space, {"optim.lr": 1e-2, "loss.w_modality": 1.0, "model.fusion": "concat"})
    assert [(h.param, h.edge) for h in hits] == [("optim.lr", "upper")]


# --- fANOVA on a rebuilt study -----------------------------------------------------------------------


IMPORTANCE_SPACE = """params:
  optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  model.dropout: {type: float, low: 0.0, high: 0.5}
  model.fusion: {type: categorical, choices: [concat, tensor_lowrank]}
  model.fusion_rank: {type: int, low: 2, high: 16, when: {model.fusion: tensor_lowrank}}
  nee.enabled: {fixed: true}
"""


def _synthetic_trials(n: int, seed: int = 0) -> list[tuple[dict, float]]:
    """The metric depends on log10(lr) only; the flattened config always holds fusion_rank (as MLflow's does)."""
    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(n):
        lr = float(10 ** rng.uniform(-4, -2))
        params = {
            "optim.lr": lr,
            "model.dropout": float(rng.uniform(0, 0.5)),
            "model.fusion": str(rng.choice(["concat", "tensor_lowrank"])),
            "model.fusion_rank": int(rng.integers(2, 17)),
            "nee.enabled": True,
        }
        trials.append((params, -((math.log10(lr) + 3.0) ** 2) + 0.01 * rng.normal()))
    return trials


def test_the_rebuilt_study_holds_only_active_params_with_the_space_distributions(tmp_path):
    space = _space(tmp_path, IMPORTANCE_SPACE)
    trials = _synthetic_trials(12)
    outside = ({**trials[0][0], "model.fusion": "gated"}, 0.5)  # not a choice of this space
    study, skipped = rebuild_study(space, [*trials, outside, (trials[1][0], math.nan)], mode="max")
    assert skipped == 2 and len(study.trials) == 12
    for trial, (params, value) in zip(study.trials, trials, strict=True):
        assert trial.value == pytest.approx(value)
        assert ("model.fusion_rank" in trial.params) == (params["model.fusion"] == "tensor_lowrank")
        assert "nee.enabled" not in trial.params  # fixed: not searched
        assert trial.distributions["optim.lr"].log
    assert active_params(space, {"optim.lr": 0.5}) is None  # outside the range


def test_fanova_finds_the_one_param_that_matters_and_is_seeded(tmp_path):
    space = _space(tmp_path, IMPORTANCE_SPACE)
    trials = _synthetic_trials(40)
    first = fanova_importance(space, trials, mode="max", seed=3)
    assert not first.reason and first.n_trials == 40
    assert max(first.values, key=first.values.get) == "optim.lr" and first.values["optim.lr"] > 0.6
    assert "model.fusion_rank" not in first.values  # conditional: not in every trial
    assert sum(first.values.values()) == pytest.approx(1.0)
    assert fanova_importance(space, trials, mode="max", seed=3).values == first.values


@pytest.mark.slow  # one fANOVA at the cap: about 6 s
def test_past_the_cap_fanova_fits_a_sample_and_still_finds_the_param(tmp_path):
    from analysis.report.importance import MAX_TRIALS

    space = _space(tmp_path, IMPORTANCE_SPACE)
    trials = _synthetic_trials(MAX_TRIALS + 100)
    result = fanova_importance(space, trials, mode="max", seed=1)
    assert result.n_trials == MAX_TRIALS  # a sample: the forest's cost stays bounded at any sweep size
    assert max(result.values, key=result.values.get) == "optim.lr" and result.values["optim.lr"] > 0.6


def test_too_few_trials_give_a_sentence_instead_of_importances(tmp_path):
    space = _space(tmp_path, IMPORTANCE_SPACE)
    result = fanova_importance(space, _synthetic_trials(3), mode="min", seed=0)
    assert result.values == {} and result.n_trials == 3
    assert result.reason.startswith("Parameter importance needs at least 5 finished trials; got 3")


# --- sections and the page on synthetic data (no MLflow) ---------------------------------------------


def _synthetic_report_data(tmp_path: Path, *, kind: str = "search", ablation=None):
    from analysis.report.collect import PseudoCounts, ReportData, leading_trials
    from analysis.runs import SweepRuns, TrialRun

    space = _space(tmp_path, IMPORTANCE_SPACE)
    runs = []
    for i, (params, value) in enumerate(_synthetic_trials(12, seed=1)):
        status = "ok" if i < 9 else "pruned"
        params = {**params, "optim.lr": 9.9e-3, "model.dropout": 0.25} if i == 0 else params  # best, lr at the edge
        value = 1.0 if i == 0 else value
        runs.append(
            TrialRun(f"run{i}", f"t{i}", f"t{i}", status, {k: str(v) for k, v in params.items()}, {"m": value}, {})
        )
    spec = {"kind": kind, "metric": "m", "mode": "max", "search": {"seed": 0}}
    sweep = SweepRuns("sqlite:///nowhere.db", "exp", "1", "parent", "syn", spec, tuple(runs))
    leaders = tuple(leading_trials(sweep, list(runs), 10))
    counts = PseudoCounts(("a", "b"), (1, 2), ((3.0, 1.0), (5.0, 2.0)))
    return ReportData(
        sweep=sweep,
        space=space,
        space_note="",
        searched=tuple(runs),
        leaders=leaders,
        histories={t.run_id: _two_fold_curve() for t in leaders[:5]},
        pseudo={"run0": counts},
        ablation=ablation,
    )


def _two_fold_curve():
    """Two folds of 3 epochs each, the second fold with a self-training round after 2 epochs."""
    from analysis.report.collect import CurvePoint

    values = [(0, 0, 0.1), (0, 0, 0.3), (0, 0, 0.35), (1, 0, 0.2), (1, 0, 0.4), (1, 1, 0.45)]
    return [CurvePoint(step, v, fold, rnd) for step, (fold, rnd, v) in enumerate(values, start=1)]


def test_sections_flag_the_boundary_hit_and_embed_every_png(tmp_path):
    from analysis.report import header_rows
    from analysis.report.html import render_page
    from analysis.report.sections import build_sections

    data = _synthetic_report_data(tmp_path)
    sections = build_sections(data, tmp_path, seed=0)
    by_anchor = {s.anchor: s for s in sections}
    assert by_anchor["params"].warnings == ("optim.lr: best 0.0099 is at the upper edge 0.01 of the range: widen it",)
    assert by_anchor["importance"].images  # 9 finished trials: enough for fANOVA
    page = render_page("syn", header_rows(data), sections)
    assert "<li>optim.lr: best 0.0099 is at the upper edge 0.01 of the range: widen it</li>" in page
    pngs = sorted(tmp_path.glob("*.png"))
    assert {p.name for p in pngs} >= {"param_optim_lr.png", "importance.png", "parallel.png", "pseudo_labels.png"}
    for png in pngs:
        assert "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode() in page, png.name


def test_an_ablation_section_draws_the_table_and_chart(tmp_path):
    from analysis.compare import AblationTable
    from analysis.report.sections import ablation_section
    from analysis.stats import compare_variants
    from sweeps.ablation.sequential import SequentialDesign

    rng = np.random.default_rng(0)
    scores = {
        v: {s: 0.6 + shift + 0.01 * rng.normal() for s in range(5)} for v, shift in [("full", 0), ("no_nee", -0.05)]
    }
    rows = tuple(compare_variants(scores, reference="full", n_boot=500))
    table = AblationTable("syn", "m", "full", SequentialDesign(looks=(5,)), None, rows, {"no_nee": 1})
    section = ablation_section(_synthetic_report_data(tmp_path, kind="ablation", ablation=table), tmp_path)
    assert (tmp_path / "ablation.png").is_file() and section.images
    assert [r[0] for r in section.table[1:]] == ["full (ref)", "no_nee"]
    assert section.table[2][-2:] == ("different: worse", "1")


def test_pseudo_label_counts_sum_the_folds_per_round_and_leaders_put_finished_trials_first(tmp_path):
    from analysis.report.collect import leading_trials, pseudo_counts

    fold = {"rounds": [{"round": 1, "n": 3.0, "count/a": 2.0, "count/b": 1.0}, {"round": 2, "count/a": 4.0}]}
    summary = {"class_names": ["a", "b"], "pseudo": [{"fold": 0, **fold}, {"fold": 1, **fold}]}
    counts = pseudo_counts(summary)
    assert counts.rounds == (1, 2) and counts.counts == ((4.0, 2.0), (8.0, 0.0)) and counts.total == 14.0
    assert pseudo_counts({"class_names": ["a"], "pseudo": [{"fold": 0, "rounds": []}]}) is None
    data = _synthetic_report_data(tmp_path)
    leaders = leading_trials(data.sweep, list(data.sweep.trials), 12)
    assert leaders[0].trial_id == "t0" and [t.status for t in leaders] == ["ok"] * 9 + ["pruned"] * 3


# --- end to end: real sweeps in MLflow, the CLI, headless Chromium -----------------------------------


def _report_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analysis", "report", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("MERSWEEP_REQUIRE_CHROMIUM") == "1":
            pytest.fail("MERSWEEP_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return path


def _check_in_chromium(report: Path, tmp_path: Path, n_images: int) -> None:
    """Screenshot: a real, non-blank image. DOM after load: the page's own check found every image decoded."""
    import matplotlib.image

    chromium, profile = _chromium(), tmp_path / "chromium-profile"
    shot = tmp_path / "screenshot.png"
    base = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    url = report.resolve().as_uri()
    proc = subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1200,3000", url], capture_output=True, text=True, timeout=120
    )
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)  # (H, W, channels) floats in [0, 1]
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels.std() > 0.05 and len(np.unique(pixels.reshape(-1, pixels.shape[-1])[::97], axis=0)) > 50
    dom = subprocess.run(
        [*base, "--virtual-time-budget=10000", "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None, dom[:2000]
    assert 'data-images="ok"' in body.group(0) and f'data-image-count="{n_images}"' in body.group(0), body.group(0)


def _check_report_files(out: Path) -> tuple[Path, list[Path]]:
    report = out / "report.html"
    page = report.read_text()
    pngs = sorted(out.glob("*.png"))
    assert pngs, "no PNG written"
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode() in page, png.name
    assert page.count("<img ") == len(pngs)
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page), "the report must not reference anything outside it"
    return report, pngs


def _own_copy(work: Path, tmp_path: Path) -> str:
    """A copy of a shared sweep's MLflow store: the report publishes to the sweep's parent run,
    and other tests (other pytest-xdist workers too) read the shared store meanwhile."""
    shutil.copy(work / "mlflow.db", tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.mark.slow
def test_report_of_a_search_renders_in_headless_chromium(search_sweep, tmp_path):
    work, _, experiment = search_sweep
    uri = _own_copy(work, tmp_path)
    out = tmp_path / "report"
    proc = _report_cli(["--experiment", experiment, "--tracking-uri", uri, "--out", str(out)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(out / "report.html")
    report, pngs = _check_report_files(out)
    names = {p.name for p in pngs}
    assert {"param_optim_lr.png", "param_model_fusion.png", "parallel.png", "learning_curves.png"} <= names
    page = report.read_text()
    for text in ("an-search (search)", "val/weighted_f1 (max)", "Parameter importance (fANOVA)", "Pseudo-labels"):
        assert text in page
    _check_in_chromium(report, tmp_path, len(pngs))


@pytest.mark.slow
def test_report_of_an_ablation_has_the_bar_chart_and_table(ablation_sweep, tmp_path):
    work, _, _ = ablation_sweep
    uri = _own_copy(work, tmp_path)
    proc = _report_cli(["--sweep-dir", str(work / "runs" / "an-ablation"), "--tracking-uri", uri], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "reports" / "an-ablation"  # the default --out
    report, pngs = _check_report_files(out)
    assert "ablation.png" in {p.name for p in pngs}
    page = report.read_text()
    assert "full (ref)" in page and "no_nee" in page and "fusion_only" in page
    _check_in_chromium(report, tmp_path, len(pngs))
    # The report refreshed the copy on the sweep's parent run, with the comparison and its metrics.
    from mlflow.tracking import MlflowClient

    from analysis.runs import load_sweep_runs

    sweep = load_sweep_runs(uri, experiment="an-ablation")
    client = MlflowClient(tracking_uri=uri)
    on_parent = {a.path for a in client.list_artifacts(sweep.parent_run_id, "report")}
    assert {"report/report.html", "report/ablation.png"} <= on_parent and "warning" not in proc.stderr
    assert {a.path for a in client.list_artifacts(sweep.parent_run_id)} >= {"ablation.json", "trials.json"}
    assert "variant/no_nee/diff_mean" in client.get_run(sweep.parent_run_id).data.metrics


@pytest.mark.slow
def test_bad_selectors_and_options_exit_2_with_one_line(search_sweep, tmp_path):
    _, uri, _ = search_sweep
    for args, expected in [
        (["--experiment", "nope", "--tracking-uri", uri], "--experiment: no such MLflow experiment"),
        (["--experiment", "an-search", "--tracking-uri", uri, "--top-k", "0"], "--top-k"),
    ]:
        proc = run_analysis_here(["report", *args], tmp_path)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and expected in lines[0], (args, proc.stderr)
    assert not (tmp_path / "reports").exists()


def test_a_class_name_the_font_cannot_draw_prints_no_warning(tmp_path):
    import warnings

    from analysis.report.figures import new_figure, save_png

    fig, ax = new_figure(2, 2)
    ax.bar(["惊讶", "happy"], [1, 2])  # CJK class names from a user's label file
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "Glyph ... missing" was two stderr lines per character
        assert save_png(fig, tmp_path / "x.png").stat().st_size > 0


def test_the_parent_runs_tables_carry_every_column_compare_writes(tmp_path):
    import json

    from analysis.compare import COLUMNS, AblationTable
    from analysis.report.tables import ablation_markdown_rows, ablation_rows, table_json, variant_metrics
    from analysis.stats import compare_variants
    from sweeps.ablation.sequential import SequentialDesign

    scores = {"full": {s: 0.6 + 0.01 * s for s in range(4)}, "no_nee": {s: 0.55 + 0.012 * s for s in range(4)}}
    rows = tuple(compare_variants(scores, reference="full", n_boot=200))
    table = AblationTable("syn", "m", "full", SequentialDesign(looks=(4,)), None, rows, {})
    full = ablation_rows(table)
    assert [r["variant"] for r in full] == ["full", "no_nee"] and set(COLUMNS) <= set(full[0])
    assert full[1]["mean"] == pytest.approx(rows[1].mean)  # full precision, from compare's CSV
    metrics = variant_metrics(full)
    assert metrics["variant/no_nee/mean"] == pytest.approx(rows[1].mean) and "variant/full/mean" in metrics
    assert not any(k.endswith("/verdict") or k.endswith("/variant") for k in metrics)  # numbers only
    shown = ablation_markdown_rows(table)  # what `compare` prints, header first, no |---| line
    assert shown[1][0] == "full (ref)" and len({len(r) for r in shown}) == 1
    doc = json.loads(table_json(full))  # `mlflow.log_table`'s format: the UI renders it as a table
    assert doc["columns"] == list(full[0]) and len(doc["data"]) == 2
    assert doc["data"][1][doc["columns"].index("mean")] == float(f"{rows[1].mean:.4g}")
