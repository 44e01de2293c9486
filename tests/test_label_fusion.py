"""Label-guided fusion specifics (the registry-wide checks live in test_models_fusion.py)."""

from __future__ import annotations

import torch

from mer_core.configs import ModelConfig
from mer_core.models import FUSIONS, LabelGuidedFusion, build_model

B, H = 5, 8
MODS = ("a", "b", "c")


def _op(n_classes: int = 4) -> LabelGuidedFusion:
    torch.manual_seed(0)
    return LabelGuidedFusion(MODS, H, n_classes=n_classes)


def test_registered_and_sized_by_the_model_class_count() -> None:
    assert FUSIONS.get("label_guided") is LabelGuidedFusion
    model = build_model(
        ModelConfig(hidden_dim=H, ff_dim=16, head_hidden=(8,), nhead=2, fusion="label_guided"), {"a": 4, "b": 6}, 7
    )
    assert model.fusion.labels.shape == (7, H) and model.fusion.out_dim == 7 * H
    assert model.heads["fusion"].hidden[0].in_features == 7 * H


def test_attention_weights_sum_to_one_over_present_modalities_and_are_zero_on_missing() -> None:
    op = _op()
    x = torch.randn(B, 3, H)  # (B, M, H)
    mask = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=torch.bool)
    weights = op._weights(x, mask[:, :, None])  # (B, heads, C, M)
    assert weights.shape == (B, op.n_heads, 4, 3)
    torch.testing.assert_close(weights.sum(-1), mask.any(1).float()[:, None, None].expand(B, op.n_heads, 4))
    assert (weights.masked_select(~mask[:, None, None, :].expand_as(weights)) == 0).all()


def test_identical_modalities_give_every_label_the_same_attended_value() -> None:
    op = _op()
    same = torch.randn(B, H)  # (B, H)
    out = op({m: same for m in MODS}, torch.ones(B, 3, dtype=torch.bool)).view(B, 4, H)  # (B, C, H)
    # Softmax weights sum to 1, so attended = out_proj(v_proj(same)) whatever the weights are.
    attended = op.out_proj(op.v_proj(same))  # (B, H)
    torch.testing.assert_close(out, op.labels + attended[:, None, :])


def test_labels_attend_differently() -> None:
    op = _op()
    x = torch.randn(B, 3, H)
    weights = op._weights(x, torch.ones(B, 3, 1, dtype=torch.bool))  # (B, heads, C, M)
    assert not torch.allclose(weights[:, :, 0], weights[:, :, 1])
