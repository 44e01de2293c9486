"""`features` source: a MERTools-style directory `<root>/<folder>/<sample>.npy` per modality.

Sample universe: the union of the `.npy` stems over the modality folders (other extensions
are ignored). Samples named in the label file with a non-empty label are labelled; all other
samples are the unlabelled pool.

Decisions (every problem is reported, never silent):
- a sample missing in some modality: `missing=mask` keeps it (mask False, zero row),
  `drop` removes it, `error` stops; the counts per modality are logged in one line;
- a labelled sample with no feature file in any modality is dropped with a warning (a label
  without features cannot be trained on), or stops with `missing=error`; if *no* labelled
  sample has features the names do not match at all, which is always an error.

A separate test label file (`data.features.test_labels`; MER2024 ships its test labels apart
from train) names the held-out test split: `hold_out_test_labels` moves those samples out of
the rows every other step sees (out of the unlabelled pool too, where an unlabelled challenge test
set would otherwise sit and be pseudo-labelled).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mer_core.configs.schema import FeaturesConfig
from mer_core.data import cache
from mer_core.data.featureset import FeatureSet
from mer_core.data.labels import check_label_trust, read_labels, resolve_label_path
from mer_core.data.npyio import pack_folder
from mer_core.data.splits import with_test_rows
from mer_core.errors import DataError

log = logging.getLogger(__name__)

Listing = dict[str, dict[str, os.DirEntry]]  # modality -> sample name -> its .npy entry


@dataclass(frozen=True)
class LoadInfo:
    """How a feature directory was loaded (for logs and tests)."""

    cache_hit: bool
    cache_entry: Path | None  # None when no cache folder was writable
    notes: tuple[str, ...]  # the warnings/reports logged while packing


def load_features_dir(cfg: FeaturesConfig) -> tuple[FeatureSet, LoadInfo]:
    """Loads a MERTools-style feature directory, through the packed cache.

    Args:
        cfg: Root, modality -> folder map, label file, class list, missing policy, cache folder.

    Returns:
        The FeatureSet (samples sorted by name, true_labels None) and how it was loaded.

    Raises:
        DataError: Missing folder or label file, bad shapes/dims, NaN/inf, label problems,
            missing modalities with `missing=error`.
    """
    if not cfg.root:
        raise DataError("data.features.root is required for source=features")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"feature root {root} (data.features.root) is not a folder")
    label_path = resolve_label_path(root, cfg.labels)
    if not label_path.is_file():
        raise DataError(f"label file not found: {label_path} (data.features.labels)")
    check_label_trust(label_path, trust_pickle=cfg.trust_pickle)  # before the cache can bypass it
    listing = _list_folders(root, cfg)
    flat = [(m, f"{cfg.modalities[m]}/{e.name}", *_stat(e)) for m, files in listing.items() for e in files.values()]
    settings = {
        "root": str(root.resolve()),
        "modalities": dict(cfg.modalities),
        "classes": list(cfg.classes),
        "missing": cfg.missing,
        "label_split": cfg.label_split,
        "frames": cfg.frames,
    }
    key = cache.cache_key(flat, label_path.read_bytes(), settings)
    folder = cache.cache_root(root, cfg.cache_dir)
    hit = cache.load_entry(folder, key) if folder else None
    if hit is not None:
        log.info("features: cache hit %s (no feature file read)", folder / f"features-{key}")
        for note in hit[1]:
            log.warning(note)
        return hit[0], LoadInfo(cache_hit=True, cache_entry=folder / f"features-{key}", notes=tuple(hit[1]))
    log.info("features: cache miss; reading %d files under %s", len(flat), root)
    fs, notes = _pack(root, cfg, listing, label_path)
    entry = cache.save_entry(folder, key, fs, notes=notes) if folder else None
    return fs, LoadInfo(cache_hit=False, cache_entry=entry, notes=tuple(notes))


def _stat(entry: os.DirEntry) -> tuple[int, int]:
    st = entry.stat()
    return int(st.st_size), int(st.st_mtime_ns)


def _list_folders(root: Path, cfg: FeaturesConfig) -> Listing:
    if not cfg.modalities:
        raise DataError("data.features.modalities is empty; map at least one modality name to a feature folder")
    listing: Listing = {}
    for modality, sub in cfg.modalities.items():
        folder = root / sub
        if not folder.is_dir():
            # A dotted --set data.features.modalities.x=... adds to the map a base YAML spells out (MER2024's
            # three), so name the whole map and how to replace it.
            raise DataError(
                f"feature folder for modality {modality!r} not found: {folder} (data.features.modalities is "
                f"{dict(cfg.modalities)}; to replace the whole map: --set 'data.features.modalities={{name: folder}}')"
            )
        with os.scandir(folder) as it:
            # Only `.npy` counts: `x.npz`/`x.txt` next to `x.npy` are not second copies of sample x.
            files = {e.name[:-4]: e for e in it if e.name.endswith(".npy") and e.is_file()}
        if not files:
            raise DataError(f"feature folder for modality {modality!r} has no .npy files: {folder}")
        listing[modality] = dict(sorted(files.items()))
    return listing


def _pack(root: Path, cfg: FeaturesConfig, listing: Listing, label_path: Path) -> tuple[FeatureSet, list[str]]:
    """Reads labels and files into a FeatureSet; returns it with the notes it logged."""
    label_map = read_labels(label_path, label_split=cfg.label_split, trust_pickle=cfg.trust_pickle)
    notes: list[str] = []
    names = sorted(set().union(*listing.values()))
    labelled = {n: lab for n, lab in label_map.items() if lab != ""}
    classes = _class_list(cfg, labelled, label_path)
    _check_orphans(labelled, set(names), cfg, label_path, notes)
    present = np.array([[n in listing[m] for m in listing] for n in names], dtype=bool).reshape(-1, len(listing))
    names, present = _apply_missing_policy(names, present, list(listing), cfg, notes)
    features = {}
    for j, modality in enumerate(listing):
        # Plain str paths: building 120k Path objects costs more than reading the files' headers.
        paths = [listing[modality][n].path if present[i, j] else None for i, n in enumerate(names)]
        features[modality], _ = pack_folder(paths, modality=modality, frames=cfg.frames)  # (N, D_m)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index.get(labelled.get(n, ""), -1) for n in names], dtype=np.int64)  # (N,)
    for note in notes:
        log.warning(note)
    fs = FeatureSet(
        name=f"features:{root.name}",
        features=features,
        labels=labels,
        mask=present,
        class_names=classes,
        sample_ids=tuple(names),
    )
    return fs, notes


def _class_list(cfg: FeaturesConfig, labelled: dict[str, str], label_path: Path) -> tuple[str, ...]:
    if not cfg.classes:
        return tuple(sorted(set(labelled.values()), key=_class_order(labelled.values())))
    allowed = set(cfg.classes)
    for name, label in labelled.items():
        if label not in allowed:
            raise DataError(
                f"label file {label_path}: label {label!r} (e.g. sample {name!r}) is not in data.features.classes; "
                f"allowed: {', '.join(cfg.classes)}"
            )
    return tuple(cfg.classes)


def _class_order(labels: Iterable[str]) -> Callable[[str], Any]:
    """Sort key of the default class list: numeric when every label is a number, else the string.

    Numeric labels sorted as strings put "10" before "2": class index k (the k-th probability the
    exported model returns) would then not be label k.
    """
    try:
        numeric = all(math.isfinite(float(label)) for label in labels)  # "nan" would make the order arbitrary
    except ValueError:
        numeric = False
    return (lambda label: (float(label), label)) if numeric else str


def _check_orphans(
    labelled: dict[str, str], known: set[str], cfg: FeaturesConfig, label_path: Path, notes: list[str]
) -> None:
    orphans = [n for n in labelled if n not in known]
    if not orphans:
        return
    example = f"e.g. {orphans[0]!r} (a feature file is named like {next(iter(sorted(known)))!r}.npy)"
    if len(orphans) == len(labelled):
        raise DataError(f"no labelled sample of {label_path} has a feature file; names do not match: {example}")
    if cfg.missing == "error":
        raise DataError(f"{len(orphans)} labelled samples have no feature file in any modality, {example}")
    notes.append(f"features: dropped {len(orphans)} labelled samples with no feature file in any modality, {example}")


def _apply_missing_policy(
    names: list[str], present: np.ndarray, modalities: list[str], cfg: FeaturesConfig, notes: list[str]
) -> tuple[list[str], np.ndarray]:
    """Applies data.features.missing to samples lacking some modality; `present` is (N, M)."""
    missing = (~present).sum(axis=0)  # (M,)
    if not missing.any():
        return names, present
    counts = ", ".join(f"{m}={int(c)}" for m, c in zip(modalities, missing, strict=True))
    incomplete = np.flatnonzero(~present.all(axis=1))
    example = names[incomplete[0]]
    if cfg.missing == "error":
        raise DataError(
            f"{incomplete.size} samples miss a modality ({counts}; e.g. {example!r}); "
            "set data.features.missing to mask or drop to use them"
        )
    if cfg.missing == "drop":
        keep = present.all(axis=1)
        if not keep.any():
            raise DataError(
                f"data.features.missing=drop drops all {len(names)} samples: none has every modality ({counts} "
                "missing); set data.features.missing to mask, or map fewer modalities"
            )
        notes.append(f"features: dropped {incomplete.size} samples missing a modality ({counts}; e.g. {example!r})")
        return [n for n, k in zip(names, keep, strict=True) if k], present[keep]
    notes.append(f"features: samples missing a modality, masked with zero rows: {counts} (e.g. {example!r})")
    return names, present


def hold_out_test_labels(fs: FeatureSet, cfg: FeaturesConfig) -> FeatureSet:
    """Moves the samples of `cfg.test_labels` into `fs.test`, labelled from that file.

    Args:
        fs: The feature directory's FeatureSet (`load_features_dir`).
        cfg: The `features` section.

    Returns:
        The other rows, with the named samples as the test split (`fs` itself without a test file).

    Raises:
        DataError: Missing or unreadable file, no labelled row, a name without features, a label
            outside the class list, or a sample labelled in both label files.
    """
    if not cfg.test_labels:
        return fs
    path = resolve_label_path(Path(cfg.root or ".").expanduser(), cfg.test_labels)
    if not path.is_file():
        raise DataError(f"test label file not found: {path} (data.features.test_labels)")
    split = cfg.test_label_split or cfg.label_split
    labelled = {n: lab for n, lab in read_labels(path, label_split=split, trust_pickle=cfg.trust_pickle).items() if lab}
    if not labelled:
        raise DataError(f"test label file {path} has no labelled sample (data.features.test_labels)")
    row_of = {name: i for i, name in enumerate(fs.sample_ids)}
    absent = [n for n in labelled if n not in row_of]
    if absent:
        raise DataError(
            f"test label file {path}: {len(absent)} of {len(labelled)} samples have no feature file "
            f"(e.g. {absent[0]!r}; dropped ones include samples data.features.missing=drop removed); "
            "test names must exist in the feature folders"
        )
    index = {c: i for i, c in enumerate(fs.class_names)}
    for name, label in labelled.items():
        if label not in index:
            raise DataError(
                f"test label file {path}: label {label!r} (sample {name!r}) is not one of the classes "
                f"{', '.join(fs.class_names)} (data.features.classes, else the training labels)"
            )
    rows = np.array([row_of[n] for n in labelled], dtype=np.int64)  # (T,)
    both = rows[fs.labels[rows] >= 0]
    if both.size:
        raise DataError(
            f"test label file {path}: {both.size} samples are also labelled for training "
            f"(e.g. {fs.sample_ids[both[0]]!r}); a test sample must not be a training sample"
        )
    labels = fs.labels.copy()  # (N,)
    labels[rows] = [index[label] for label in labelled.values()]
    return with_test_rows(dataclasses.replace(fs, labels=labels), np.sort(rows))
