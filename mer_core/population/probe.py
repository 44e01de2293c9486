"""Member construction exactly as the single run does it, and which parameters each stage trains.

`build_member` repeats `mer_core.train.fold.fresh_step_context`'s draws (seed, then the model,
then the temperatures), so a member's row starts equal to its single run's model.

`active_parameters` answers "which parameters does `torch.optim` update in this stage" for one
member by running the single run's own loss (`steps.pretrain_loss` / `steps.finetune_loss`) once
on a few rows of a throwaway copy: a parameter whose gradient is None there (a head in
pre-training, the invariant MLP when nothing reads it, the temperatures when they are frozen or
no contrastive term is weighed) is skipped by the optimiser, weight decay included. In the fused
model such a parameter gets an exact zero gradient instead, which Adam would still decay.
"""

from __future__ import annotations

import torch

from mer_core import nee
from mer_core.configs.schema import ExperimentConfig
from mer_core.data.featureset import FeatureSet
from mer_core.population.net import MemberNet
from mer_core.train.device_data import DeviceData
from mer_core.train.fold import fresh_step_context
from mer_core.train.steps import StepContext, finetune_loss, pretrain_loss

__all__ = ["active_parameters", "build_member"]


def build_member(cfg: ExperimentConfig, data: FeatureSet, device: torch.device, seed: int) -> MemberNet:
    """A member's freshly initialised model and temperatures, drawn by the single-trial trainer's `fresh_step_context`.

    Seeds the global generator (the caller runs inside `torch.random.fork_rng`).
    """
    step = fresh_step_context(cfg, data, device, seed)
    return MemberNet(step.model, step.temps, cfg.loss)


def probe_key(cfg: ExperimentConfig, stage: str) -> tuple:
    """What decides which parameters get a gradient: which terms exist, and frozen temperatures."""
    loss, on = cfg.loss, cfg.nee.enabled
    if stage == "pretrain":
        return (stage, loss.pretrain_w_noise > 0 and on, loss.learnable_temperature)
    return (stage, loss.w_modality > 0, loss.w_noise > 0, loss.w_noise > 0 and on, loss.learnable_temperature)


def active_parameters(
    template: MemberNet, cfg: ExperimentConfig, data: FeatureSet, dev: DeviceData, rows: torch.Tensor, stage: str
) -> tuple[bool, ...]:
    """Per `MemberNet` parameter (in `named_parameters` order): does the single run's optimiser update it.

    Runs the single run's loss through the template with the member's loss and NEE settings
    (the template shares the member's structure; its values do not matter here).

    Args:
        template: the population's template module (not modified: the gradients are returned,
            not accumulated, and the generators are forked).
        cfg: the member's config.
        data: the dataset (labels, modalities).
        dev: the dataset on the device.
        rows: a few labelled row indices (>= 2, for BatchNorm) on the device.
        stage: `pretrain` or `finetune`.
    """
    device = dev.mask.device
    state = {n: b.clone() for n, b in template.named_buffers()}
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        schedules = nee.NoiseSchedules.from_config(cfg.nee, data.modalities, device=device)
        gen = torch.Generator(device=device).manual_seed(0)
        step = StepContext(template.model, template.temps, schedules, cfg.loss, cfg.nee, gen)
        x, mask = dev.take(rows)
        if stage == "pretrain":
            loss, _ = pretrain_loss(step, x, mask)
        else:
            y = torch.as_tensor(data.labels, device=device).index_select(0, rows)
            loss, _ = finetune_loss(step, x, mask, y)
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
