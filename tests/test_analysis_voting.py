"""Post-hoc voting weights (`analysis.posthoc`) and `python -m analysis fit-voting` end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis.posthoc import cross_validate, fit_weights, posthoc_fit, stratified_folds, vote_f1
from mer_core import metrics, voting
from mer_core.errors import ConfigError
from tests.sweep_helpers import run_analysis, run_analysis_here

SPACES = ("logit", "prob")


def _heads(n: int, n_classes: int, *, seed: int, labels: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """Three informative heads of different quality and one head of pure, loud noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n) if labels is None else labels
    onehot = np.eye(n_classes)[y]  # (n, C)

    def head(signal: float, noise: float) -> np.ndarray:
        return signal * onehot + noise * rng.standard_normal((n, n_classes))  # (n, C)

    logits = {"a": head(1.0, 1.0), "b": head(1.0, 1.3), "c": head(0.8, 1.0), "noise": head(0.0, 4.0)}
    return logits, y


EQUAL = {"a": 1.0, "b": 1.0, "c": 1.0, "noise": 1.0}


@pytest.mark.parametrize("space", SPACES)
def test_noise_head_is_voted_out_and_fit_beats_reference(space):
    logits, y = _heads(800, 4, seed=0)
    fitted = fit_weights(logits, y, reference=EQUAL, space=space, seed=0)
    share = fitted["noise"] / sum(fitted.values())
    assert share < 0.05, fitted
    assert all(w >= 0 for w in fitted.values())
    assert sum(fitted.values()) == pytest.approx(sum(EQUAL.values()))  # scaled back to the reference's sum
    assert vote_f1(logits, y, fitted, space=space) > vote_f1(logits, y, EQUAL, space=space) + 0.05


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("seed", range(6))
def test_fit_is_never_worse_than_reference_in_sample(space, seed):
    rng = np.random.default_rng(100 + seed)
    n, n_classes = int(rng.integers(20, 200)), int(rng.integers(2, 7))
    labels = rng.integers(0, n_classes, n) if seed % 2 else None  # odd seeds: labels unrelated to the logits
    logits, y = _heads(n, n_classes, seed=seed, labels=labels)
    reference = {h: float(w) for h, w in zip(logits, rng.uniform(0.0, 1.0, 4), strict=True)}
    fitted = fit_weights(logits, y, reference=reference, space=space, seed=seed, n_random=32)
    assert vote_f1(logits, y, fitted, space=space) >= vote_f1(logits, y, reference, space=space)


@pytest.mark.parametrize("space", SPACES)
def test_reference_is_kept_when_nothing_beats_it(space):
    """Identical heads: every weighting votes the same, so no candidate beats the reference."""
    logits, y = _heads(60, 3, seed=4)
    same = {h: logits["a"] for h in ("a", "b", "fusion")}
    reference = {"a": 0.7, "b": 0.4, "fusion": 0.1}
    assert fit_weights(same, y, reference=reference, space=space) == reference


@pytest.mark.parametrize("space", SPACES)
def test_vote_f1_is_the_trainers_vote(space):
    logits, y = _heads(120, 5, seed=3)
    weights = {"a": 0.7, "b": 0.4, "c": 0.3, "noise": 0.7}
    scores = voting.soft_vote({h: v.astype(np.float32) for h, v in logits.items()}, weights, space=space)
    expected = metrics.weighted_f1(y, scores.argmax(1), 5)
    assert vote_f1(logits, y, weights, space=space) == pytest.approx(expected)


def test_fit_is_seeded():
    logits, y = _heads(200, 4, seed=1)
    first = fit_weights(logits, y, reference=EQUAL, seed=7)
    assert fit_weights(logits, y, reference=EQUAL, seed=7) == first


