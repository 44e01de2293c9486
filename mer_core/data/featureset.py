"""FeatureSet: the in-memory dataset every part of mersweep consumes.

Modalities are named (MER2024: audio, text, video; other data: whatever it names);
nothing here assumes a count. A missing modality is a False in `mask`, and its
feature row is zeros, so models and losses handle it with the mask alone.

The held-out test rows (`data.test_fraction`, or `data.features.test_labels`) are not rows of the
FeatureSet: they sit apart in `test`, a FeatureSet of their own. Label hiding, the unlabelled pool,
folds, early stopping, pseudo-labels and voting read only the main rows, so no code path can train
or select on a test row by mistake; only the recipe's final scoring reads `test`.
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
    # The held-out test split (every row labelled), standardized with the main rows' statistics.
    test: FeatureSet | None = None

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

    @property
    def n_test(self) -> int:
        """Held-out test rows (0 without a test split)."""
        return 0 if self.test is None else self.test.n_samples

    def nbytes(self) -> int:
        own = sum(x.nbytes for x in self.features.values()) + self.labels.nbytes + self.mask.nbytes
        return int(own + (0 if self.test is None else self.test.nbytes()))

    def take(self, idx: np.ndarray) -> FeatureSet:
        """A new FeatureSet with the rows `idx` (in that order) of every array.

        Args:
            idx: (K,) integer row indices or an (N,) boolean row mask.

        Returns:
            A FeatureSet of K samples (the test split, if any, unchanged); arrays are copies,
            so the result owns its memory.
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
            test=self.test,
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
        if self.test is not None:
            problems += self._test_problems(self.test)
        if problems:
            raise ValueError(f"FeatureSet {self.name!r} breaks its contract: " + "; ".join(problems))

    def _test_problems(self, test: FeatureSet) -> list[str]:
        """What breaks the contract between the main rows and the test split."""
        problems = []
        if test.test is not None:
            problems.append("the test split has a test split of its own")
        if test.dims != self.dims or test.class_names != self.class_names:
            problems.append(f"test split has dims {test.dims} and classes {test.class_names}, not the main rows'")
        if test.n_samples and test.labels.min() < 0:
            problems.append("test split has unlabelled rows")
        if set(test.sample_ids) & set(self.sample_ids):
            problems.append("test split shares samples with the main rows")
        try:
            test.validate()
        except ValueError as err:
            problems.append(f"test split: {err}")
        return problems
