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

    def take(self, idx: np.ndarray) -> FeatureSet:
        """A new FeatureSet with the rows `idx` (in that order) of every array.

        Args:
            idx: (K,) integer row indices or an (N,) boolean row mask.

        Returns:
            A FeatureSet of K samples; arrays are copies, so the result owns its memory.
        """
        idx = np.flatnonzero(idx) if idx.dtype == bool else np.asarray(idx, dtype=np.int64)
        return FeatureSet(
            name=self.name,
            features={m: x[idx] for m, x in self.features.items()},  # m -> (K, D_m)
            labels=self.labels[idx],  # (K,)
            mask=self.mask[idx],  # (K, M)
            class_names=self.class_names,
            sample_ids=tuple(self.sample_ids[i] for i in idx.tolist()),
            true_labels=None if self.true_labels is None else self.true_labels[idx],
        )

    def validate(self) -> None:
        """Checks the contract (shapes, dtypes, label range); raises ValueError on a loader bug."""
        n, names = self.n_samples, self.modalities
        problems = []
        if self.labels.dtype != np.int64 or self.labels.shape != (n,):
            problems.append(f"labels {self.labels.dtype}{self.labels.shape}, want int64 ({n},)")
        if self.mask.dtype != np.bool_ or self.mask.shape != (n, len(names)):
            problems.append(f"mask {self.mask.dtype}{self.mask.shape}, want bool ({n}, {len(names)})")
        for m, x in self.features.items():
            if x.dtype != np.float32 or x.ndim != 2 or x.shape[0] != n:
                problems.append(f"features[{m!r}] {x.dtype}{x.shape}, want float32 ({n}, D)")
        if len(self.sample_ids) != n or len(set(self.sample_ids)) != n:
            problems.append("sample_ids must be N unique names")
        if n and (self.labels.min() < -1 or self.labels.max() >= self.n_classes):
            problems.append(f"labels outside -1..{self.n_classes - 1}")
        if self.true_labels is not None and self.true_labels.shape != (n,):
            problems.append(f"true_labels shape {self.true_labels.shape}, want ({n},)")
        if problems:
            raise ValueError(f"FeatureSet {self.name!r} breaks its contract: " + "; ".join(problems))
