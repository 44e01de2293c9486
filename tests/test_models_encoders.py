"""Specificity/invariant encoders; FastEncoderLayer is nn.TransformerEncoderLayer on length-1 sequences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mer_core.models import (
    FastEncoderLayer,
    InvariantEncoder,
    SpecificEncoder,
    largest_divisor,
    to_reference_state_dict,
)

FF = 96  # feed-forward width; equivalence does not depend on it, speed does


def _pair(d: int, *, dropout: float = 0.0, seed: int = 0) -> tuple[nn.TransformerEncoderLayer, FastEncoderLayer]:
    """A torch layer and a FastEncoderLayer holding the torch layer's weights (its V rows of in_proj)."""
    torch.manual_seed(seed)
    heads = largest_divisor(d, 8)
    ref = nn.TransformerEncoderLayer(d, heads, dim_feedforward=FF, dropout=dropout, batch_first=True)
    fast = FastEncoderLayer(d, heads, dim_feedforward=FF, dropout=dropout)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _previous_fast_forward(ref: nn.TransformerEncoderLayer, x: Tensor) -> Tensor:
    """The length-1 path of FastEncoderLayer before it dropped the Q/K rows, verbatim (train or eval).

    That layer held exactly `nn.TransformerEncoderLayer`'s parameters, so `ref` stands in for it.
    """
    attn, d = ref.self_attn, ref.self_attn.embed_dim
    w, b = attn.in_proj_weight, attn.in_proj_bias  # (3D, D), (3D,)
    v = F.linear(x, w[2 * d :], b[2 * d :])  # (B, 1, D)
    if ref.training and attn.dropout > 0.0:
        h = attn.num_heads
        keep = F.dropout(v.new_ones(v.shape[0], 1, h, 1), attn.dropout)  # (B, 1, h, 1)
        v = (v.unflatten(-1, (h, d // h)) * keep).flatten(-2)  # (B, 1, D)
    x = ref.norm1(x + ref.dropout1(attn.out_proj(v)))  # (B, 1, D)
    return ref.norm2(x + ref.dropout2(ref.linear2(ref.dropout(F.relu(ref.linear1(x))))))  # (B, 1, D)


def _qk_elements(d: int) -> int:
    """Elements of the Q/K rows of one layer's in_proj weight and bias."""
    return 2 * d * d + 2 * d


@pytest.mark.parametrize(
    ("n", "cap", "expected"), [(47, 8, 1), (768, 8, 8), (6, 8, 6), (6, 4, 3), (5120, 8, 8), (1, 8, 1)]
)
def test_largest_divisor(n: int, cap: int, expected: int) -> None:
    assert largest_divisor(n, cap) == expected


def test_holds_only_live_parameters_in_reference_order() -> None:
    fast = FastEncoderLayer(64, 8, dim_feedforward=FF, dropout=0.1)
    ref = nn.TransformerEncoderLayer(64, 8, dim_feedforward=FF, dropout=0.1, batch_first=True)
    names = [n.replace("v_proj", "in_proj") for n, _ in fast.named_parameters()]
    assert names == [n for n, _ in ref.named_parameters()]  # same order, in_proj_* -> v_proj_*
    assert fast.self_attn.v_proj_weight.shape == (64, 64) and fast.self_attn.v_proj_bias.shape == (64,)
    n_fast = sum(p.numel() for p in fast.parameters())
    n_ref = sum(p.numel() for p in ref.parameters())
    assert n_ref - n_fast == _qk_elements(64) == 8320
    assert n_fast == 2 * (64 * 64 + 64) + 2 * 64 * FF + FF + 64 + 4 * 64 == 21024  # V, out, ff, norms


@pytest.mark.parametrize("d", [6, 47, 64])
def test_seeded_init_is_the_reference_layers_v_rows_and_leaves_the_same_rng_state(d: int) -> None:
    heads = largest_divisor(d, 8)
    torch.manual_seed(3)
    ref = nn.TransformerEncoderLayer(d, heads, dim_feedforward=FF, dropout=0.1, batch_first=True)
    after_ref = torch.rand(4)
    torch.manual_seed(3)
    fast = FastEncoderLayer(d, heads, dim_feedforward=FF, dropout=0.1)
    after_fast = torch.rand(4)
    assert torch.equal(after_fast, after_ref)  # the same draws, so everything built later is unchanged
    ref_sd, fast_sd = ref.state_dict(), fast.state_dict()
    assert torch.equal(fast_sd["self_attn.v_proj_weight"], ref_sd["self_attn.in_proj_weight"][2 * d :])
    assert torch.equal(fast_sd["self_attn.v_proj_bias"], ref_sd["self_attn.in_proj_bias"][2 * d :])
    for key, value in fast_sd.items():
        if "v_proj" not in key:
            assert torch.equal(value, ref_sd[key]), key


@pytest.mark.parametrize("d", [6, 47, 64, 768])
@pytest.mark.parametrize("mode", ["eval", "eval_no_grad", "train"])
def test_fast_layer_equals_torch_layer(d: int, mode: str) -> None:
    ref, fast = _pair(d)
    ref.train(mode == "train")
    fast.train(mode == "train")
    x = torch.randn(5, 1, d)  # (B, 1, D)
    with torch.set_grad_enabled(mode != "eval_no_grad"):  # no_grad lets torch take its fused fast path
        expected, got = ref(x), fast(x)  # (B, 1, D)
    assert got.shape == (5, 1, d)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("d", [6, 47, 64, 768])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("train", [False, True])
def test_fast_layer_is_bit_equal_to_the_previous_fast_layer(d: int, dropout: float, train: bool) -> None:
    """Same weights, same arithmetic, same dropout draws: dropping the Q/K rows changes no output bit."""
    ref, fast = _pair(d, dropout=dropout)
    ref.train(train)
    fast.train(train)
    x = torch.randn(5, 1, d)  # (B, 1, D)
    torch.manual_seed(11)
    got = fast(x)  # (B, 1, D)
    torch.manual_seed(11)
    assert torch.equal(got, _previous_fast_forward(ref, x))


@pytest.mark.parametrize("d", [6, 64])
def test_fast_layer_gradients_equal_torch_layer(d: int) -> None:
    ref, fast = _pair(d)
    x = torch.randn(4, 1, d)  # (B, 1, D)
    ref(x).pow(2).sum().backward()
    fast(x).pow(2).sum().backward()
    ref_grads = {n.replace("in_proj", "v_proj"): p.grad for n, p in ref.named_parameters()}
    ref_grads["self_attn.v_proj_weight"] = ref_grads["self_attn.v_proj_weight"][2 * d :]  # (D, D)
    ref_grads["self_attn.v_proj_bias"] = ref_grads["self_attn.v_proj_bias"][2 * d :]  # (D,)
    for name, p in fast.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name  # every held parameter is live
        torch.testing.assert_close(p.grad, ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    # The rows we no longer hold got exactly zero gradient in the reference layer.
    assert torch.count_nonzero(ref.self_attn.in_proj_weight.grad[: 2 * d]) == 0
    assert torch.count_nonzero(ref.self_attn.in_proj_bias.grad[: 2 * d]) == 0


@pytest.mark.parametrize("d", [6, 47, 64])
def test_reference_round_trip_gives_the_same_outputs(d: int) -> None:
    """Reference layer -> ours -> reference format -> a fresh nn.TransformerEncoderLayer: same outputs."""
    ref, fast = _pair(d, seed=7)
    back = to_reference_state_dict(fast.state_dict())
    assert list(back) == list(ref.state_dict())
    w = back["self_attn.in_proj_weight"]  # (3D, D)
    assert w.shape == (3 * d, d) and torch.count_nonzero(w[: 2 * d]) == 0  # Q/K: zeros, never trained
    assert torch.equal(w[2 * d :], ref.self_attn.in_proj_weight[2 * d :])
    heads = largest_divisor(d, 8)
    fresh = nn.TransformerEncoderLayer(d, heads, dim_feedforward=FF, dropout=0.0, batch_first=True).eval()
    fresh.load_state_dict(back)
    x = torch.randn(6, 1, d)  # (B, 1, D)
    expected = ref.eval()(x)  # (B, 1, D)
    torch.testing.assert_close(fresh(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.eval()(x), expected, atol=1e-5, rtol=1e-5)
    again = FastEncoderLayer(d, heads, dim_feedforward=FF, dropout=0.0).eval()
    again.load_state_dict(back)  # and the written format loads back into ours
    assert torch.equal(again(x), fast(x))


def test_loading_leaves_the_callers_state_dict_alone_and_checks_shapes() -> None:
    ref, fast = _pair(16)
    sd = ref.state_dict()
    keys = list(sd)
    fast.load_state_dict(sd)
    assert list(sd) == keys  # load_state_dict renames keys in its own copy only
    other = nn.TransformerEncoderLayer(8, 2, dim_feedforward=FF, batch_first=True).state_dict()
    with pytest.raises(RuntimeError, match=r"size mismatch for self_attn\.in_proj_weight"):
        fast.load_state_dict(other)


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


@pytest.mark.parametrize("shape", [(3, 4, 16), (3, 16)])
def test_fast_layer_refuses_anything_but_length_one_sequences(shape: tuple[int, ...]) -> None:
    _, fast = _pair(16)
    with pytest.raises(ValueError, match="attention_shortcut=false"):
        fast(torch.randn(*shape))


@pytest.mark.parametrize("layers", [0, 1, 2])
@pytest.mark.parametrize("shortcut", [True, False])
def test_specific_encoder_shapes_utterance_and_frame_level(layers: int, shortcut: bool) -> None:
    torch.manual_seed(0)
    enc = SpecificEncoder(20, 12, layers=layers, nhead=8, ff_dim=FF, dropout=0.1, shortcut=shortcut)
    assert len(enc.layers) == layers
    assert enc(torch.randn(5, 20)).shape == (5, 12)  # (B, D) -> (B, H)
    assert enc(torch.randn(5, 1, 20)).shape == (5, 12)  # (B, 1, D) -> (B, H)
    if shortcut and layers:
        with pytest.raises(ValueError, match="attention_shortcut=false"):
            enc(torch.randn(5, 7, 20))  # the length-1 layers hold no Q/K
    else:
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
    n_fast = sum(p.numel() for p in fast.parameters())
    n_plain = sum(p.numel() for p in plain.parameters())
    assert n_plain - n_fast == 2 * _qk_elements(20) == 1680  # two layers' Q/K rows, nothing else


def test_specific_encoder_length_one_sequence_equals_vector_input() -> None:
    enc = SpecificEncoder(20, 12, layers=1, nhead=4, ff_dim=FF, dropout=0.0)
    x = torch.randn(5, 20)  # (B, D)
    torch.testing.assert_close(enc(x), enc(x.unsqueeze(1)))


def test_specific_encoder_padded_frames_do_not_matter() -> None:
    enc = SpecificEncoder(16, 8, layers=1, nhead=4, ff_dim=FF, dropout=0.0, shortcut=False).eval()
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
