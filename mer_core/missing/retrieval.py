"""Exact k-nearest-neighbour search (FAISS) and the aggregation of retrieved hidden states (RAMER).

RAMER stores the hidden states of the training samples in a FAISS index and fills a missing
modality with states of the most similar stored samples. `StateBank` holds those states, one flat
inner-product index per target modality; similarity is the mean cosine over the modalities the
query sample has:

    key_j   = concat_p( normalise(s_p(j)) * present(j, p) )              (M*H,)  stored sample j
    query_i = concat_p( normalise(s_p(i)) * present(i, p) ) / |P_i|      (M*H,)  P_i: i's modalities
    key_j . query_i = mean_{p in P_i} cos(s_p(i), s_p(j))  (0 for a p that j lacks)

so one exact FAISS search per target modality ranks every stored sample by the modalities the
query actually has, whatever its missing pattern. The index of target m holds only stored samples
that have m. `IndexFlatIP` is exhaustive: results are the true nearest neighbours, not an
approximation (the bank is the labelled training set of a fold, thousands of rows at most).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

__all__ = ["StateBank", "aggregate", "concat_keys", "knn"]


def knn(keys: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (FAISS `IndexFlatIP`).

    Args:
        keys: (n, d) stored vectors.
        queries: (q, d) query vectors.
        k: neighbours per query (at most n are returned).

    Returns:
        (q, min(k, n)) similarities (descending) and (q, min(k, n)) row indices into `keys`.
    """
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, keys.shape[0])
    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(keys)
    sims, idx = index.search(queries, k)  # (q, k), (q, k)
    return sims, idx.astype(np.int64)


def aggregate(
    values: np.ndarray,
    sims: np.ndarray,
    idx: np.ndarray,
    *,
    how: Literal["mean", "weighted"],
    temperature: float = 0.1,
) -> np.ndarray:
    """Combines the retrieved states of each query.

    Args:
        values: (n, H) stored states of the target modality.
        sims: (q, k) similarities of the retrieved rows.
        idx: (q, k) retrieved rows of `values`.
        how: `mean` (plain average) or `weighted` (softmax of similarity / temperature).
        temperature: softmax temperature of `weighted`.

    Returns:
        (q, H) one filled state per query.
    """
    picked = values[idx]  # (q, k, H)
    if how == "mean":
        return picked.mean(axis=1)
    logits = sims / temperature  # (q, k)
    w = np.exp(logits - logits.max(axis=1, keepdims=True))  # (q, k)
    w /= w.sum(axis=1, keepdims=True)
    return np.einsum("qk,qkh->qh", w, picked)


def concat_keys(states: np.ndarray, present: np.ndarray, *, scale_by_count: bool) -> np.ndarray:
    """(n, M*H) concatenated L2-normalised per-modality states, absent modalities zeroed.

    Args:
        states: (n, M, H) hidden states.
        present: (n, M) bool presence.
        scale_by_count: divide by the number of present modalities (queries), so inner products
            with keys are mean cosines.
    """
    norms = np.linalg.norm(states, axis=2, keepdims=True)  # (n, M, 1)
    unit = states / np.maximum(norms, 1e-12) * present[:, :, None]  # (n, M, H)
    if scale_by_count:
        unit = unit / np.maximum(present.sum(axis=1), 1)[:, None, None]
    return unit.reshape(states.shape[0], -1).astype(np.float32)  # (n, M*H)


@dataclass(frozen=True)
class StateBank:
    """Stored hidden states of the training samples and one exact index per target modality.

    Attributes:
        states: (n, M, H) float32 hidden states of the stored samples.
        present: (n, M) bool, which of them exist.
        indexes: per target modality: the FAISS index over the stored samples that have it
            (None when none has it) and those samples' rows in `states`.
    """

    states: np.ndarray
    present: np.ndarray
    indexes: tuple[tuple[faiss.Index | None, np.ndarray], ...]

    @classmethod
    def build(cls, states: np.ndarray, present: np.ndarray) -> StateBank:
        """Indexes `states` (n, M, H) with presence `present` (n, M)."""
        keys = concat_keys(states, present, scale_by_count=False)  # (n, M*H)
        indexes = []
        for m in range(states.shape[1]):
            rows = np.flatnonzero(present[:, m])
            index = None
            if rows.size:
                index = faiss.IndexFlatIP(keys.shape[1])
                index.add(np.ascontiguousarray(keys[rows]))
            indexes.append((index, rows))
        return cls(states=states, present=present, indexes=tuple(indexes))

    def fill(
        self,
        states: np.ndarray,
        present: np.ndarray,
        target: int,
        *,
        k: int,
        how: Literal["mean", "weighted"],
        temperature: float,
    ) -> np.ndarray | None:
        """Fills modality `target` of query samples from their nearest stored samples.

        Args:
            states: (q, M, H) the queries' hidden states (only present modalities are read).
            present: (q, M) bool, the queries' modalities; each query has at least one, not `target`.
            target: column of the modality to fill.
            k: neighbours per query.
            how: aggregation (`mean` | `weighted`).
            temperature: softmax temperature of `weighted`.

        Returns:
            (q, H) filled states, or None when no stored sample has `target`.
        """
        index, rows = self.indexes[target]
        if index is None:
            return None
        queries = concat_keys(states, present, scale_by_count=True)  # (q, M*H)
        sims, idx = index.search(queries, min(k, rows.size))  # (q, k), (q, k): positions in `rows`
        values = self.states[rows, target]  # (n_m, H)
        return aggregate(values, sims, idx.astype(np.int64), how=how, temperature=temperature)
