"""Weighted soft voting over the classifier heads (post hoc: it changes no training).

The reference sums weighted logits (audio 0.7, video 0.4, text 0.3, fusion 0.7); the
paper speaks of "confidence scores", so probability-space voting is an option. Works on
torch tensors and numpy arrays alike and returns the kind it was given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, TypeVar

import numpy as np
import torch

from mer_core.configs.schema import VotingConfig
from mer_core.errors import ConfigError

__all__ = ["resolve_weights", "soft_vote", "vote_probs"]

Array = TypeVar("Array", torch.Tensor, np.ndarray)
Space = Literal["logit", "prob"]


def resolve_weights(cfg: VotingConfig, head_names: Sequence[str]) -> tuple[dict[str, float], tuple[str, ...]]:
    """The voting weight of each head.

    Args:
        cfg: voting config; heads it does not name get `cfg.default_weight`.
        head_names: the model's heads.

    Returns:
        (head -> weight, names in `cfg.weights` that match no head), the latter so the
        caller can log them (a typo there silently falls back to the default otherwise).
    """
    weights = {h: float(cfg.weights.get(h, cfg.default_weight)) for h in head_names}
    unmatched = tuple(name for name in cfg.weights if name not in weights)
    return weights, unmatched


def _checked(logits: Mapping[str, Array], weights: Mapping[str, float]) -> tuple[list[str], bool]:
    if not logits:
        raise ValueError("soft_vote needs at least one head")
    heads = list(logits)
    missing = [h for h in heads if h not in weights]
    if missing:
        raise ValueError(f"no voting weight for heads {missing}; given weights for {sorted(weights)}")
    if sum(float(weights[h]) for h in heads) <= 0.0:
        raise ConfigError("voting.weights", "at least one head with weight > 0", {h: weights[h] for h in heads})
    is_torch = [isinstance(logits[h], torch.Tensor) for h in heads]
    if any(is_torch) and not all(is_torch):
        raise TypeError("soft_vote: logits must be all torch tensors or all numpy arrays")
    shapes = {tuple(logits[h].shape) for h in heads}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"soft_vote: every head needs the same (N, C) shape; got {shapes}")
    return heads, is_torch[0]


def _softmax(x: Array) -> Array:
    if isinstance(x, torch.Tensor):
        return torch.softmax(x.float(), dim=-1)
    z = np.asarray(x, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))  # shift for stability
    return z / z.sum(axis=-1, keepdims=True)


def soft_vote(logits: Mapping[str, Array], weights: Mapping[str, float], *, space: Space = "logit") -> Array:
    """Weighted vote scores of the heads.

    Args:
        logits: head -> (N, C) logits (all torch or all numpy).
        weights: head -> weight; weights of heads not in `logits` are ignored.
        space: `logit` scores Σ w·logits (the reference); `prob` scores Σ w·softmax(logits).

    Returns:
        (N, C) scores of the same kind as the inputs; argmax gives the voted class.

    Raises:
        ConfigError: the weights of the given heads are all zero (field `voting.weights`).
    """
    heads, _ = _checked(logits, weights)
    if space not in ("logit", "prob"):
        raise ConfigError("voting.space", "logit, prob", space)
    score = None
    for h in heads:
        term = float(weights[h]) * (logits[h] if space == "logit" else _softmax(logits[h]))  # (N, C)
        score = term if score is None else score + term
    return score


def vote_probs(logits: Mapping[str, Array], weights: Mapping[str, float], *, space: Space = "logit") -> Array:
    """Class probabilities of the vote, used for pseudo-label thresholds.

    `logit` space: softmax of Σ w·logits (so scaling every weight by k also sharpens the
    probabilities, as a temperature 1/k would). `prob` space: Σ w·softmax / Σ w, a
    mixture of the heads' probabilities.

    Returns:
        (N, C) probabilities (float32 tensor or float64 array) summing to 1 per row.
    """
    score = soft_vote(logits, weights, space=space)
    if space == "logit":
        return _softmax(score)
    if isinstance(score, torch.Tensor):
        return score / score.sum(dim=-1, keepdim=True)
    return score / score.sum(axis=-1, keepdims=True)
