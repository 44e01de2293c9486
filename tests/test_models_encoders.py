"""Specificity/invariant encoders; FastEncoderLayer is a drop-in for nn.TransformerEncoderLayer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mer_core.models import FastEncoderLayer, InvariantEncoder, SpecificEncoder, largest_divisor

FF = 96  # feed-forward width; equivalence does not depend on it, speed does


def _pair(d: int, *, dropout: float = 0.0, seed: int = 0) -> tuple[nn.TransformerEncoderLayer, FastEncoderLayer]:
    """A torch layer and a FastEncoderLayer holding the torch layer's weights."""
    torch.manual_seed(seed)
    heads = largest_divisor(d, 8)
    ref = nn.TransformerEncoderLayer(d, heads, dim_feedforward=FF, dropout=dropout, batch_first=True)
    fast = FastEncoderLayer(d, heads, dim_feedforward=FF, dropout=dropout)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


@pytest.mark.parametrize(
    ("n", "cap", "expected"), [(47, 8, 1), (768, 8, 8), (6, 8, 6), (6, 4, 3), (5120, 8, 8), (1, 8, 1)]
)
def test_largest_divisor(n: int, cap: int, expected: int) -> None:
    assert largest_divisor(n, cap) == expected


def test_state_dicts_match_in_names_shapes_and_seeded_values() -> None:
    torch.manual_seed(3)
    ref = nn.TransformerEncoderLayer(64, 8, dim_feedforward=FF, dropout=0.1, batch_first=True)
    torch.manual_seed(3)
    fast = FastEncoderLayer(64, 8, dim_feedforward=FF, dropout=0.1)
    ref_sd, fast_sd = ref.state_dict(), fast.state_dict()
    assert list(ref_sd) == list(fast_sd)
    for key, value in ref_sd.items():
        assert torch.equal(value, fast_sd[key]), key  # same construction order -> same init
    ref.load_state_dict(fast_sd)  # and the other direction loads too


@pytest.mark.parametrize("d", [6, 47, 64, 768])
@pytest.mark.parametrize("seq", [1, 3])
@pytest.mark.parametrize("mode", ["eval", "eval_no_grad", "train"])
def test_fast_layer_equals_torch_layer(d: int, seq: int, mode: str) -> None:
    ref, fast = _pair(d)
    ref.train(mode == "train")
    fast.train(mode == "train")
    x = torch.randn(5, seq, d)  # (B, T, D)
    with torch.set_grad_enabled(mode != "eval_no_grad"):  # no_grad lets torch take its fused fast path
        expected, got = ref(x), fast(x)  # (B, T, D)
    assert got.shape == (5, seq, d)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("d", [6, 64])
def test_fast_layer_gradients_equal_torch_layer_and_qk_get_zero(d: int) -> None:
    ref, fast = _pair(d)
    x = torch.randn(4, 1, d)  # (B, 1, D)
    ref(x).pow(2).sum().backward()
    fast(x).pow(2).sum().backward()
    ref_params = dict(ref.named_parameters())
    for name, p in fast.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, ref_params[name].grad, atol=1e-5, rtol=1e-4, msg=name)
    # Documented: for T == 1 the Q/K rows of in_proj get exactly zero gradient (in both layers).
    assert torch.count_nonzero(fast.self_attn.in_proj_weight.grad[: 2 * d]) == 0
    assert torch.count_nonzero(fast.self_attn.in_proj_bias.grad[: 2 * d]) == 0
    assert torch.count_nonzero(fast.self_attn.in_proj_weight.grad[2 * d :]) > 0


def test_fast_layer_with_dropout_matches_in_eval_and_is_seeded_in_train() -> None:
    ref, fast = _pair(32, dropout=0.3)
    x = torch.randn(6, 1, 32)  # (B, 1, D)
    torch.testing.assert_close(fast.eval()(x), ref.eval()(x), atol=1e-5, rtol=1e-5)
    fast.train()
    torch.manual_seed(1)
    a = fast(x)  # (B, 1, D)
    torch.manual_seed(1)
    b = fast(x)  # (B, 1, D)
    assert torch.equal(a, b)
    assert not torch.allclose(a, fast.eval()(x))  # dropout is active in train mode


def test_fast_layer_key_padding_mask_matches_torch_layer() -> None:
    ref, fast = _pair(16)
    x = torch.randn(3, 4, 16)  # (B, T, D)
    pad = torch.tensor([[False, False, True, True], [False] * 4, [False, True, True, True]])  # (B, T)
    torch.testing.assert_close(
        fast(x, src_key_padding_mask=pad), ref(x, src_key_padding_mask=pad), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("layers", [0, 1, 2])
@pytest.mark.parametrize("shortcut", [True, False])
def test_specific_encoder_shapes_utterance_and_frame_level(layers: int, shortcut: bool) -> None:
    torch.manual_seed(0)
    enc = SpecificEncoder(20, 12, layers=layers, nhead=8, ff_dim=FF, dropout=0.1, shortcut=shortcut)
    assert len(enc.layers) == layers
    assert enc(torch.randn(5, 20)).shape == (5, 12)  # (B, D) -> (B, H)
    assert enc(torch.randn(5, 7, 20)).shape == (5, 12)  # (B, T, D) -> (B, H)


def test_specific_encoder_uses_largest_valid_head_count() -> None:
    enc = SpecificEncoder(47, 8, layers=1, nhead=8, ff_dim=FF, dropout=0.0)
    assert enc.layers[0].self_attn.num_heads == 1
    enc = SpecificEncoder(12, 8, layers=1, nhead=8, ff_dim=FF, dropout=0.0)
    assert enc.layers[0].self_attn.num_heads == 6


def test_specific_encoder_shortcut_equals_plain_for_same_seed() -> None:
    torch.manual_seed(5)
    fast = SpecificEncoder(20, 12, layers=2, nhead=4, ff_dim=FF, dropout=0.0, shortcut=True)
    torch.manual_seed(5)
    plain = SpecificEncoder(20, 12, layers=2, nhead=4, ff_dim=FF, dropout=0.0, shortcut=False)
    x = torch.randn(5, 20)  # (B, D)
    torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-5)


def test_specific_encoder_length_one_sequence_equals_vector_input() -> None:
    enc = SpecificEncoder(20, 12, layers=1, nhead=4, ff_dim=FF, dropout=0.0)
    x = torch.randn(5, 20)  # (B, D)
    torch.testing.assert_close(enc(x), enc(x.unsqueeze(1)))


def test_specific_encoder_padded_frames_do_not_matter() -> None:
    enc = SpecificEncoder(16, 8, layers=1, nhead=4, ff_dim=FF, dropout=0.0).eval()
    x = torch.randn(3, 5, 16)  # (B, T, D)
    pad = torch.zeros(3, 5, dtype=torch.bool)  # (B, T)
    pad[0, 3:] = True
    pad[2, 1:] = True
    y = x.clone()
    y[pad] = torch.randn(int(pad.sum()), 16) * 100.0  # change only padded frames
    torch.testing.assert_close(enc(x, padding_mask=pad), enc(y, padding_mask=pad))
    # and a sample's pooled result equals encoding only its valid frames
    torch.testing.assert_close(enc(x, padding_mask=pad)[2:3], enc(x[2:3, :1]), atol=1e-5, rtol=1e-5)


def test_invariant_encoder_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    inv = InvariantEncoder(12, dropout=0.2, slope=0.01)
    s = torch.randn(3, 5, 12, requires_grad=True)  # (M, B, H)
    out = inv(s)  # (M, B, H)
    assert out.shape == (3, 5, 12)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in inv.parameters())
    assert s.grad is not None
