"""FeatureSet: the in-memory dataset every part of mersweep consumes.

Modalities are named (MER2024: audio, text, video; other data: whatever it names);
nothing here assumes a count. A missing modality is a False in `mask`, and its
feature row is zeros, so models and losses handle it with the mask alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """Indices into a FeatureSet for one fold: labelled train / labelled validation."""

    train: np.ndarray  # (n_train,) int64, all labelled
    val: np.ndarray  # (n_val,) int64, all labelled


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """Named per-modality features with labels (-1 = unlabelled) and a presence mask."""

    name: str
    features: Mapping[str, np.ndarray]  # modality -> (N, D_m) float32
    labels: np.ndarray  # (N,) int64, -1 = unlabelled
    mask: np.ndarray  # (N, M) bool, True = modality present; columns follow `modalities`
    class_names: tuple[str, ...]
    sample_ids: tuple[str, ...]
    # Ground truth for unlabelled samples where known (synthetic, bundled real data),
    # used only to report pseudo-label accuracy; -1 = unknown. None when never known.
    true_labels: np.ndarray | None = None  # (N,) int64

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.features)

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(x.shape[1]) for m, x in self.features.items()}

    @property
    def n_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def labelled_idx(self) -> np.ndarray:
        return np.flatnonzero(self.labels >= 0)

    @property
    def unlabelled_idx(self) -> np.ndarray:
        return np.flatnonzero(self.labels < 0)

    def class_counts(self) -> np.ndarray:
        """(C,) labelled samples per class."""
        return np.bincount(self.labels[self.labels >= 0], minlength=self.n_classes)

    def nbytes(self) -> int:
        return int(sum(x.nbytes for x in self.features.values()) + self.labels.nbytes + self.mask.nbytes)
