"""Every registered fusion operator: shapes, gradients, no NaN, seeding, masked modalities ignored."""

from __future__ import annotations

import pytest
import torch

from mer_core.models import FUSIONS, FusionOp

B, H = 6, 8
MODALITY_SETS = [("a", "b", "c"), ("x", "y"), ("m1", "m2", "m3", "m4"), ("solo",)]
OPS = FUSIONS.names()


def _build(name: str, modalities: tuple[str, ...], seed: int = 0) -> FusionOp:
    torch.manual_seed(seed)
    return FUSIONS.get(name, field="model.fusion")(modalities, H, rank=3, dropout=0.0)


def _feats(modalities: tuple[str, ...], seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {m: torch.randn(B, H, generator=gen, requires_grad=True) for m in modalities}  # each (B, H)


def _all_present(modalities: tuple[str, ...]) -> torch.Tensor:
    return torch.ones(B, len(modalities), dtype=torch.bool)  # (B, M)


def _random_mask(modalities: tuple[str, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    mask = torch.rand(B, len(modalities), generator=gen) > 0.4  # (B, M)
    mask[0] = False  # a sample with no modality at all
    mask[1] = True
    return mask


def test_registry_holds_the_classic_operators() -> None:
    assert {"concat", "sum", "max", "gated", "attention", "tensor_lowrank"} <= set(OPS)


@pytest.mark.parametrize("modalities", MODALITY_SETS, ids="-".join)
@pytest.mark.parametrize("name", OPS)
def test_shape_and_out_dim(name: str, modalities: tuple[str, ...]) -> None:
    op = _build(name, modalities)
    out = op(_feats(modalities), _random_mask(modalities))  # (B, out_dim)
    assert isinstance(op.out_dim, int)
    assert out.shape == (B, op.out_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("modalities", MODALITY_SETS, ids="-".join)
@pytest.mark.parametrize("name", OPS)
def test_gradients_reach_every_parameter_and_input(name: str, modalities: tuple[str, ...]) -> None:
    op = _build(name, modalities)
    feats = _feats(modalities)
    op(feats, _all_present(modalities)).pow(2).sum().backward()
    for pname, p in op.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert torch.count_nonzero(p.grad) > 0, pname
    for m, f in feats.items():
        assert f.grad is not None and torch.count_nonzero(f.grad) > 0, m


@pytest.mark.parametrize("name", OPS)
def test_no_nan_in_output_or_gradients_with_empty_samples(name: str) -> None:
    modalities = ("a", "b", "c")
    op = _build(name, modalities)
    feats = _feats(modalities)
    mask = _random_mask(modalities)
    out = op(feats, mask)  # (B, out_dim)
    assert torch.isfinite(out).all()
    out.pow(2).sum().backward()
    grads = [p.grad for p in op.parameters()] + [f.grad for f in feats.values()]
    assert all(g is None or torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", OPS)
def test_same_seed_same_output(name: str) -> None:
    modalities = ("p", "q", "r", "s")
    out1 = _build(name, modalities, seed=11)(_feats(modalities), _random_mask(modalities))
    out2 = _build(name, modalities, seed=11)(_feats(modalities), _random_mask(modalities))
    assert torch.equal(out1, out2)


@pytest.mark.parametrize("modalities", MODALITY_SETS, ids="-".join)
@pytest.mark.parametrize("name", OPS)
def test_masked_modality_values_do_not_matter(name: str, modalities: tuple[str, ...]) -> None:
    op = _build(name, modalities)
    feats = _feats(modalities)
    mask = _random_mask(modalities)
    expected = op(feats, mask)  # (B, out_dim)
    for i, m in enumerate(modalities):
        missing = ~mask[:, i]  # (B,)
        for junk in (torch.randn(B, H) * 50.0, torch.full((B, H), float("nan")), torch.full((B, H), float("inf"))):
            changed = dict(feats)
            changed[m] = torch.where(missing[:, None], junk, feats[m])  # (B, H): only missing rows change
            torch.testing.assert_close(op(changed, mask), expected, msg=f"{name}: modality {m}")


@pytest.mark.parametrize("name", OPS)
def test_masked_modality_gets_no_gradient(name: str) -> None:
    modalities = ("a", "b", "c")
    op = _build(name, modalities)
    feats = _feats(modalities)
    mask = _all_present(modalities).clone()
    mask[:, 1] = False
    op(feats, mask).pow(2).sum().backward()
    assert feats["b"].grad is None or torch.count_nonzero(feats["b"].grad) == 0


def test_reference_semantics() -> None:
    """Spot checks of the parameter-free operators against their definitions."""
    modalities = ("a", "b", "c")
    feats = {m: f.detach() for m, f in _feats(modalities).items()}
    mask = _random_mask(modalities)
    stacked = torch.stack([feats[m] for m in modalities], dim=1)  # (B, M, H)
    zeroed = stacked * mask[..., None]  # (B, M, H)
    torch.testing.assert_close(_build("concat", modalities)(feats, mask), zeroed.flatten(1))
    torch.testing.assert_close(_build("sum", modalities)(feats, mask), zeroed.sum(1))
    got_max = _build("max", modalities)(feats, mask)  # (B, H)
    for row in range(B):
        present = mask[row]
        want = stacked[row, present].amax(0) if present.any() else torch.zeros(H)
        torch.testing.assert_close(got_max[row], want)


def test_attention_weights_sum_to_one_over_present_modalities() -> None:
    """With identical features for all modalities, attention fusion returns that feature."""
    modalities = ("a", "b", "c")
    op = _build("attention", modalities)
    same = torch.randn(B, H)  # (B, H)
    mask = _random_mask(modalities)
    out = op({m: same for m in modalities}, mask)  # (B, H)
    any_present = mask.any(1, keepdim=True)  # (B, 1)
    torch.testing.assert_close(out, same * any_present)