def test_stratified_folds_partition_rows_and_balance_classes():
    y = np.repeat([0, 1, 2], [40, 13, 7])
    fold = stratified_folds(y, 5, seed=0)
    assert fold.shape == y.shape and set(fold.tolist()) == set(range(5))
    sizes = np.bincount(fold, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    for cls in range(3):
        per_fold = np.bincount(fold[y == cls], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1
    assert np.array_equal(stratified_folds(y, 5, seed=0), fold)
    assert not np.array_equal(stratified_folds(y, 5, seed=1), fold)


@pytest.mark.parametrize("k", [1, 61])
def test_stratified_folds_reject_impossible_k(k):
    with pytest.raises(ConfigError, match=r"--cv: .*allowed: an integer in \[2, 60\]"):
        stratified_folds(np.zeros(60, dtype=int), k, seed=0)


def test_cross_validation_fits_on_training_rows_only():
    """By construction: a head carries each row's id, and the fit records which rows it saw."""
    logits, y = _heads(90, 3, seed=2)
    logits["row_id"] = np.repeat(np.arange(90, dtype=float)[:, None], 3, axis=1)  # (n, C) row id in every column
    reference = {**EQUAL, "row_id": 0.0}
    seen: list[set[int]] = []

    def recording_fit(lg, lb):
        seen.append(set(lg["row_id"][:, 0].astype(int).tolist()))
        return reference

    cv = cross_validate(logits, y, reference=reference, space="logit", folds=4, seed=0, fit=recording_fit)
    fold = stratified_folds(y, 4, seed=0)
    assert len(seen) == 4
    for k, rows in enumerate(seen):
        held_out = set(np.flatnonzero(fold == k).tolist())
        assert rows.isdisjoint(held_out)
        assert rows | held_out == set(range(90))
    assert cv.fitted_f1 == pytest.approx(cv.reference_f1)  # the recording fit returned the reference


def test_cross_validation_reports_the_optimism_of_the_in_sample_fit():
    """Labels unrelated to the logits: the in-sample fit finds a gain that out-of-fold does not."""
    rng = np.random.default_rng(5)
    logits, _ = _heads(150, 3, seed=5)
    y = rng.integers(0, 3, 150)
    result = posthoc_fit(logits, y, reference=EQUAL, space="logit", folds=5, seed=0, n_random=64)
    in_sample_gain = result.val_f1_fitted - result.val_f1_reference
    assert in_sample_gain > 0.02
    assert result.cv.gain < in_sample_gain - 0.02
    assert result.cv.reference_f1 == pytest.approx(result.val_f1_reference)  # same rows, same weights
    assert len(result.cv.fold_weights) == 5
    assert json.loads(json.dumps(result.to_json()))["cv_gain"] == pytest.approx(result.cv.gain)


def test_fit_voting_rejects_bad_options_with_exit_2(tmp_path):
    proc = run_analysis_here(["fit-voting", "--experiment", "x", "--cv", "1"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: --cv: invalid value; allowed: an integer >= 2; given: 1"]


@pytest.mark.slow
def test_fit_voting_logs_posthoc_results_to_each_trial(search_sweep, tmp_path):
    from mlflow.tracking import MlflowClient

    from mer_core.configs import load_config

    work, _, experiment = search_sweep
    shutil.copy(work / "mlflow.db", tmp_path / "mlflow.db")  # our writes stay out of the shared store
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_analysis(
        ["fit-voting", "--experiment", experiment, "--tracking-uri", uri, "--top", "2", "--cv", "3"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cv gain" in proc.stdout and "fitted weights" in proc.stdout

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    children = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    done = sorted(
        (r for r in children if r.data.tags.get("mersweep.status") == "ok"),
        key=lambda r: -r.data.metrics["val/weighted_f1"],
    )[:2]
    assert done, "the sweep finished no trial"
    for run in done:
        m = run.data.metrics
        assert m["posthoc/val/weighted_f1"] >= m["posthoc/cv/weighted_f1_reference"]  # in-sample >= reference
        assert m["posthoc/gain"] == pytest.approx(
            m["posthoc/cv/weighted_f1_fitted"] - m["posthoc/cv/weighted_f1_reference"]
        )
        tags = {
            k.rsplit(".", 1)[-1]: float(v) for k, v in run.data.tags.items() if k.startswith("mersweep.posthoc.weight.")
        }
        assert set(tags) == {"audio", "text", "video", "fusion"} and all(w >= 0 for w in tags.values())
        summary = json.loads(
            Path(client.download_artifacts(run.info.run_id, "posthoc_voting.json", str(tmp_path))).read_text()
        )
        cfg = load_config(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path)))
        assert summary["reference_weights"] == voting.resolve_weights(cfg.voting, tuple(tags))[0]
        assert summary["space"] == cfg.voting.space and summary["folds"] == 3
        assert summary["fitted_weights"] == pytest.approx(tags, rel=1e-5)
