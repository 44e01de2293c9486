"""`uci-mfeat`: the UCI Multiple Features handwritten digits, shipped inside mer_core.

2,000 samples (200 per digit), six views: fou (76 Fourier coefficients), fac (216 profile
correlations), kar (64 Karhunen-Loève coefficients), pix (240 pixel averages), zer (47 Zernike
moments), mor (6 morphological features). Real multi-view data available offline: the files, their
licence (CC BY 4.0) and citation are in `mer_core/data/uci_mfeat/`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mer_core.configs.schema import UciConfig
from mer_core.data.featureset import FeatureSet
from mer_core.errors import ConfigError, DataError

VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")
CLASS_NAMES = tuple(str(d) for d in range(10))


# The gzip-compressed CSV files beside this module (package data of mer_core).
UCI_FOLDER = Path(__file__).resolve().parent / "uci_mfeat"


def view_file(view: str, *, folder: Path = UCI_FOLDER) -> Path:
    """The file holding `view` (one of VIEWS) in `folder`."""
    return folder / f"mfeat-{view}.csv.gz"


def load_uci(cfg: UciConfig, *, folder: Path = UCI_FOLDER) -> FeatureSet:
    """Loads the selected views of UCI Multiple Features.

    Args:
        cfg: `views` selects and orders the modalities; empty means all six.
        folder: Where the files are (the shipped copy by default).

    Returns:
        A fully labelled FeatureSet (classes "0".."9"), `true_labels` equal to `labels`.

    Raises:
        ConfigError: An unknown or repeated view name in `data.uci.views`.
        DataError: One of the data files is missing or malformed (an incomplete installation).
    """
    views = _check_views(cfg.views)
    features: dict[str, np.ndarray] = {}
    labels = None
    for view in views:
        x, y = _read_view(view_file(view, folder=folder))  # (2000, D_view), (2000,)
        if labels is not None and not np.array_equal(labels, y):
            raise DataError(f"{folder}: the label column of view {view} differs from that of view {views[0]}")
        features[view], labels = x, y
    return FeatureSet(
        name="uci-mfeat",
        features=features,
        labels=labels,
        mask=np.ones((labels.shape[0], len(views)), dtype=bool),  # (N, M): every view present
        class_names=CLASS_NAMES,
        sample_ids=tuple(f"mfeat{i:04d}" for i in range(labels.shape[0])),
        true_labels=labels.copy(),
    )


def _check_views(views: tuple[str, ...]) -> tuple[str, ...]:
    if not views:
        return VIEWS
    for view in views:
        if view not in VIEWS:
            raise ConfigError("data.uci.views", ", ".join(VIEWS), view, "unknown view")
    if len(set(views)) != len(views):
        raise ConfigError("data.uci.views", "distinct names from " + ", ".join(VIEWS), list(views), "repeated view")
    return tuple(views)


def _read_view(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) float32 features and (N,) int64 labels; the first row is a header of column indices.

    pandas decompresses the `.gz` on the fly (it infers gzip from the suffix).
    """
    import pandas as pd  # here: trial workers import this module, only the driver reads the files

    try:
        table = pd.read_csv(path, header=0, engine="c", dtype=np.float64).to_numpy()  # (N, D + 1)
    except (OSError, EOFError, ValueError) as err:  # EOFError: a truncated .gz
        raise DataError(f"cannot read {path}: {err}") from None
    labels = table[:, -1]
    if not np.isfinite(table).all() or not np.isin(labels, np.arange(10)).all():
        raise DataError(f"{path}: expected finite features and a last column of digit labels 0..9")
    return np.ascontiguousarray(table[:, :-1], dtype=np.float32), labels.astype(np.int64)
