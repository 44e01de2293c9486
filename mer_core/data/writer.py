"""Writes a FeatureSet as a MERTools-style feature directory (the inverse of the `features` source).

Useful to export synthetic or converted data, and the round-trip tests rely on it:
`load_data(features: {root, modalities: {m: m}, classes: fs.class_names})` gives the same
features, labels, mask and class names back.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from mer_core.data.featureset import FeatureSet
from mer_core.errors import DataError


def write_features(fs: FeatureSet, root: str | Path, *, label_file: str = "train-label.csv") -> Path:
    """Writes `<root>/<modality>/<sample>.npy` and a `name,label` CSV.

    Only present modalities get a file (a masked-out modality of a sample has none), and only
    labelled samples get a CSV row (the rest is the unlabelled pool when read back).

    Args:
        fs: The data to write.
        root: Target folder (created if needed).
        label_file: Name of the label CSV under `root`.

    Returns:
        The root folder.

    Raises:
        DataError: A sample id cannot be a file name (empty, path separators, leading dot).
    """
    root = Path(root)
    for sid in fs.sample_ids:
        if not sid or "/" in sid or "\\" in sid or sid.startswith("."):
            raise DataError(f"sample id {sid!r} cannot be used as a feature file name")
    for j, (modality, x) in enumerate(fs.features.items()):
        folder = root / modality
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(fs.mask[:, j]).tolist():
            np.save(folder / f"{fs.sample_ids[i]}.npy", np.ascontiguousarray(x[i], dtype=np.float32))  # (D_m,)
    with open(root / label_file, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "label"])
        for i in fs.labelled_idx.tolist():
            writer.writerow([fs.sample_ids[i], fs.class_names[fs.labels[i]]])
    return root
