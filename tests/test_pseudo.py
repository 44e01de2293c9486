"""Self-training helpers: class thresholds, pseudo-label selection, oversampling, report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mer_core.configs.schema import MER2024_CLASSES, SelfTrainingConfig
from mer_core.errors import ConfigError
from mer_core.pseudo import class_thresholds, oversample, pseudo_label_report, select_pseudo_labels

CLASSES = MER2024_CLASSES  # worried, happy, neutral, angry, surprise, sad


def test_thresholds_dominant_vs_minority() -> None:
    counts = np.array([50, 30, 10, 5, 3, 2])
    th = class_thresholds(SelfTrainingConfig(), CLASSES, counts)
    np.testing.assert_array_equal(th, [0.99, 0.99, 0.85, 0.85, 0.85, 0.85])
    # A perfectly balanced set: every share equals 1/C, so every class is dominant.
    np.testing.assert_array_equal(class_thresholds(SelfTrainingConfig(), CLASSES, np.full(6, 7)), np.full(6, 0.99))
    cfg = SelfTrainingConfig(dominant_share=0.4, dominant_threshold=0.9, minority_threshold=0.5)
    np.testing.assert_array_equal(class_thresholds(cfg, CLASSES, counts), [0.9, 0.5, 0.5, 0.5, 0.5, 0.5])


def test_threshold_overrides_by_name() -> None:
    cfg = SelfTrainingConfig(class_thresholds={"sad": 0.6, "worried": 0.95})
    th = class_thresholds(cfg, CLASSES, np.array([50, 30, 10, 5, 3, 2]))
    np.testing.assert_array_equal(th, [0.95, 0.99, 0.85, 0.85, 0.85, 0.6])
    bad = SelfTrainingConfig(class_thresholds={"fear": 0.6})
    with pytest.raises(ConfigError, match=r"self_training\.class_thresholds\.fear.*worried, happy"):
        class_thresholds(bad, CLASSES, np.ones(6))
    with pytest.raises(ValueError):
        class_thresholds(SelfTrainingConfig(), CLASSES, np.ones(5))


def test_select_pseudo_labels() -> None:
    probs = np.array(
        [
            [0.95, 0.05, 0.0],  # class 0 at its threshold 0.95 -> kept (>=)
            [0.10, 0.80, 0.10],  # class 1, 0.8 < 0.85 -> dropped
            [0.02, 0.90, 0.08],  # class 1 kept
            [0.30, 0.30, 0.40],  # class 2 (threshold 0.3) kept
            [0.94, 0.06, 0.0],  # class 0 below -> dropped
        ]
    )
    th = np.array([0.95, 0.85, 0.3])
    idx, labels, conf = select_pseudo_labels(probs, th)
    np.testing.assert_array_equal(idx, [0, 2, 3])
    np.testing.assert_array_equal(labels, [0, 1, 2])
    np.testing.assert_allclose(conf, [0.95, 0.90, 0.40])
    assert idx.dtype == labels.dtype == np.int64
    idx2, labels2, _ = select_pseudo_labels(probs, th, max_pseudo=2)
    np.testing.assert_array_equal(idx2, [0, 2])  # the two most confident, in index order
    np.testing.assert_array_equal(labels2, [0, 1])
    assert select_pseudo_labels(probs, th, max_pseudo=0)[0].size == 0
    assert select_pseudo_labels(probs, th, max_pseudo=10)[0].size == 3
    assert select_pseudo_labels(np.zeros((0, 3)), th)[0].size == 0
    with pytest.raises(ValueError):
        select_pseudo_labels(probs, np.ones(4))


def test_select_max_pseudo_ties_prefer_lower_index() -> None:
    probs = np.tile([[0.9, 0.1]], (5, 1))
    idx, _, _ = select_pseudo_labels(probs, np.array([0.5, 0.5]), max_pseudo=3)
    np.testing.assert_array_equal(idx, [0, 1, 2])


def test_oversample() -> None:
    labels = np.array([0] * 5 + [1] * 40 + [3] * 2 + [-1] * 4)
    rng = np.random.default_rng(0)
    idx = oversample(labels, target=20, rng=rng)
    counts = np.bincount(labels[idx], minlength=5)
    np.testing.assert_array_equal(counts, [20, 40, 0, 20, 0])  # 1 keeps its 40; 2 and 4 stay empty
    assert (labels[idx] >= 0).all()
    for c in (0, 1, 3):
        assert set(np.flatnonzero(labels == c)) <= set(idx)  # every original is kept
    np.testing.assert_array_equal(idx, oversample(labels, target=20, rng=np.random.default_rng(0)))
    assert not np.array_equal(idx, oversample(labels, target=20, rng=np.random.default_rng(1)))
    assert oversample(np.array([-1, -1]), target=3, rng=rng).size == 0
    with pytest.raises(ValueError):
        oversample(labels, target=0, rng=rng)


def test_pseudo_label_report() -> None:
    names = ("a", "b", "c")
    labels = np.array([0, 0, 1, 1, 1])
    truth = np.array([0, 1, 1, -1, 1])
    rep = pseudo_label_report(labels, truth, names)
    assert rep["n"] == 5 and rep["n_known"] == 4
    assert (rep["count/a"], rep["count/b"], rep["count/c"]) == (2, 3, 0)
    assert rep["accuracy"] == pytest.approx(3 / 4)
    assert rep["accuracy/a"] == pytest.approx(0.5) and rep["accuracy/b"] == pytest.approx(1.0)
    assert math.isnan(rep["accuracy/c"])
    unknown = pseudo_label_report(labels, np.full(5, -1), names)
    assert math.isnan(unknown["accuracy"]) and unknown["n_known"] == 0
    no_truth = pseudo_label_report(np.zeros(0, dtype=int), None, names)
    assert no_truth == {"n": 0.0, "count/a": 0.0, "count/b": 0.0, "count/c": 0.0}
