"""`load_data`: pick a source from the registry, hold out the test split, then post-process.

A source is a function `DataConfig -> FeatureSet`; each adapter below hands its source only
its own config section (plus the data seed where the source is random).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from mer_core.configs.schema import DataConfig
from mer_core.data.featureset import FeatureSet
from mer_core.data.mertools import hold_out_test_labels, load_features_dir
from mer_core.data.splits import hold_out_test
from mer_core.data.synthetic import generate_synthetic
from mer_core.data.transforms import cap_unlabelled, hide_labels, standardize
from mer_core.data.uci import load_uci
from mer_core.errors import ConfigError

log = logging.getLogger(__name__)

SourceFn = Callable[[DataConfig], FeatureSet]


def _synthetic(cfg: DataConfig) -> FeatureSet:
    return generate_synthetic(cfg.synthetic, seed=cfg.seed)


def _features(cfg: DataConfig) -> FeatureSet:
    fs, _ = load_features_dir(cfg.features)
    return hold_out_test_labels(fs, cfg.features)  # the test label file's samples, if one is named


def _uci(cfg: DataConfig) -> FeatureSet:
    return load_uci(cfg.uci)


# Filled once here and never mutated: a constant, not global state.
SOURCES: dict[str, SourceFn] = {
    "synthetic-mer": _synthetic,
    "features": _features,
    "uci-mfeat": _uci,
}


def load_data(cfg: DataConfig) -> FeatureSet:
    """Loads `cfg.source`, holds out test_fraction, then applies labelled_fraction, max_unlabelled and
    standardize, in that order.

    The test split (a stratified `test_fraction` of the labelled samples, seeded by `cfg.seed`, or
    the samples of `features.test_labels`) leaves the main rows first, so label hiding, the pool,
    the folds and everything the recipe trains or selects on see only the other rows; it comes
    back as `FeatureSet.test`, scaled with the main rows' statistics.

    Args:
        cfg: The data section of the experiment config.

    Returns:
        A FeatureSet with float32 features, int64 labels (-1 = unlabelled) and a presence mask.

    Raises:
        ConfigError: Unknown source name (the message lists the registered ones).
        DataError: The source's data cannot be used as asked.
    """
    source = SOURCES.get(cfg.source)
    if source is None:
        raise ConfigError("data.source", ", ".join(sorted(SOURCES)), cfg.source, "unknown source")
    fs = source(cfg)
    if cfg.test_fraction > 0:
        fs = hold_out_test(fs, cfg.test_fraction, seed=cfg.seed)
    # One child stream per step, so e.g. changing max_unlabelled never changes which labels hide.
    hide_rng, cap_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([cfg.seed, 0xDA7A]).spawn(2))
    fs = hide_labels(fs, cfg.labelled_fraction, hide_rng)
    if cfg.max_unlabelled is not None:
        fs = cap_unlabelled(fs, cfg.max_unlabelled, cap_rng)
    if cfg.standardize:
        fs = standardize(fs)
    fs.validate()
    counts = ", ".join(f"{c}={n}" for c, n in zip(fs.class_names, fs.class_counts().tolist(), strict=True))
    log.info(
        "%s: %d samples (%d labelled: %s; %d unlabelled), %d held-out test samples, dims %s",
        fs.name,
        fs.n_samples,
        fs.labelled_idx.size,
        counts,
        fs.unlabelled_idx.size,
        fs.n_test,
        fs.dims,
    )
    return fs
