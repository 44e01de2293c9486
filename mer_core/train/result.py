"""What one training run returns: metrics, per-fold details and the saved validation (and test) logits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Status = Literal["ok", "pruned", "diverged"]


@dataclass
class FoldResult:
    """One fold's outcome (mutable while the fold trains, then handed over read-only)."""

    fold: int
    metrics: dict[str, float]  # best validation metrics of the final stage
    val_idx: np.ndarray  # (n_val,) indices into the FeatureSet
    val_labels: np.ndarray  # (n_val,)
    val_logits: dict[str, np.ndarray]  # head -> (n_val, C), from the best checkpoint
    pseudo: list[dict[str, Any]] = field(default_factory=list)  # one report per self-training round
    epochs: int = 0
    # head -> (n_test, C): the fold's final model on the held-out test split (empty without one)
    test_logits: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class TrialResult:
    """The result of `mer_core.train.run`: what sweeps log and analysis reads back.

    `metrics` holds fold means (`val/weighted_f1`) and stds (`val/weighted_f1_std`); with a
    held-out test split also `test/<name>` for each `val/<name>`: each fold's final model scored
    once on every test row, averaged over folds the same way.
    `val_logits` concatenates every fold's validation logits per head so voting weights can
    be re-fit post hoc without retraining.
    """

    status: Status
    metrics: dict[str, float]
    folds: list[FoldResult]
    head_names: tuple[str, ...]
    class_names: tuple[str, ...]
    failure_reason: str = ""
    epochs: int = 0
    seconds: float = 0.0
    model_state: dict[str, Any] | None = None  # state dict of the last fold's best model (kept on request)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def val_logits(self) -> dict[str, np.ndarray]:
        """head -> (n_val_total, C) validation logits over all folds."""
        return {h: np.concatenate([f.val_logits[h] for f in self.folds]) for h in self.head_names} if self.folds else {}

    def test_logits(self) -> dict[str, np.ndarray]:
        """head -> (folds * n_test, C): every fold's test logits, fold after fold ({} without a test split)."""
        folds = [f for f in self.folds if f.test_logits]
        return {h: np.concatenate([f.test_logits[h] for f in folds]) for h in self.head_names} if folds else {}

    def val_labels(self) -> np.ndarray:
        return np.concatenate([f.val_labels for f in self.folds]) if self.folds else np.zeros(0, dtype=np.int64)

    def val_fold_ids(self) -> np.ndarray:
        """(n_val_total,) which fold each validation row came from (for honest post-hoc CV)."""
        if not self.folds:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.full(len(f.val_labels), f.fold) for f in self.folds])

    def logits_npz(self) -> dict[str, np.ndarray]:
        """Arrays for the `val_logits.npz` artifact."""
        out = {f"logits/{h}": v for h, v in self.val_logits().items()}
        out["labels"] = self.val_labels()
        out["fold"] = self.val_fold_ids()
        out["index"] = np.concatenate([f.val_idx for f in self.folds]) if self.folds else np.zeros(0, dtype=np.int64)
        return out
