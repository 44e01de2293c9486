"""Losses: InfoNCE against a loop reference, masking, temperatures, classification."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from mer_core.configs.schema import LossConfig
from mer_core.losses import (
    Temperatures,
    classification_loss,
    contrastive_term_names,
    info_nce,
    modality_contrastive,
    noise_contrastive,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ref_info_nce(z_i: torch.Tensor, z_j: torch.Tensor, tau: float) -> float:
    """Loop reference in float64: mean over rows and both directions of −log softmax(diagonal)."""
    a = [r / r.norm() for r in z_i.detach().double()]
    b = [r / r.norm() for r in z_j.detach().double()]
    n = len(a)
    if n < 2:
        return 0.0
    total = 0.0
    for k in range(n):
        row = [float(a[k] @ b[j]) / tau for j in range(n)]
        col = [float(a[j] @ b[k]) / tau for j in range(n)]
        total += -row[k] + math.log(sum(math.exp(v) for v in row))
        total += -col[k] + math.log(sum(math.exp(v) for v in col))
    return total / (2 * n)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("tau", [0.07, 1.0, 3.0])
def test_info_nce_matches_reference(seed: int, tau: float) -> None:
    g = _gen(seed)
    zi, zj = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    got = info_nce(zi, zj, torch.tensor(tau))
    assert got.item() == pytest.approx(_ref_info_nce(zi, zj, tau), rel=1e-5)
    assert info_nce(zj, zi, torch.tensor(tau)).item() == pytest.approx(got.item(), rel=1e-6)


def test_info_nce_gradients_and_alignment() -> None:
    g = _gen(0)
    zi = torch.randn(16, 8, generator=g, requires_grad=True)
    zj = torch.randn(16, 8, generator=g, requires_grad=True)
    log_tau = torch.zeros((), requires_grad=True)
    loss = info_nce(zi, zj, log_tau.exp())
    loss.backward()
    for t in (zi, zj, log_tau):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    tau = torch.tensor(0.1)
    assert info_nce(zi.detach(), zi.detach(), tau) < info_nce(zi.detach(), zj.detach(), tau)


@pytest.mark.parametrize("batch", [0, 1])
def test_info_nce_tiny_batch_is_zero_and_backpropagates(batch: int) -> None:
    zi = torch.randn(batch, 4, requires_grad=True)
    loss = info_nce(zi, torch.randn(batch, 4), torch.tensor(1.0))
    assert loss.item() == 0.0
    loss.backward()
    assert zi.grad is not None and (zi.grad == 0).all()


@pytest.mark.parametrize("seed", range(6))
def test_info_nce_valid_mask_equals_row_selection(seed: int) -> None:
    g = _gen(seed)
    zi = torch.randn(9, 4, generator=g, requires_grad=True)
    zj = torch.randn(9, 4, generator=g)
    valid = torch.rand(9, generator=g) < 0.6
    tau = torch.tensor(0.5)
    got = info_nce(zi, zj, tau, valid=valid)
    expect = _ref_info_nce(zi[valid].detach(), zj[valid], 0.5) if valid.sum() >= 2 else 0.0
    assert got.item() == pytest.approx(expect, rel=1e-5, abs=1e-7)
    got.backward()
    assert torch.isfinite(zi.grad).all() and (zi.grad[~valid] == 0).all()


def test_info_nce_valid_with_one_row_is_zero() -> None:
    valid = torch.tensor([False, True, False, False])
    zi = torch.randn(4, 3, requires_grad=True)
    loss = info_nce(zi, torch.randn(4, 3), torch.tensor(1.0), valid=valid)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(zi.grad).all()


def test_term_names() -> None:
    names = contrastive_term_names(("audio", "text", "video"))
    assert len(names) == 9
    assert names[:3] == ("pair:audio|text", "pair:audio|video", "pair:text|video")
    assert names[3:6] == ("ovr:audio", "ovr:text", "ovr:video")
    assert names[6:] == ("noise:audio", "noise:text", "noise:video")
    assert contrastive_term_names(("x",)) == ("noise:x",)
    assert len(contrastive_term_names(("a.b", "c", "d", "e"))) == 6 + 4 + 4
    with pytest.raises(ValueError):
        contrastive_term_names(("a", "a"))


def test_temperatures() -> None:
    cfg = LossConfig(temperature_init=0.5)
    temps = Temperatures.from_config(cfg, ("a.1", "b"))  # dotted names are fine
    assert temps("pair:a.1|b").item() == pytest.approx(0.5)
    assert temps.get("noise:b").item() == pytest.approx(0.5)
    assert temps.log_tau.requires_grad
    assert set(temps.as_dict()) == set(contrastive_term_names(("a.1", "b")))
    with torch.no_grad():
        temps.log_tau[0] = 50.0
        temps.log_tau[1] = -50.0
    assert temps(temps.names[0]).item() == pytest.approx(100.0)
    assert temps(temps.names[1]).item() == pytest.approx(0.01)
    frozen = Temperatures.from_config(LossConfig(learnable_temperature=False), ("a",))
    assert not frozen.log_tau.requires_grad
    with pytest.raises(KeyError, match="known"):
        temps("pair:zz|b")


def _ref_modality(feats, ovr, mask, mods, tau: float) -> float:
    terms = []
    for (ia, a), (ib, b) in itertools.combinations(enumerate(mods), 2):
        rows = mask[:, ia] & mask[:, ib]
        if rows.sum() >= 2:
            terms.append(_ref_info_nce(feats[a][rows], feats[b][rows], tau))
    rows = mask.all(dim=1)
    if len(mods) >= 2 and rows.sum() >= 2:
        for m in mods:
            rest = torch.cat([feats[o] for o in mods if o != m], dim=-1)
            terms.append(_ref_info_nce(ovr[m][rows], rest[rows], tau))
    return sum(terms) / len(terms) if terms else 0.0


def _batch(mods, batch: int, hidden: int, seed: int, rate: float):
    g = _gen(seed)
    feats = {m: torch.randn(batch, hidden, generator=g, requires_grad=True) for m in mods}
    ovr = {m: torch.randn(batch, (len(mods) - 1) * hidden, generator=g, requires_grad=True) for m in mods}
    mask = torch.rand(batch, len(mods), generator=g) >= rate
    return feats, ovr, mask


@pytest.mark.parametrize("mods", [("a", "b"), ("audio", "text", "video"), ("w", "x", "y", "z")])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_modality_contrastive_matches_reference(mods, seed: int, rate: float) -> None:
    feats, ovr, mask = _batch(mods, 10, 4, seed, rate)
    temps = Temperatures(contrastive_term_names(mods), init=0.7)
    got = modality_contrastive(feats, ovr, mask, mods, temps)
    assert got.item() == pytest.approx(_ref_modality(feats, ovr, mask, mods, 0.7), rel=1e-5, abs=1e-7)
    got.backward()
    assert temps.log_tau.grad is not None and torch.isfinite(temps.log_tau.grad).all()
    for m in mods:
        assert torch.isfinite(feats[m].grad).all() and torch.isfinite(ovr[m].grad).all()
    if rate == 0.0:
        torch.testing.assert_close(got, modality_contrastive(feats, ovr, None, mods, temps))


def test_masked_rows_do_not_change_the_loss() -> None:
    mods = ("audio", "text", "video")
    feats, ovr, mask = _batch(mods, 12, 4, 0, 0.3)
    temps = Temperatures(contrastive_term_names(mods))
    before = modality_contrastive(feats, ovr, mask, mods, temps).item()
    noisy = {m: torch.randn(f.shape, generator=_gen(7)) for m, f in feats.items()}
    noise_before = noise_contrastive(feats, noisy, mask, mods, temps).item()
    with torch.no_grad():
        for k, m in enumerate(mods):
            feats[m][~mask[:, k]] += 100.0  # only rows where m is missing
            noisy[m][~mask[:, k]] *= -3.0
        incomplete = ~mask.all(dim=1)
        for m in mods:
            ovr[m][incomplete] -= 50.0  # one-vs-rest only uses complete rows
    assert modality_contrastive(feats, ovr, mask, mods, temps).item() == pytest.approx(before, rel=1e-6)
    assert noise_contrastive(feats, noisy, mask, mods, temps).item() == pytest.approx(noise_before, rel=1e-6)


def test_terms_with_fewer_than_two_rows_are_skipped() -> None:
    mods = ("a", "b", "c")
    feats, ovr, _ = _batch(mods, 4, 3, 1, 0.0)
    # Only row 0 is complete: one-vs-rest terms are skipped; pair terms keep >= 2 rows.
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=torch.bool)
    temps = Temperatures(contrastive_term_names(mods))
    got = modality_contrastive(feats, ovr, mask, mods, temps).item()
    assert got == pytest.approx(_ref_modality(feats, ovr, mask, mods, 1.0), rel=1e-5)
    pairs_only = [
        _ref_info_nce(feats[a][mask[:, i] & mask[:, j]], feats[b][mask[:, i] & mask[:, j]], 1.0)
        for (i, a), (j, b) in itertools.combinations(enumerate(mods), 2)
    ]
    assert got == pytest.approx(sum(pairs_only) / 3, rel=1e-5)


def test_single_modality_gives_zero() -> None:
    feats = {"solo": torch.randn(5, 3, requires_grad=True)}
    temps = Temperatures(contrastive_term_names(("solo",)))
    loss = modality_contrastive(feats, {}, None, ("solo",), temps)
    assert loss.item() == 0.0
    loss.backward()


@pytest.mark.parametrize("seed", range(3))
def test_noise_contrastive_matches_reference(seed: int) -> None:
    mods = ("audio", "text", "video")
    feats, _, mask = _batch(mods, 9, 4, seed, 0.3)
    noisy = {m: f.detach() + 0.1 * torch.randn(f.shape, generator=_gen(seed + 10)) for m, f in feats.items()}
    temps = Temperatures(contrastive_term_names(mods), init=0.2)
    got = noise_contrastive(feats, noisy, mask, mods, temps)
    ref = [_ref_info_nce(feats[m][mask[:, k]], noisy[m][mask[:, k]], 0.2) for k, m in enumerate(mods)]
    assert got.item() == pytest.approx(sum(ref) / len(ref), rel=1e-5)
    got.backward()
    assert all(torch.isfinite(feats[m].grad).all() for m in mods)


def test_classification_loss() -> None:
    g = _gen(0)
    logits = {h: torch.randn(8, 6, generator=g, requires_grad=True) for h in ("audio", "fusion")}
    y = torch.randint(0, 6, (8,), generator=g)
    got = classification_loss(logits, y)
    expect = sum(F.cross_entropy(v, y) for v in logits.values()) / 2
    torch.testing.assert_close(got, expect)
    smooth = classification_loss(logits, y, label_smoothing=0.1)
    torch.testing.assert_close(smooth, sum(F.cross_entropy(v, y, label_smoothing=0.1) for v in logits.values()) / 2)
    w = torch.rand(8, generator=g)
    weighted = classification_loss(logits, y, weights=w)
    ref = sum((F.cross_entropy(v, y, reduction="none") * w).sum() / w.sum() for v in logits.values()) / 2
    torch.testing.assert_close(weighted, ref)
    y_unl = y.clone()
    y_unl[:3] = -1  # unlabelled rows are ignored
    torch.testing.assert_close(
        classification_loss(logits, y_unl), sum(F.cross_entropy(v[3:], y[3:]) for v in logits.values()) / 2
    )
    got.backward()
    assert all(v.grad is not None for v in logits.values())
    with pytest.raises(ValueError):
        classification_loss({}, y)


def test_masked_terms_work_under_vmap() -> None:
    """No boolean indexing or host sync: a stacked population gives the per-member values."""
    mods = ("a", "b", "c")
    members = [_batch(mods, 8, 4, seed, 0.3) for seed in range(3)]
    temps = Temperatures(contrastive_term_names(mods), init=0.5)

    def loss(feats, ovr, mask):
        return modality_contrastive(feats, ovr, mask, mods, temps)

    stacked = [
        {m: torch.stack([mem[0][m].detach() for mem in members]) for m in mods},
        {m: torch.stack([mem[1][m].detach() for mem in members]) for m in mods},
        torch.stack([mem[2] for mem in members]),
    ]
    got = torch.func.vmap(loss)(*stacked)
    torch.testing.assert_close(got, torch.stack([loss(*mem) for mem in members]).detach())
