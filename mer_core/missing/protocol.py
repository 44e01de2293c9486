"""The missing-modality protocol: seeded drops of (sample, modality) pairs, as a presence mask.

MMIN (Zhao et al. 2021) and the missing-rate protocol that RAMER and its successors report
remove modalities of samples at a rate, separately at training and at test time, and report F1
against the test-time rate. Here a drop is only a False in the (N, M) mask (the data is never
touched), so every model, loss and fusion operator handles it through the mask it already honours.

How a pair is chosen. One uniform draw u[i, m] ~ U[0, 1) per sample and modality comes from
`missing.seed` (independent of the model seed, so every arm of an ablation sees the same drops);
pair (i, m) is dropped when u[i, m] < rate[i, m], where the rate is the train-time rate of m for
rows the model trains on (labelled training rows and the unlabelled pool) and the test-time rate
for validation rows. Because the draws are fixed, a higher rate drops a superset of the pairs a
lower rate drops: the F1-vs-rate curve compares nested conditions, not fresh noise per rate.

At least one modality stays. A sample whose every present modality would be dropped keeps the
one with the largest margin u[i, m] - rate[i, m], i.e. the one a rising rate would drop last (with
one rate for all modalities: the largest draw), so nesting still holds. Pairs already missing in
the data stay missing; a sample that has no modality in the data is left as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mer_core.configs.schema import MissingConfig

__all__ = ["drop_pairs", "drops_any", "fold_mask", "rate_vector", "uniform_draws", "val_mask_at_rate"]


def rate_vector(default: float, per_modality: Mapping[str, float], modalities: Sequence[str]) -> np.ndarray:
    """(M,) rates: `per_modality[m]` where named, else `default` (names the data lacks are ignored)."""
    return np.array([float(per_modality.get(m, default)) for m in modalities], dtype=np.float64)


def uniform_draws(seed: int, n_samples: int, n_modalities: int) -> np.ndarray:
    """(N, M) uniform draws in [0, 1): one per sample and modality, fixed by `seed`."""
    return np.random.default_rng(seed).random((n_samples, n_modalities))


def drop_pairs(mask: np.ndarray, rates: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """The presence mask after the protocol's drops.

    Args:
        mask: (N, M) bool presence in the data.
        rates: (N, M) or (M,) drop rate of each pair (broadcast over rows).
        draws: (N, M) uniform draws (`uniform_draws`).

    Returns:
        (N, M) bool: `mask` with pairs whose draw is below their rate removed, every sample keeping
        at least one of the modalities it has.
    """
    mask = np.asarray(mask, dtype=bool)
    rates = np.broadcast_to(np.asarray(rates, dtype=np.float64), mask.shape)  # (N, M)
    kept = mask & ~(draws < rates)  # (N, M)
    lost_all = mask.any(axis=1) & ~kept.any(axis=1)  # (N,)
    if lost_all.any():
        # The present modality a rising rate would drop last: the largest margin draw - rate.
        margin = np.where(mask, draws - rates, -np.inf)  # (N, M)
        rows = np.flatnonzero(lost_all)
        kept[rows, margin[rows].argmax(axis=1)] = True
    return kept


def drops_any(cfg: MissingConfig) -> bool:
    """Whether the protocol drops anything (a rate above 0); if not, every fold's mask is the data's."""
    rates = (cfg.train_rate, cfg.test_rate, *cfg.train_rates.values(), *cfg.test_rates.values())
    return any(float(r) > 0 for r in rates)


def fold_mask(mask: np.ndarray, val_idx: np.ndarray, cfg: MissingConfig, modalities: Sequence[str]) -> np.ndarray:
    """One fold's mask: train-time rates on every row but the validation rows, test-time rates on those.

    Args:
        mask: (N, M) bool presence in the data.
        val_idx: (n_val,) validation rows of the fold.
        cfg: the `missing` section.
        modalities: names, in the mask's column order.

    Returns:
        (N, M) bool; `mask` itself (no copy) when both rates are zero everywhere.
    """
    train_rates = rate_vector(cfg.train_rate, cfg.train_rates, modalities)  # (M,)
    test_rates = rate_vector(cfg.test_rate, cfg.test_rates, modalities)  # (M,)
    if not train_rates.any() and not test_rates.any():
        return mask
    rates = np.tile(train_rates, (mask.shape[0], 1))  # (N, M)
    rates[val_idx] = test_rates
    return drop_pairs(mask, rates, uniform_draws(cfg.seed, *mask.shape))


def val_mask_at_rate(
    base: np.ndarray, data_mask: np.ndarray, val_idx: np.ndarray, rate: float, seed: int
) -> np.ndarray:
    """`base` with the validation rows re-dropped from the data's mask at one rate for every modality.

    Used to score a trained model under several test-time rates: the same draws as `fold_mask`,
    so the rows of `val_idx` at `rate` equal what `test_rate: rate` would have given them.

    Args:
        base: (N, M) the fold's mask (training rows are kept as they are).
        data_mask: (N, M) presence in the data.
        val_idx: (n_val,) validation rows.
        rate: the test-time rate.
        seed: `missing.seed`.

    Returns:
        (N, M) bool, a new array.
    """
    draws = uniform_draws(seed, *data_mask.shape)  # (N, M)
    out = np.array(base, dtype=bool, copy=True)  # (N, M)
    out[val_idx] = drop_pairs(data_mask[val_idx], np.full(data_mask.shape[1], rate), draws[val_idx])
    return out
