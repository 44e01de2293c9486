"""The assembled MR-CCL model over every fusion operator, fusion input and several modality sets."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mer_core.configs import ModelConfig
from mer_core.errors import ConfigError
from mer_core.models import FUSION_HEAD, FUSIONS, HEADS, MRCCL, ModelOutput, build_model, to_reference_state_dict

B, C = 5, 4
DIM_SETS = [{"a": 12, "b": 20, "c": 8}, {"left": 10, "right": 6}, {"w": 4, "x": 9, "y": 16, "z": 5}]
SMALL = ModelConfig(hidden_dim=8, layers=1, nhead=4, ff_dim=16, head_hidden=(8,), fusion_rank=2)
FUSION_INPUTS = ("specific", "invariant", "both")


def _cfg(**changes: object) -> ModelConfig:
    return dataclasses.replace(SMALL, **changes)


def _model(dims: dict[str, int], seed: int = 0, **changes: object) -> MRCCL:
    torch.manual_seed(seed)
    return build_model(_cfg(**changes), dims, C)


def _inputs(dims: dict[str, int], seed: int = 1, frames: int | None = None) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lead = (B,) if frames is None else (B, frames)
    return {m: torch.randn(*lead, d, generator=gen) for m, d in dims.items()}  # each (B, D_m) or (B, T, D_m)


def _mask(dims: dict[str, int]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    mask = torch.rand(B, len(dims), generator=gen) > 0.3  # (B, M)
    mask[0] = False  # a sample with nothing present
    mask[1, :] = True
    mask[2:, 0] = False  # the first modality surely missing somewhere
    return mask


def _all_tensors(out: ModelOutput) -> list[torch.Tensor]:
    return [t for group in out for t in group.values()]


@pytest.mark.parametrize("dims", DIM_SETS, ids=lambda d: "-".join(d))
@pytest.mark.parametrize("fusion_input", FUSION_INPUTS)
@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_end_to_end_shapes_gradients_no_nan(fusion: str, fusion_input: str, dims: dict[str, int]) -> None:
    model = _model(dims, fusion=fusion, fusion_input=fusion_input)
    mods, hid, n_mod = tuple(dims), SMALL.hidden_dim, len(dims)
    assert model.modalities == mods
    assert model.head_names == (*mods, FUSION_HEAD)
    out = model(_inputs(dims), _mask(dims))
    assert isinstance(out, ModelOutput)
    assert {m: t.shape for m, t in out.specific.items()} == {m: (B, hid) for m in mods}
    assert {m: t.shape for m, t in out.invariant.items()} == {m: (B, hid) for m in mods}
    assert {m: t.shape for m, t in out.ovr.items()} == {m: (B, (n_mod - 1) * hid) for m in mods}
    assert {h: t.shape for h, t in out.logits.items()} == {h: (B, C) for h in model.head_names}
    assert all(torch.isfinite(t).all() for t in _all_tensors(out))
    sum(t.pow(2).sum() for t in _all_tensors(out)).backward()
    _assert_gradients_everywhere(model)


def _assert_gradients_everywhere(model: MRCCL) -> None:
    """Every parameter gets a finite gradient, every weight a nonzero one (no dead Q/K rows are held)."""
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if p.dim() >= 2:
            assert torch.count_nonzero(p.grad) > 0, name


@pytest.mark.parametrize("head", HEADS.names())
@pytest.mark.parametrize("layers", [0, 2])
def test_every_head_and_layer_count(head: str, layers: int) -> None:
    dims = DIM_SETS[0]
    model = _model(dims, head=head, layers=layers)
    out = model(_inputs(dims))
    assert all(t.shape == (B, C) for t in out.logits.values())
    sum(t.pow(2).sum() for t in _all_tensors(out)).backward()
    _assert_gradients_everywhere(model)


def test_single_modality_has_no_ovr_projection() -> None:
    model = _model({"only": 7})
    out = model(_inputs({"only": 7}))
    assert out.ovr == {} and len(model.ovr) == 0
    assert set(out.logits) == {"only", FUSION_HEAD}


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_same_seed_same_outputs_with_dropout(fusion: str) -> None:
    dims = DIM_SETS[2]
    outs = []
    for _ in range(2):
        model = _model(dims, seed=21, fusion=fusion, dropout=0.2, head_dropout=0.2)
        torch.manual_seed(8)  # the dropout draws
        outs.append(_all_tensors(model(_inputs(dims), _mask(dims))))
    assert all(torch.equal(a, b) for a, b in zip(*outs, strict=True))


@pytest.mark.parametrize("fusion_input", FUSION_INPUTS)
@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_missing_modality_input_values_do_not_matter(fusion: str, fusion_input: str) -> None:
    dims = DIM_SETS[0]
    model = _model(dims, fusion=fusion, fusion_input=fusion_input)
    x, mask = _inputs(dims), _mask(dims)
    expected = _all_tensors(model(x, mask))  # train mode: BatchNorm mixes rows, still unaffected
    for i, m in enumerate(dims):
        junk = torch.full_like(x[m], float("nan"))  # (B, D_m)
        changed = dict(x)
        changed[m] = torch.where(mask[:, i : i + 1], x[m], junk)  # only missing rows change
        for got, want in zip(_all_tensors(model(changed, mask)), expected, strict=True):
            torch.testing.assert_close(got, want)


def test_no_mask_equals_all_present_mask() -> None:
    dims = DIM_SETS[1]
    model = _model(dims, fusion="attention").eval()
    x = _inputs(dims)
    a = _all_tensors(model(x))
    b = _all_tensors(model(x, torch.ones(B, len(dims), dtype=torch.bool)))
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_frame_level_inputs_need_the_real_attention() -> None:
    dims = DIM_SETS[1]
    model = _model(dims, layers=2, attention_shortcut=False)
    out = model(_inputs(dims, frames=3), _mask(dims))
    assert all(t.shape == (B, C) for t in out.logits.values())
    with pytest.raises(ValueError, match="attention_shortcut=false"):
        _model(dims, layers=2)(_inputs(dims, frames=3), _mask(dims))  # the length-1 layers hold no Q/K


def _reference_model(dims: dict[str, int], seed: int, layers: int = 2) -> MRCCL:
    """A model in the reference (nn.TransformerEncoderLayer) format: the state-dict keys, shapes and
    seeded values every shortcut model had before its layers dropped the Q/K rows."""
    return _model(dims, seed=seed, layers=layers, attention_shortcut=False)


def test_shortcut_and_plain_attention_agree_for_same_seed() -> None:
    dims = DIM_SETS[0]
    fast = _model(dims, seed=2, layers=2).eval()
    plain = _reference_model(dims, seed=2).eval()
    assert list(to_reference_state_dict(fast.state_dict())) == list(plain.state_dict())
    x = _inputs(dims)
    for got, want in zip(_all_tensors(fast(x)), _all_tensors(plain(x)), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layers", [1, 2])
def test_same_seed_gives_the_previous_models_values_and_rng_state(layers: int) -> None:
    """Seeded results stay reproducible: each held tensor is the old one (V rows of in_proj), and the
    random stream after building the model is the one the old model left."""
    dims = DIM_SETS[2]
    fast = _model(dims, seed=4, layers=layers)
    after_fast = torch.rand(8)
    old = _reference_model(dims, seed=4, layers=layers)
    after_old = torch.rand(8)
    assert torch.equal(after_fast, after_old)
    old_sd = old.state_dict()
    for name, value in fast.state_dict().items():
        if name.endswith(("v_proj_weight", "v_proj_bias")):
            full = old_sd[name.replace("v_proj", "in_proj")]  # (3D, D) or (3D,)
            assert torch.equal(value, full[2 * value.shape[0] :]), name
        else:
            assert torch.equal(value, old_sd[name]), name


def test_parameter_count_drops_by_exactly_the_qk_rows() -> None:
    dims = DIM_SETS[0]  # widths 12, 20, 8
    n_fast = sum(p.numel() for p in _model(dims, layers=2).parameters())
    n_old = sum(p.numel() for p in _reference_model(dims, seed=0).parameters())
    qk = 2 * sum(2 * d * d + 2 * d for d in dims.values())  # 2 layers x (Q, K rows of weight and bias)
    assert qk == 2592
    assert n_old - n_fast == qk


def test_old_format_checkpoint_loads_and_predicts_identically() -> None:
    """A full-model state dict of the old format (model.pt, TrialResult.model_state) loads strictly."""
    dims = DIM_SETS[0]
    old = _reference_model(dims, seed=6).eval()
    with torch.no_grad():
        for p in old.parameters():
            p.add_(0.05 * torch.randn_like(p))  # trained-looking weights, Q/K rows included
    state = old.state_dict()
    fast = _model(dims, seed=99, layers=2).eval()
    fast.load_state_dict(state, strict=True)
    x, mask = _inputs(dims), _mask(dims)
    for got, want in zip(_all_tensors(fast(x, mask)), _all_tensors(old(x, mask)), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # And written back, the reference model computes the same: the Q/K rows it gets are zeros.
    again = _reference_model(dims, seed=98).eval()
    again.load_state_dict(to_reference_state_dict(fast.state_dict()), strict=True)
    for got, want in zip(_all_tensors(again(x, mask)), _all_tensors(old(x, mask)), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_old_format_checkpoint_loads_through_a_compile_wrapper() -> None:
    """runtime.compile=true trains an OptimizedModule, whose keys carry `_orig_mod.`: both ways work."""
    dims = DIM_SETS[1]
    old = _reference_model(dims, seed=3).eval()
    fast = _model(dims, seed=5, layers=2).eval()
    compiled = torch.compile(fast)  # wrapping compiles nothing until the first call
    compiled.load_state_dict({f"_orig_mod.{k}": v for k, v in old.state_dict().items()}, strict=True)
    back = to_reference_state_dict(compiled.state_dict())
    assert all(k.startswith("_orig_mod.") for k in back)
    old.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in back.items()}, strict=True)
    x = _inputs(dims)
    for got, want in zip(_all_tensors(fast(x)), _all_tensors(old(x)), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_encode_specific_matches_forward_and_names_missing_inputs() -> None:
    dims = DIM_SETS[0]
    model = _model(dims).eval()
    x = _inputs(dims)
    spec = model.encode_specific(x)
    assert all(torch.equal(spec[m], model(x).specific[m]) for m in dims)
    with pytest.raises(ValueError, match="lack modalities"):
        model.encode_specific({"a": x["a"]})


def test_unknown_fusion_is_a_config_error_listing_registered_names() -> None:
    with pytest.raises(ConfigError) as info:
        build_model(_cfg(fusion="bilinear-ish"), DIM_SETS[0], C)
    message = str(info.value)
    assert "model.fusion" in message and "bilinear-ish" in message
    assert all(name in message for name in FUSIONS.names())


def test_unknown_head_is_a_config_error_listing_registered_names() -> None:
    with pytest.raises(ConfigError) as info:
        build_model(_cfg(head="transformer"), DIM_SETS[0], C)
    assert "model.head" in str(info.value)
    assert all(name in str(info.value) for name in HEADS.names())


@pytest.mark.parametrize("bad", ["fusion", "a.b", "", "train"])
def test_unusable_modality_names_are_rejected(bad: str) -> None:
    with pytest.raises(ConfigError, match="modality name"):
        build_model(SMALL, {bad: 4, "ok": 3}, C)


def test_degenerate_sizes_are_rejected() -> None:
    with pytest.raises(ValueError):
        build_model(SMALL, {}, C)
    with pytest.raises(ValueError):
        build_model(SMALL, {"a": 4}, 0)
