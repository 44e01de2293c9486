"""Negative-information removal: the separation term, its views, and its place in the fine-tuning loss."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mer_core import losses, nee
from mer_core.configs import ExperimentConfig, LossConfig, ModelConfig, NEEConfig, with_overrides
from mer_core.data import load_data
from mer_core.models import build_model
from mer_core.negative import (
    draw_for_missing_view,
    drop_one_modality,
    negative_removal_loss,
    negative_views_term,
    separation_loss,
)
from mer_core.train import run
from mer_core.train.objective import TrainNet, draw
from mer_core.train.plan import stage_terms
from tests.missing_helpers import small_model, small_source


def _pair(b: int = 6, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=gen, requires_grad=True), torch.randn(b, d, generator=gen, requires_grad=True)


def test_matches_the_formula_row_by_row() -> None:
    anchor, corrupted = _pair()
    valid = torch.tensor([True, True, False, True, True, True])
    got = separation_loss(anchor, corrupted, temperature=0.5, valid=valid)
    a = torch.nn.functional.normalize(anchor.detach(), dim=1)
    c = torch.nn.functional.normalize(corrupted.detach(), dim=1)
    rows = []
    for i in range(6):
        if not valid[i]:
            continue
        s = sum(math.exp((float(a[i] @ c[j]) - 1) / 0.5) for j in range(6) if valid[j])
        rows.append(math.log(1 + s))
    assert got.item() == pytest.approx(sum(rows) / len(rows), rel=1e-5)


def test_zero_when_alpha_and_beta_are_zero_and_backward_still_works() -> None:
    clean, view = _pair()
    total = negative_removal_loss(clean, None, None, alpha=0.0, beta=0.0, temperature=0.1)
    assert total.item() == 0.0
    total.backward()
    assert clean.grad is not None and torch.count_nonzero(clean.grad) == 0
    with pytest.raises(ValueError, match="noise view"):
        negative_removal_loss(clean, None, view, alpha=0.1, beta=0.0, temperature=0.1)


def test_weights_scale_the_two_parts() -> None:
    clean, view = _pair()
    other = view.detach() * -1.0
    noise = separation_loss(clean, view, temperature=0.2)
    miss = separation_loss(clean, other, temperature=0.2)
    both = negative_removal_loss(clean, view, other, alpha=0.2, beta=0.05, temperature=0.2)
    assert both.item() == pytest.approx(0.2 * noise.item() + 0.05 * miss.item(), rel=1e-6)


def test_gradients_reach_clean_and_corrupted_views() -> None:
    clean, view = _pair()
    negative_removal_loss(clean, view, None, alpha=1.0, beta=0.0, temperature=0.1).backward()
    assert torch.count_nonzero(clean.grad) > 0 and torch.count_nonzero(view.grad) > 0
    assert torch.isfinite(clean.grad).all() and torch.isfinite(view.grad).all()


def test_decreases_as_clean_and_corrupted_views_separate() -> None:
    base = torch.nn.functional.normalize(torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    ortho = torch.nn.functional.normalize(torch.randn(8, 4, generator=torch.Generator().manual_seed(2)), dim=1)
    ortho = torch.nn.functional.normalize(ortho - (ortho * base).sum(1, keepdim=True) * base, dim=1)
    values = []
    for angle in torch.linspace(0.0, math.pi, 7):
        view = torch.cos(angle) * base + torch.sin(angle) * ortho  # cos(clean_i, view_i) = cos(angle)
        values.append(float(separation_loss(base, view, temperature=0.3)))
    assert all(a > b for a, b in itertools.pairwise(values))


def test_gradient_descent_on_the_term_separates_the_views() -> None:
    clean, view = _pair(b=8, d=6, seed=3)
    opt = torch.optim.SGD([clean, view], lr=2.0)
    before = torch.nn.functional.cosine_similarity(clean, view).mean().item()
    for _ in range(50):
        opt.zero_grad()
        separation_loss(clean, view, temperature=0.5).backward()
        opt.step()
    assert torch.nn.functional.cosine_similarity(clean, view).mean().item() < before - 0.3


def test_invalid_rows_are_neither_anchors_nor_negatives() -> None:
    clean, view = _pair()
    valid = torch.tensor([True, False, True, True, False, True])
    expected = separation_loss(clean, view, temperature=0.2, valid=valid)
    junk_clean = torch.where(valid[:, None], clean, 1e3)
    junk_view = torch.where(valid[:, None], view, -1e3)
    torch.testing.assert_close(separation_loss(junk_clean, junk_view, temperature=0.2, valid=valid), expected)
    none = separation_loss(clean, view, temperature=0.2, valid=torch.zeros(6, dtype=torch.bool))
    assert none.item() == 0.0


def test_drop_one_modality_removes_exactly_one_present_modality_where_two_exist() -> None:
    mask = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=torch.bool)
    view, valid = drop_one_modality(mask, draw_for_missing_view(mask, torch.Generator().manual_seed(0)))
    assert valid.tolist() == [True, True, False, False, True]
    assert not (view & ~mask).any()
    assert (mask.sum(1) - view.sum(1)).tolist() == [1, 1, 0, 0, 1]
    again, _ = drop_one_modality(mask, draw_for_missing_view(mask, torch.Generator().manual_seed(0)))
    assert torch.equal(view, again)


@pytest.mark.parametrize("fusion", ["concat", "label_guided"])
def test_the_views_term_of_a_real_model_is_finite_and_trains_the_encoders(fusion: str) -> None:
    source, dims = small_source(n=16)
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_dim=8, ff_dim=16, head_hidden=(8,), nhead=2, fusion=fusion), dims, 3)
    x, mask = source.take(torch.arange(16))
    out = model(x, mask)
    nee_cfg = NEEConfig()
    gen = torch.Generator().manual_seed(0)
    noisy = nee.add_noise(x, nee.NoiseSchedules.from_config(nee_cfg, model.modalities), nee_cfg, generator=gen)
    term = negative_views_term(
        model,
        mask,
        out.specific,
        out.invariant,
        loss_cfg=LossConfig(neg_alpha=0.2, neg_beta=0.05),
        noisy=noisy,
        drop_draws=draw_for_missing_view(mask, gen),
    )
    assert term.dim() == 0 and torch.isfinite(term) and term.item() > 0
    term.backward()
    for m in model.modalities:
        grads = [p.grad for p in model.specific[m].parameters()]
        assert any(g is not None and torch.count_nonzero(g) > 0 for g in grads), m


def test_finetune_loss_adds_the_term_only_when_weighted() -> None:
    source, dims = small_source(n=16)
    x, mask = source.take(torch.arange(16))
    y = torch.arange(16) % 3
    losses_by_alpha, terms_by_alpha = {}, {}
    for alpha, beta in ((0.0, 0.0), (0.2, 0.05)):
        cfg = with_overrides(ExperimentConfig(), {"loss.neg_alpha": alpha, "loss.neg_beta": beta})
        model = small_model(dims).train()
        net = TrainNet(model, losses.Temperatures.from_config(cfg.loss, model.modalities), cfg.loss)
        terms = stage_terms(cfg, "finetune")
        schedules = nee.NoiseSchedules.from_config(cfg.nee, model.modalities)
        draws = draw(x, mask, terms, cfg=cfg, schedules=schedules, generator=torch.Generator().manual_seed(0))
        losses_by_alpha[alpha] = net(x, mask, y, draws.as_dict(), terms.weights, kind="finetune", present=terms.present)
        terms_by_alpha[alpha] = (terms, draws)
    assert not terms_by_alpha[0.0][0].uses("negative") and terms_by_alpha[0.2][0].uses("negative")
    with_neg_draws = terms_by_alpha[0.2][1]
    assert with_neg_draws.negative_noisy is not None and with_neg_draws.drop is not None
    assert terms_by_alpha[0.0][1].negative_noisy is None and terms_by_alpha[0.0][1].drop is None
    # Same init, same batch: the only difference is the separation term, which is positive.
    assert losses_by_alpha[0.2].item() > losses_by_alpha[0.0].item()


def test_a_run_with_negative_removal_trains(tiny_data_cfg) -> None:
    cfg = with_overrides(
        ExperimentConfig(data=tiny_data_cfg),
        {
            "data.folds": 1,
            "model.hidden_dim": 16,
            "model.ff_dim": 32,
            "optim.max_epochs": 2,
            "optim.pretrain_epochs": 0,
            "self_training.rounds": 0,
            "loss.neg_alpha": 0.2,
            "loss.neg_beta": 0.05,
        },
    )
    result = run(cfg, load_data(cfg.data))
    assert result.status == "ok" and 0.0 <= result.metrics["val/weighted_f1"] <= 1.0
