"""Which parameters each stage trains, per member, as the single executor's optimiser sees it.

`active_parameters` answers "which parameters does `torch.optim` update in this stage" for one
member by running the recipe's own objective (`TrainNet` with the member's `stage_terms`) once
on a few rows: a parameter whose gradient is None there (a head in pre-training, the invariant
MLP when nothing reads it, the temperatures when they are frozen or no contrastive term is
weighed) is skipped by the optimiser, weight decay included. In the fused model such a parameter
gets an exact zero gradient instead, which Adam would still decay.
"""

from __future__ import annotations

import torch

from mer_core import nee
from mer_core.configs.schema import ExperimentConfig
from mer_core.data.featureset import FeatureSet
from mer_core.train.device_data import DeviceData
from mer_core.train.objective import TrainNet, draw
from mer_core.train.plan import LossKind, stage_terms

__all__ = ["active_parameters", "probe_key"]


def probe_key(cfg: ExperimentConfig, kind: LossKind) -> tuple:
    """What decides which parameters get a gradient: the terms present, and frozen temperatures."""
    return (kind, stage_terms(cfg, kind).present, cfg.loss.learnable_temperature)


def active_parameters(
    template: TrainNet, cfg: ExperimentConfig, data: FeatureSet, dev: DeviceData, rows: torch.Tensor, kind: LossKind
) -> tuple[bool, ...]:
    """Per `TrainNet` parameter (in `named_parameters` order): does the single executor's optimiser update it.

    Runs the member's loss through the template (same structure; its values do not matter here).

    Args:
        template: the population's template module (not modified: the gradients are returned,
            not accumulated, the generators are forked and the BatchNorm statistics put back).
        cfg: the member's config.
        data: the dataset (labels, modalities).
        dev: the dataset on the device.
        rows: a few labelled row indices (>= 2, for BatchNorm) on the device.
        kind: `pretrain` or `finetune`.
    """
    device = dev.mask.device
    state = {n: b.clone() for n, b in template.named_buffers()}
    terms = stage_terms(cfg, kind)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        schedules = nee.NoiseSchedules.from_config(cfg.nee, data.modalities, device=device)
        gen = torch.Generator(device=device).manual_seed(0)
        x, mask = dev.take(rows)
        y = torch.as_tensor(data.labels, device=device).index_select(0, rows) if kind == "finetune" else None
        draws = draw(x, mask, terms, cfg=cfg, schedules=schedules, generator=gen)
        loss = template(x, mask, y, draws.as_dict(), terms.weights, kind=kind, present=terms.present)
        params = [p for _, p in template.named_parameters()]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    with torch.no_grad():
        for name, b in template.named_buffers():
            b.copy_(state[name])  # the train-mode forward moved the BatchNorm statistics
    frozen_temps = not cfg.loss.learnable_temperature
    return tuple(
        g is not None and not (frozen_temps and name.startswith("temps."))
        for (name, _), g in zip(template.named_parameters(), grads, strict=True)
    )
