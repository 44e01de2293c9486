"""`load_data`: pick a source from the registry, then apply the shared post-processing.

A source is a function `DataConfig -> FeatureSet`; each adapter below hands its source only
its own config section (plus the data seed where the source is random).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from mer_core.configs.schema import DataConfig
from mer_core.data.featureset import FeatureSet
from mer_core.data.mertools import load_features_dir
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
    return fs


def _uci(cfg: DataConfig) -> FeatureSet:
    return load_uci(cfg.uci)


# Filled once here and never mutated: a constant, not global state.
SOURCES: dict[str, SourceFn] = {
    "synthetic-mer": _synthetic,
    "features": _features,
    "uci-mfeat": _uci,
}


def load_data(cfg: DataConfig) -> FeatureSet:
    """Loads `cfg.source` and applies labelled_fraction, max_unlabelled and standardize, in that order.

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
        "%s: %d samples (%d labelled: %s; %d unlabelled), dims %s",
        fs.name,
        fs.n_samples,
        fs.labelled_idx.size,
        counts,
        fs.unlabelled_idx.size,
        fs.dims,
    )
    return fs
