"""Weighted soft voting: weights resolution, logit/prob spaces, torch and numpy alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mer_core.configs.schema import VotingConfig
from mer_core.errors import ConfigError
from mer_core.voting import resolve_weights, soft_vote, vote_probs

HEADS = ("audio", "text", "video", "fusion")


def _logits(seed: int = 0, n: int = 20, c: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {h: rng.normal(size=(n, c)).astype(np.float32) for h in HEADS}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_resolve_weights_defaults_and_unmatched() -> None:
    weights, unmatched = resolve_weights(VotingConfig(), HEADS)
    assert weights == {"audio": 0.7, "text": 0.3, "video": 0.4, "fusion": 0.7}
    assert unmatched == ()
    cfg = VotingConfig(weights={"audio": 1.0, "vidoe": 2.0}, default_weight=0.25)
    weights, unmatched = resolve_weights(cfg, ("audio", "eeg"))
    assert weights == {"audio": 1.0, "eeg": 0.25}
    assert unmatched == ("vidoe",)


@pytest.mark.parametrize("space", ["logit", "prob"])
def test_soft_vote_numpy_and_torch_agree(space: str) -> None:
    logits = _logits()
    weights, _ = resolve_weights(VotingConfig(), HEADS)
    np_score = soft_vote(logits, weights, space=space)
    t_score = soft_vote({h: torch.from_numpy(v) for h, v in logits.items()}, weights, space=space)
    assert isinstance(np_score, np.ndarray) and isinstance(t_score, torch.Tensor)
    assert np_score.shape == (20, 6)
    np.testing.assert_allclose(t_score.numpy(), np_score, rtol=1e-5, atol=1e-6)
    per_head = logits if space == "logit" else {h: _softmax(v) for h, v in logits.items()}
    np.testing.assert_allclose(np_score, sum(weights[h] * per_head[h] for h in HEADS), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("space", ["logit", "prob"])
def test_vote_probs(space: str) -> None:
    logits = _logits(1)
    weights = {"audio": 0.7, "text": 0.3, "video": 0.4, "fusion": 0.7}
    probs = vote_probs(logits, weights, space=space)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(probs.argmax(1), soft_vote(logits, weights, space=space).argmax(1))
    if space == "logit":
        np.testing.assert_allclose(probs, _softmax(sum(weights[h] * logits[h] for h in HEADS)), rtol=1e-5)
    else:
        mix = sum(weights[h] * _softmax(logits[h]) for h in HEADS) / sum(weights.values())
        np.testing.assert_allclose(probs, mix, rtol=1e-5)
    t_probs = vote_probs({h: torch.from_numpy(v) for h, v in logits.items()}, weights, space=space)
    np.testing.assert_allclose(t_probs.numpy(), probs, rtol=1e-5, atol=1e-6)


def test_single_head_vote_is_that_head() -> None:
    logits = {"fusion": _logits()["fusion"]}
    probs = vote_probs(logits, {"fusion": 1.0, "unused": 3.0})
    np.testing.assert_allclose(probs, _softmax(logits["fusion"]), rtol=1e-5)


def test_bad_inputs() -> None:
    logits = _logits()
    with pytest.raises(ConfigError, match=r"voting\.weights"):
        soft_vote(logits, dict.fromkeys(HEADS, 0.0))
    with pytest.raises(ValueError, match="no voting weight"):
        soft_vote(logits, {"audio": 1.0})
    mixed = dict(logits)
    mixed["audio"] = torch.from_numpy(mixed["audio"])
    with pytest.raises(TypeError):
        soft_vote(mixed, dict.fromkeys(HEADS, 1.0))
    with pytest.raises(ValueError, match="same"):
        soft_vote({"a": np.zeros((3, 2)), "b": np.zeros((3, 4))}, {"a": 1.0, "b": 1.0})
    with pytest.raises(ConfigError, match=r"voting\.space"):
        soft_vote(logits, dict.fromkeys(HEADS, 1.0), space="rank")  # type: ignore[arg-type]
