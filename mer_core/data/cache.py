"""Packed cache of a feature directory: one `.npy` per array plus a JSON index.

Reading ~120k small files per modality is slow, so the first load packs them; later loads
read a few large files (memory-map-able `.npy`). The key hashes everything the packed
result depends on: every feature file's (modality, relative path, size, mtime_ns), the
label file's bytes and the loader-relevant config. Any change gives a new key, i.e. a miss.
Entries are written to a temporary folder and renamed into place, so a crash or a
concurrent writer never leaves a half-written entry that a reader could pick up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mer_core.data.featureset import FeatureSet
from mer_core.errors import DataError

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when the packing logic changes what a key maps to (2: numeric class order)
DEFAULT_DIRNAME = ".mersweep-cache"


def cache_key(listing: list[tuple[str, str, int, int]], label_bytes: bytes, settings: Mapping[str, Any]) -> str:
    """Hex digest over the file listing, the label file's bytes and the loader settings."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": CACHE_VERSION, "settings": settings}, sort_keys=True).encode())
    digest.update(hashlib.sha256(label_bytes).digest())
    for modality, rel, size, mtime in sorted(listing):
        digest.update(f"{modality}\0{rel}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()[:32]


def cache_root(root: Path, configured: str | None) -> Path | None:
    """Where cache entries go: the configured folder, else `<root>/.mersweep-cache`, else ~/.cache.

    Returns:
        A writable folder, or None when no cache can be written (loading still works, uncached).

    Raises:
        DataError: An explicitly configured `data.features.cache_dir` is not writable.
    """
    if configured:
        path = Path(configured).expanduser()
        if not _writable(path):
            raise DataError(f"data.features.cache_dir={configured!r} is not a writable folder")
        return path
    default = root / DEFAULT_DIRNAME
    if _writable(default):
        return default
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mersweep"
    if _writable(user):
        log.warning("feature root %s is not writable; caching packed features under %s instead", root, user)
        return user
    log.warning("no writable cache folder (tried %s and %s); features will be re-read on every load", default, user)
    return None


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def load_entry(folder: Path, key: str) -> tuple[FeatureSet, list[str]] | None:
    """The cached FeatureSet under `key` and the notes logged when it was packed; None on a miss."""
    entry = folder / f"features-{key}"
    index_path = entry / "index.json"
    if not index_path.is_file():
        return None
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        features = {m: np.load(entry / f"x{i}.npy") for i, m in enumerate(index["modalities"])}  # m -> (N, D_m)
        fs = FeatureSet(
            name=index["name"],
            features=features,
            labels=np.load(entry / "labels.npy"),  # (N,)
            mask=np.load(entry / "mask.npy"),  # (N, M)
            class_names=tuple(index["class_names"]),
            sample_ids=tuple(index["sample_ids"]),
        )
        return fs, list(index.get("notes", []))
    except (OSError, ValueError, KeyError) as err:
        # A damaged entry must not block loading: re-read the files and overwrite it.
        log.warning("ignoring unreadable feature cache %s (%s); re-reading the feature files", entry, err)
        return None


def save_entry(folder: Path, key: str, fs: FeatureSet, *, notes: list[str]) -> Path | None:
    """Writes `fs` (and the packing notes) under `key` atomically; returns the entry, None on failure."""
    entry = folder / f"features-{key}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=folder))
    try:
        for i, x in enumerate(fs.features.values()):
            np.save(tmp / f"x{i}.npy", x)
        np.save(tmp / "labels.npy", fs.labels)
        np.save(tmp / "mask.npy", fs.mask)
        index = {
            "name": fs.name,
            "modalities": list(fs.modalities),
            "class_names": list(fs.class_names),
            "sample_ids": list(fs.sample_ids),
            "notes": notes,
        }
        (tmp / "index.json").write_text(json.dumps(index), encoding="utf-8")
        os.rename(tmp, entry)  # atomic on one filesystem; fails if another process won the race
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if (entry / "index.json").is_file():
            return entry  # a concurrent loader wrote the same key first: same content
        log.warning("could not write feature cache %s: %s", entry, err)
        return None
    return entry
