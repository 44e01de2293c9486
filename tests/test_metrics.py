"""Metrics from one confusion matrix, checked against scikit-learn on many random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from mer_core.metrics import (
    accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    per_class_f1,
    weighted_f1,
)


def _case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    c = int(rng.integers(2, 11))
    n = int(rng.integers(1, 60))
    # Draw from random subsets so that classes are often absent from y_true, y_pred or both.
    true_pool = rng.choice(c, size=int(rng.integers(1, c + 1)), replace=False)
    pred_pool = rng.choice(c, size=int(rng.integers(1, c + 1)), replace=False)
    y_true = rng.choice(true_pool, size=n)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.choice(pred_pool, size=n))
    return y_true, y_pred, c


def test_matches_sklearn_on_random_inputs() -> None:
    rng = np.random.default_rng(0)
    for _ in range(150):
        y_true, y_pred, c = _case(rng)
        labels = list(range(c))
        kw = {"labels": labels, "zero_division": 0}
        np.testing.assert_array_equal(
            confusion_matrix(y_true, y_pred, c), skm.confusion_matrix(y_true, y_pred, labels=labels)
        )
        np.testing.assert_allclose(per_class_f1(y_true, y_pred, c), skm.f1_score(y_true, y_pred, average=None, **kw))
        assert weighted_f1(y_true, y_pred, c) == pytest.approx(skm.f1_score(y_true, y_pred, average="weighted", **kw))
        assert macro_f1(y_true, y_pred, c) == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", **kw))
        assert accuracy(y_true, y_pred, c) == pytest.approx(skm.accuracy_score(y_true, y_pred))


def test_classification_report() -> None:
    names = ("worried", "happy", "neutral")
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    rep = classification_report(y_true, y_pred, names)
    assert set(rep) == {"weighted_f1", "macro_f1", "accuracy", "f1/worried", "f1/happy", "f1/neutral"}
    assert rep["accuracy"] == pytest.approx(4 / 6)
    assert rep["weighted_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="weighted"))
    assert rep["f1/happy"] == pytest.approx(0.8)
    assert all(isinstance(v, float) for v in rep.values())


def test_edge_cases_and_bad_input() -> None:
    empty = np.zeros(0, dtype=np.int64)
    assert weighted_f1(empty, empty, 3) == 0.0 and accuracy(empty, empty, 3) == 0.0
    np.testing.assert_array_equal(confusion_matrix(empty, empty, 2), np.zeros((2, 2)))
    assert weighted_f1(np.array([1, 1]), np.array([1, 1]), 4) == 1.0
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        weighted_f1(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        accuracy(np.array([-1, 0]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="integer"):
        accuracy(np.array([0.0, 1.0]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="length"):
        accuracy(np.array([0, 1]), np.array([0]), 3)
