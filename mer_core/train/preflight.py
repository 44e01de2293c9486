"""Checks that a config can train on a dataset, run before anything is trained or written.

Each check stands for an error `run` would otherwise raise only once training started: in the
train CLI after its progress lines, in a sweep inside every trial (all of them failed, exit 0).
The train CLI and a sweep's `prepare` call `check_trainable` once the data is loaded, so the
same problems are bad input (one line, exit 2) with nothing written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mer_core import pseudo
from mer_core.configs.schema import ExperimentConfig
from mer_core.data.featureset import FeatureSet
from mer_core.data.splits import check_splittable
from mer_core.errors import ConfigError, DataError
from mer_core.models import FUSIONS, HEADS, build_model
from mer_core.models.mrccl import FUSION_HEAD
from mer_core.registry import Registry

# Map fields keyed by modality name (voting: by head, i.e. the modalities plus the fusion head).
MODALITY_MAPS = ("nee.timesteps", "missing.train_rates", "missing.test_rates")
HEAD_MAPS = ("voting.weights",)
MODALITY_NAME_FIELD = "modality name"  # the field build_model's ConfigError gives an unusable modality name
NAMING_FIELD = {"features": "data.features.modalities", "synthetic-mer": "data.synthetic.dims"}  # source -> map
# String fields that name a registry entry; the config schema cannot check them without importing torch.
REGISTRY_FIELDS: Mapping[str, Registry[Any]] = {"model.fusion": FUSIONS, "model.head": HEADS}


def check_trainable(cfg: ExperimentConfig, data: FeatureSet) -> None:
    """Raises the UserInputError that training `cfg` on `data` would raise, before any training.

    Args:
        cfg: The experiment config (of a trial, a sweep's base or an ablation variant).
        data: The loaded dataset.

    Raises:
        DataError: Fewer than two classes have labelled samples, or the labelled set is too small
            for `data.folds` / `data.val_fraction`.
        ConfigError: An unknown registry name or unusable modality name (the model is built on the
            meta device, which allocates nothing), or a `self_training.class_thresholds` key that
            names no class.
    """
    _check_classes(data)
    try:
        with torch.device("meta"):
            build_model(cfg.model, data.dims, data.n_classes)
    except ConfigError as err:
        if err.field != MODALITY_NAME_FIELD:
            raise
        # The model names no config field for a modality; the source's map that named it is the one to edit.
        where = f"{NAMING_FIELD.get(cfg.data.source, 'data')}.{err.given}"
        raise ConfigError(where, err.allowed, err.given, err.problem) from None
    check_splittable(data, folds=cfg.data.folds, val_fraction=cfg.data.val_fraction)
    pseudo.class_thresholds(cfg.self_training, data.class_names, data.class_counts())


def check_modality_keys(fields: Mapping[str, Any], data: FeatureSet, *, prefix: str = "") -> None:
    """Fields the user set on purpose must name a modality (or head) the data has.

    The defaults of these maps name MER2024's modalities and fall back to a default value for
    others, so a config runs on any data; but a field set on purpose (`--set`, a sweep's `set`, a
    search-space param) that names a modality the data lacks changes nothing: a typo, or a whole
    search dimension without effect.

    Args:
        fields: Dotted field -> value as set (`nee.timesteps.audio: 50`, or a whole map
            `nee.timesteps: {audio: 50}`); for a search space, its param names (values unused).
        data: The loaded dataset.
        prefix: Prepended to the field in the message ("set.", "params.").

    Raises:
        ConfigError: A key of a modality-keyed map names no modality (or head) of `data`.
    """
    for name, value in fields.items():
        if name in MODALITY_MAPS or name in HEAD_MAPS:
            keys = [f"{name}.{k}" for k in value] if isinstance(value, Mapping) else []
        else:
            keys = [name]
        for dotted in keys:
            owner, _, key = dotted.rpartition(".")
            allowed = _keys_of(owner, data)
            if allowed is not None and key not in allowed:
                raise ConfigError(f"{prefix}{dotted}", ", ".join(allowed), key, f"names no modality of {data.name}")


def check_registry_choices(space: Any) -> None:
    """Every value a search space can give a registry-backed field (`model.fusion`) must be registered.

    Args:
        space: A `sweeps.space.SearchSpace` (its params' `name`, `kind`, `choices` and `value`).

    Raises:
        ConfigError: Naming `params.<field>.choices[i]` (or `.fixed`) and the registered names.
    """
    for p in space.params:
        registry = REGISTRY_FIELDS.get(p.name)
        if registry is None:
            continue
        if p.kind == "fixed":
            registry.get(p.value, field=f"params.{p.name}.fixed")
        for i, choice in enumerate(p.choices):
            registry.get(choice, field=f"params.{p.name}.choices[{i}]")


def _keys_of(owner: str, data: FeatureSet) -> tuple[str, ...] | None:
    if owner in MODALITY_MAPS:
        return tuple(data.modalities)
    if owner in HEAD_MAPS:
        return (*data.modalities, FUSION_HEAD)
    return None


def _check_classes(data: FeatureSet) -> None:
    counts = data.class_counts()  # (C,)
    seen = [c for c, n in zip(data.class_names, counts.tolist(), strict=True) if n > 0]
    if len(seen) < 2:
        found = f"every labelled sample is of class {seen[0]!r}" if seen else "no sample is labelled"
        raise DataError(
            f"{data.name}: {found}; a classifier needs labelled samples of at least 2 classes "
            "(check the label file and data.features.classes)"
        )
