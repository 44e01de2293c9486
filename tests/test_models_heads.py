"""Every registered head: shapes, gradients, no NaN, seeding; the fc head's layer layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mer_core.models import HEADS

B, D, C = 5, 12, 6
HEAD_NAMES = HEADS.names()
OPTIONS = [((16, 8), True, 0.2), ((16,), False, 0.0), ((), True, 0.0)]


def _build(name: str, hidden: tuple[int, ...], batchnorm: bool, dropout: float, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return HEADS.get(name, field="model.head")(D, C, hidden=hidden, batchnorm=batchnorm, dropout=dropout)


def test_registry_holds_fc_and_linear() -> None:
    assert {"fc", "linear"} <= set(HEAD_NAMES)


@pytest.mark.parametrize(("hidden", "batchnorm", "dropout"), OPTIONS)
@pytest.mark.parametrize("name", HEAD_NAMES)
def test_shapes_gradients_no_nan(name: str, hidden: tuple[int, ...], batchnorm: bool, dropout: float) -> None:
    head = _build(name, hidden, batchnorm, dropout)
    x = torch.randn(B, D, requires_grad=True)  # (B, D)
    logits = head(x)  # (B, C)
    assert logits.shape == (B, C)
    assert torch.isfinite(logits).all()
    logits.pow(2).sum().backward()
    for pname, p in head.named_parameters():
        # Not "nonzero": a Linear bias right before BatchNorm legitimately gets ~0 gradient.
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert x.grad is not None and torch.count_nonzero(x.grad) > 0
    head.eval()
    assert head(torch.randn(1, D)).shape == (1, C)  # eval mode works with a single sample


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_same_seed_same_output(name: str) -> None:
    x = torch.randn(B, D)  # (B, D)
    outs = []
    for _ in range(2):
        head = _build(name, (16, 8), True, 0.3, seed=4)
        torch.manual_seed(9)  # dropout draws
        outs.append(head(x))  # (B, C)
    assert torch.equal(outs[0], outs[1])


def test_fc_layout_is_linear_bn_relu_dropout_then_linear() -> None:
    head = _build("fc", (16, 8), True, 0.2)
    kinds = [type(m) for m in head.modules() if not isinstance(m, nn.Sequential) and m is not head]
    block = [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout]
    assert kinds == [*block, *block, nn.Linear]
    plain = _build("fc", (16,), False, 0.0)
    assert [type(m) for m in plain.hidden] == [nn.Linear, nn.ReLU]


def test_linear_head_is_one_layer() -> None:
    head = _build("linear", (16, 8), True, 0.5)
    assert sum(p.numel() for p in head.parameters()) == D * C + C
