"""The data layer: sources (synthetic-mer, features, uci-mfeat), post-processing, splits, export.

Public API:
    load_data(cfg) -> FeatureSet
    make_splits(fs, *, folds, val_fraction, seed) -> list[Split]
    write_features(fs, root, *, label_file="train-label.csv") -> Path
"""

from mer_core.data.featureset import FeatureSet, Split
from mer_core.data.loading import SOURCES, load_data
from mer_core.data.splits import make_splits
from mer_core.data.writer import write_features

__all__ = ["SOURCES", "FeatureSet", "Split", "load_data", "make_splits", "write_features"]
