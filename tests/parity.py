"""Parity of a fused member and its single run, in a form float rounding on another CPU cannot break.

Batched kernels (bmm under vmap) round differently from a single run's matmuls, and training
amplifies that a little. Continuous quantities (losses, logits) are compared at a float
tolerance. Discrete metrics (F1, accuracy) are not compared directly: one validation row whose
top-2 logits are a near tie can flip its argmax on one machine and not on another, and moves an
F1 by far more than the rounding that caused it. Instead every head's predictions must agree on
every row whose top-2 margin exceeds the float noise; when no row flipped at all (the usual
case) the discrete metrics must then be equal too.
"""

from __future__ import annotations

import numpy as np
import pytest

from mer_core.configs import ExperimentConfig
from mer_core.train import TrialResult
from mer_core.train.recipe import voting_setup
from mer_core.voting import soft_vote

ATOL = 1e-4  # losses reported per epoch and at the end
# Final validation logits, relative to a head's logit scale: a few epochs of Adam amplify 1-ulp
# differences most in large unimodal logits (AdamW, lr 3e-2: 0.011 on logits of magnitude 4).
LOGIT_RTOL = 5e-3
EPOCH_CONTINUOUS = ("val/loss", "train/loss")  # reported every epoch
CONTINUOUS = (*EPOCH_CONTINUOUS, "test/loss")  # in the final metrics (test/: with a held-out test split)


def _continuous(key: str) -> bool:
    return any(key == k or key == f"{k}_std" for k in CONTINUOUS)


def flipped_rows(want: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per head, the rows whose argmax differs; fails if any of them is not a near tie.

    The float noise of a head is the largest logit difference between the two runs (itself held
    to LOGIT_RTOL of the head's scale); a row may flip only where its top-2 margin is below twice
    that noise, i.e. where the two runs' rounding could reorder its top two classes.
    """
    out = {}
    for head, w in want.items():
        g = got[head]
        scale = max(1.0, float(np.abs(w).max(initial=0.0)))
        np.testing.assert_allclose(g, w, atol=LOGIT_RTOL * scale, rtol=0, err_msg=head)
        noise = float(np.abs(g - w).max(initial=0.0))
        rows = np.flatnonzero(w.argmax(1) != g.argmax(1))
        if rows.size:
            top2 = np.sort(w[rows], axis=1)[:, -2:]  # (r, 2)
            margins = top2[:, 1] - top2[:, 0]
            assert (margins <= 2 * noise).all(), (head, rows[margins > 2 * noise], margins, noise)
        out[head] = rows
    return out


def voted(logits: dict[str, np.ndarray], cfg: ExperimentConfig) -> dict[str, np.ndarray]:
    """The soft-voted scores of `cfg`'s ensemble as one more "head" ({} without logits).

    A vote can sit at a near tie where no head does: two runs whose heads all agree may still
    vote differently on such a row, and a discrete metric moves with it.
    """
    if not logits:
        return {}
    weights = voting_setup(cfg.voting, tuple(logits), cls_heads=cfg.loss.cls_heads)
    return {"vote": soft_vote(logits, weights, space=cfg.voting.space)}


def assert_same_run(
    single: TrialResult,
    single_seen: list[dict],
    member: TrialResult,
    member_seen: list[dict],
    atol: float = ATOL,
    cfg: ExperimentConfig | None = None,
) -> None:
    """Same status, stages and epochs; same losses per epoch and at the end; same predictions
    except at near ties; same discrete metrics when no prediction flipped.

    With `cfg` (the run's config), the voted ensemble's predictions are held to the near-tie
    rule too, so a vote that flips at a tie excuses the discrete metrics as a head's flip does.
    """
    assert member.status == single.status and member.epochs == single.epochs
    assert [(m["stage"], m["fold"], m["epoch"], m["iteration"]) for m in member_seen] == [
        (m["stage"], m["fold"], m["epoch"], m["iteration"]) for m in single_seen
    ]
    for got, want in zip(member_seen, single_seen, strict=True):
        assert set(got) == set(want)
        for key in EPOCH_CONTINUOUS:
            assert got[key] == pytest.approx(want[key], abs=atol), (key, got["stage"], got["epoch"])
    assert set(member.metrics) == set(single.metrics)
    want_val, got_val = (single.val_logits(), member.val_logits()) if single.folds else ({}, {})
    want_test, got_test = single.test_logits(), member.test_logits()
    if cfg is not None:
        want_val, got_val = {**want_val, **voted(want_val, cfg)}, {**got_val, **voted(got_val, cfg)}
        want_test, got_test = {**want_test, **voted(want_test, cfg)}, {**got_test, **voted(got_test, cfg)}
    flips = flipped_rows(want_val, got_val)
    # The held-out test predictions too: a near tie there may flip a test/ metric alone.
    test_flips = flipped_rows(want_test, got_test)
    exact = not any(rows.size for rows in [*flips.values(), *test_flips.values()])
    for key, value in single.metrics.items():
        if _continuous(key) or exact:
            assert member.metrics[key] == pytest.approx(value, abs=atol), key
