"""RAMER retrieval: FAISS returns the true nearest neighbours, masks are honoured, aggregation and shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mer_core.missing import StateBank, aggregate, knn
from mer_core.missing.retrieval import concat_keys


def _brute_topk(keys: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = queries.astype(np.float64) @ keys.astype(np.float64).T  # (q, n)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # (q, k)
    return np.take_along_axis(sims, idx, axis=1), idx


@pytest.mark.parametrize(("n", "d", "k"), [(200, 16, 5), (50, 3, 1), (7, 8, 20)])
def test_knn_returns_the_brute_force_neighbours(n: int, d: int, k: int) -> None:
    gen = np.random.default_rng(n)
    keys, queries = gen.normal(size=(n, d)), gen.normal(size=(30, d))
    sims, idx = knn(keys, queries, k)
    want_sims, want_idx = _brute_topk(keys, queries, min(k, n))
    assert idx.shape == sims.shape == (30, min(k, n))
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(sims, want_sims, rtol=1e-4, atol=1e-4)


def test_concat_keys_give_mean_cosines_over_the_query_modalities() -> None:
    gen = np.random.default_rng(0)
    states = gen.normal(size=(6, 3, 4))  # (n, M, H)
    present = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 0], [1, 1, 1], [0, 0, 1]], bool)
    keys = concat_keys(states, present, scale_by_count=False)  # (n, M*H)
    queries = concat_keys(states, present, scale_by_count=True)
    unit = states / np.linalg.norm(states, axis=2, keepdims=True)
    for i in range(6):
        for j in range(6):
            shared = present[i] & present[j]
            want = sum(unit[i, p] @ unit[j, p] for p in np.flatnonzero(shared)) / present[i].sum()
            assert queries[i] @ keys[j] == pytest.approx(want, abs=1e-5)


def _constructed_bank(n: int = 120, hid: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)
    states = gen.normal(size=(n, 3, hid)).astype(np.float32)  # (n, M, H)
    present = gen.random((n, 3)) > 0.25  # (n, M)
    present[:, 0] |= ~present.any(axis=1)
    return states, present


def _brute_fill(states, present, queries, q_present, target, k):
    """Reference: rank stored rows that have `target` by mean cosine over each query's modalities."""
    unit = states / np.linalg.norm(states, axis=2, keepdims=True)
    q_unit = queries / np.linalg.norm(queries, axis=2, keepdims=True)
    rows = np.flatnonzero(present[:, target])
    out_idx, out_sims = [], []
    for i in range(len(queries)):
        mods = np.flatnonzero(q_present[i])
        sims = np.array([sum(q_unit[i, p] @ unit[j, p] for p in mods if present[j, p]) / len(mods) for j in rows])
        order = np.argsort(-sims, kind="stable")[:k]
        out_idx.append(rows[order])
        out_sims.append(sims[order])
    return np.array(out_idx), np.array(out_sims)


@pytest.mark.parametrize("how", ["mean", "weighted"])
def test_bank_fills_from_the_true_nearest_stored_samples_that_have_the_target(how: str) -> None:
    states, present = _constructed_bank()
    bank = StateBank.build(states, present)
    gen = np.random.default_rng(5)
    queries = gen.normal(size=(25, 3, 6)).astype(np.float32)
    q_present = np.ones((25, 3), bool)
    q_present[:, 2] = False  # target 2 is missing
    q_present[:10, 1] = False  # some queries search with modality 0 alone
    got = bank.fill(queries, q_present, 2, k=4, how=how, temperature=0.2)
    idx, sims = _brute_fill(states, present, queries, q_present, 2, 4)
    assert present[idx, 2].all()  # only stored samples that have the target are retrieved
    neighbours = states[idx, 2]  # (q, k, H)
    if how == "mean":
        want = neighbours.mean(axis=1)
    else:
        w = np.exp(sims / 0.2)
        want = np.einsum("qk,qkh->qh", w / w.sum(axis=1, keepdims=True), neighbours)
    assert got.shape == (25, 6)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_query_equal_to_a_stored_sample_retrieves_it_first() -> None:
    states, present = _constructed_bank()
    present[:] = True
    bank = StateBank.build(states, present)
    q_present = np.array([[True, True, False]] * 5)
    rows = np.array([3, 17, 40, 77, 101])
    got = bank.fill(states[rows], q_present, 2, k=1, how="mean", temperature=1.0)
    np.testing.assert_allclose(got, states[rows, 2], rtol=1e-6)


def test_masked_query_values_are_never_read() -> None:
    states, present = _constructed_bank()
    bank = StateBank.build(states, present)
    gen = np.random.default_rng(9)
    queries = gen.normal(size=(8, 3, 6)).astype(np.float32)
    q_present = np.array([[True, False, False]] * 8)
    changed = queries.copy()
    changed[:, 1:] = 1e6  # absent modalities hold junk
    np.testing.assert_array_equal(
        bank.fill(queries, q_present, 2, k=3, how="mean", temperature=1.0),
        bank.fill(changed, q_present, 2, k=3, how="mean", temperature=1.0),
    )


def test_no_stored_sample_with_the_target_gives_none_and_k_is_capped() -> None:
    states, present = _constructed_bank(n=10)
    present[:, 2] = False
    present[:4, 1] = True
    present[4:, 1] = False
    bank = StateBank.build(states, present)
    q = states[:2]
    q_present = np.array([[True, False, False]] * 2)
    assert bank.fill(q, q_present, 2, k=3, how="mean", temperature=1.0) is None
    got = bank.fill(q, q_present, 1, k=50, how="mean", temperature=1.0)  # only 4 stored rows have modality 1
    np.testing.assert_allclose(got, np.repeat(states[:4, 1].mean(axis=0, keepdims=True), 2, axis=0), rtol=1e-5)


def test_weighted_aggregation_tends_to_the_top_neighbour_at_low_temperature() -> None:
    values = np.arange(12, dtype=np.float64).reshape(4, 3)  # (n, H)
    idx = np.array([[2, 0, 1]])
    sims = np.array([[0.9, 0.5, 0.1]])
    np.testing.assert_allclose(aggregate(values, sims, idx, how="weighted", temperature=1e-3), values[[2]])
    np.testing.assert_allclose(aggregate(values, sims, idx, how="mean"), values[[2, 0, 1]].mean(0, keepdims=True))


def test_retrieval_imputer_fills_each_missing_pair_from_the_bank() -> None:
    from mer_core.configs import MissingConfig
    from mer_core.missing import build_imputer
    from mer_core.missing.impute import encode_rows
    from tests.missing_helpers import small_model, small_source

    source, dims = small_source(n=60, seed=4)
    model = small_model(dims)
    cfg = MissingConfig(impute="retrieval")
    imputer = build_imputer(cfg, source, np.arange(45))
    imputer.refresh(model)
    states, present = encode_rows(model, source, np.arange(45))
    bank = StateBank.build(states, present)
    x, mask = source.take(torch.arange(45, 60))
    specific = {m: model.specific[m](x[m]).detach() for m in model.modalities}  # each (B, H)
    filled, fuse_mask = imputer(specific, mask)
    stacked = np.stack([specific[m].numpy() for m in model.modalities], axis=1)  # (B, M, H)
    for j, m in enumerate(model.modalities):
        rows = np.flatnonzero(~mask[:, j].numpy())
        if rows.size:
            want = bank.fill(stacked[rows], mask.numpy()[rows], j, k=cfg.retrieval.k, how="mean", temperature=0.1)
            np.testing.assert_allclose(filled[m][rows].numpy(), want, rtol=1e-5, atol=1e-6)
    assert fuse_mask.all()
