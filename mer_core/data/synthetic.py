"""`synthetic-mer`: a seeded generator shaped like MER2024-SEMI.

Design (why it is a useful stand-in for MER2024 features):
- classes are imbalanced like MER2024's train set (neutral/angry/happy large, worried/sad
  medium, surprise small), with a large unlabelled pool whose true labels are kept;
- each modality sees the classes through its own lens: class means live in a small latent
  space, and in modality k the classes of some pairs are pulled together (round k of a
  round-robin schedule, so every modality confuses *different* pairs). Each modality alone
  is informative but confusable; fusing modalities resolves the confusions;
- per-sample nuisance (partly shared across modalities, like a speaker) lives in the same
  latent space as the class signal, so it cannot be filtered out, plus per-feature noise;
- the latent is projected to D_m by a random matrix, so any dims and any modality names work.

Speed: features are generated in float32, in row blocks, each block with its own seeded
Generator filled on a thread pool (numpy releases the GIL while filling), so the result does
not depend on the number of threads. Full size (5030 + 115595 at 1024/5120/768) takes seconds.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mer_core.configs.schema import SyntheticConfig
from mer_core.data.featureset import FeatureSet
from mer_core.errors import ConfigError

# Class weights shaped like MER2024's train set, in MER2024_CLASSES order
# (worried, happy, neutral, angry, surprise, sad); cycled for other class counts.
_WEIGHTS = np.array([0.12, 0.21, 0.25, 0.24, 0.04, 0.14])
_LATENT = 16  # latent dimension (raised to the class count so class means can be orthogonal)
_SEPARATION = 3.0  # class-mean radius in latent noise units; sets the single-modality difficulty
_PAIR_KEEP = 0.3  # share of its own direction a class keeps inside a confused pair
_SHARED_NUISANCE = 0.3  # variance share of the nuisance common to all modalities (speaker-like)
_BLOCK_ROWS = 8192  # rows per seeded noise block: independent of the thread count


def generate_synthetic(cfg: SyntheticConfig, *, seed: int) -> FeatureSet:
    """Generates a MER2024-SEMI-like FeatureSet.

    Args:
        cfg: Sizes, classes, dims, per-modality signal, noise and missing rate.
        seed: Seed of every random choice (same seed, same arrays).

    Returns:
        `n_labelled` labelled samples followed by `n_unlabelled` unlabelled ones (label -1,
        true label in `true_labels`), float32 features and int64 labels.

    Raises:
        ConfigError: Fewer than 2 classes, duplicate class names or fewer than 2 labelled
            samples per class.
    """
    classes = _check(cfg)
    n_cls, n = len(classes), cfg.n_labelled + cfg.n_unlabelled
    truth = _draw_labels(cfg, seed)  # (N,)
    means = _class_means(n_cls, len(cfg.dims), seed)  # (M, C, L)
    shared = np.random.default_rng([seed, 3]).standard_normal((n, means.shape[2]), dtype=np.float32)  # (N, L)
    mask = _draw_mask(n, list(cfg.dims), cfg.missing_rate, seed)  # (N, M)
    features = {}
    for k, (name, dim) in enumerate(cfg.dims.items()):
        signal = cfg.signal.get(name, 1.0)
        latent = _latent(means[k] * signal, truth, shared, seed=seed, name=name)  # (N, L)
        x = _project(latent, dim, noise=cfg.noise, seed=seed, name=name)  # (N, D_m)
        x[~mask[:, k]] = 0.0
        features[name] = x
    labels = truth.copy()
    labels[cfg.n_labelled :] = -1
    return FeatureSet(
        name="synthetic-mer",
        features=features,
        labels=labels,
        mask=mask,
        class_names=classes,
        sample_ids=tuple(f"syn{i:07d}" for i in range(n)),
        true_labels=truth,
    )


def class_priors(n_classes: int) -> np.ndarray:
    """(C,) MER2024-like class proportions, the weight vector cycled or truncated to C classes."""
    w = np.resize(_WEIGHTS, n_classes)
    return w / w.sum()


def _check(cfg: SyntheticConfig) -> tuple[str, ...]:
    classes = tuple(cfg.classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ConfigError("data.synthetic.classes", "at least 2 distinct class names", list(classes))
    if cfg.n_labelled < 2 * len(classes):
        raise ConfigError("data.synthetic.n_labelled", f">= 2 per class ({2 * len(classes)})", cfg.n_labelled)
    if not cfg.dims:
        raise ConfigError("data.synthetic.dims", "at least one modality name -> dim", dict(cfg.dims))
    return classes


def _draw_labels(cfg: SyntheticConfig, seed: int) -> np.ndarray:
    """(N,) int64: exact prior-proportional labelled counts (>= 2 per class), pool drawn from priors."""
    rng = np.random.default_rng([seed, 1])
    priors = class_priors(len(cfg.classes))
    counts = np.maximum(np.floor(priors * cfg.n_labelled).astype(np.int64), 2)  # (C,)
    # Largest remainders fill (or trim from the largest classes) up to exactly n_labelled.
    order = np.argsort(-(priors * cfg.n_labelled - np.floor(priors * cfg.n_labelled)), kind="stable")
    for i in range(abs(int(cfg.n_labelled - counts.sum()))):
        if counts.sum() < cfg.n_labelled:
            counts[order[i % len(order)]] += 1
        else:
            counts[np.argmax(counts)] -= 1
    labelled = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    pool = rng.choice(len(counts), size=cfg.n_unlabelled, p=priors)
    return np.concatenate([labelled, pool]).astype(np.int64)


def _class_means(n_classes: int, n_modalities: int, seed: int) -> np.ndarray:
    """(M, C, L) class means per modality; modality k confuses the pairs of round k."""
    rng = np.random.default_rng([seed, 0])
    dim = max(_LATENT, n_classes)
    q, _ = np.linalg.qr(rng.standard_normal((dim, n_classes)))  # (L, C), orthonormal columns
    base = _SEPARATION * q.T  # (C, L): equidistant class directions
    order = rng.permutation(n_classes)
    out = np.empty((n_modalities, n_classes, dim), dtype=np.float32)
    for k in range(n_modalities):
        means = base.copy()
        pairs = _round_robin_pairs(order, k) if n_classes >= 3 else []  # 2 classes: nothing to spare
        for a, b in pairs:
            centre = (base[a] + base[b]) / 2
            means[a] = centre + _PAIR_KEEP * (base[a] - centre)
            means[b] = centre + _PAIR_KEEP * (base[b] - centre)
        out[k] = means
    return out


def _round_robin_pairs(players: np.ndarray, k: int) -> list[tuple[int, int]]:
    """Round k (mod rounds) of the circle-method schedule: disjoint pairs, no pair repeated."""
    seats = [int(p) for p in players] + ([-1] if len(players) % 2 else [])  # -1: a bye
    rounds = len(seats) - 1
    r = k % rounds
    rest = seats[1:]
    rotated = [seats[0], *rest[r:], *rest[:r]]
    half = len(seats) // 2
    pairs = [(rotated[i], rotated[-1 - i]) for i in range(half)]
    return [(a, b) for a, b in pairs if a >= 0 and b >= 0]


def _draw_mask(n: int, modalities: list[str], rate: float, seed: int) -> np.ndarray:
    """(N, M) bool; with probability `rate` a sample loses one random modality (never its only one)."""
    mask = np.ones((n, len(modalities)), dtype=bool)
    if rate <= 0 or len(modalities) < 2:
        return mask
    rng = np.random.default_rng([seed, 2])
    hit = np.flatnonzero(rng.random(n) < rate)
    mask[hit, rng.integers(0, len(modalities), size=hit.size)] = False
    return mask


def _modality_key(name: str) -> int:
    # crc32 is stable across processes (unlike hash()), so a modality's stream depends on its name only.
    return zlib.crc32(name.encode("utf-8"))


def _latent(means: np.ndarray, truth: np.ndarray, shared: np.ndarray, *, seed: int, name: str) -> np.ndarray:
    """(N, L) float32 latent: class mean + nuisance (shared speaker-like part rotated per modality)."""
    rng = np.random.default_rng([seed, _modality_key(name), 0])
    dim = means.shape[1]
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))  # (L, L)
    own = rng.standard_normal((truth.size, dim), dtype=np.float32)  # (N, L)
    nuisance = np.sqrt(_SHARED_NUISANCE) * (shared @ rotation.astype(np.float32))  # (N, L)
    nuisance += np.sqrt(1 - _SHARED_NUISANCE) * own
    return means[truth] + nuisance  # (N, L)


def _project(latent: np.ndarray, dim: int, *, noise: float, seed: int, name: str) -> np.ndarray:
    """(N, D) float32 = latent @ W + bias + noise * eps, filled block by block on threads."""
    rng = np.random.default_rng([seed, _modality_key(name), 1])
    weight = (rng.standard_normal((latent.shape[1], dim)) / np.sqrt(latent.shape[1])).astype(np.float32)  # (L, D)
    bias = rng.standard_normal(dim).astype(np.float32)  # (D,): raw features are not centred
    x = np.empty((latent.shape[0], dim), dtype=np.float32)  # (N, D)

    def fill(block: int) -> None:
        rows = slice(block * _BLOCK_ROWS, (block + 1) * _BLOCK_ROWS)
        block_rng = np.random.default_rng([seed, _modality_key(name), 2, block])
        out = x[rows]  # (B, D) view
        block_rng.standard_normal(dtype=np.float32, out=out)
        out *= noise
        out += latent[rows] @ weight
        out += bias

    n_blocks = -(-latent.shape[0] // _BLOCK_ROWS)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(fill, range(n_blocks)))
    return x
