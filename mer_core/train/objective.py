"""The training objective of one config: MR-CCL plus its temperatures behind one loss-returning forward.

`TrainNet.forward` composes a step's loss from the terms `plan.stage_terms` names, in one fixed
order (classification, modality contrastive, noise contrastive, negative removal). Both executors
run this very module: the single-trial trainer calls it, the fused trainer swaps a member's
parameters in with `torch.func.functional_call` and maps it over members with `vmap`.

Randomness is drawn before the forward (`draw`), from the member's own generator and in the
single run's order: NEE noise for the noise term, NEE noise for the negative noise view, the
uniforms of the negative missing view. Inside `vmap` a `torch.Generator` cannot be used, and
drawing outside keeps every member's stream exactly what its single run draws.

Weights may be Python floats (one config) or 0-d tensors (one member inside `vmap`). A present
term that a member does not use gets weight 0 and is switched off with `torch.where`, so a NaN in
a term nobody weighs cannot leak into the total.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mer_core import losses, nee, negative
from mer_core.configs.schema import ExperimentConfig, LossConfig
from mer_core.models import MRCCL, build_model
from mer_core.train.plan import LossKind, StageTerms
from mer_core.train.precision import storage_dtype

__all__ = ["Draws", "TrainNet", "Weight", "draw", "fresh_net"]

Weight = float | Tensor


@dataclass(frozen=True)
class Draws:
    """One step's random inputs of one member (None where its loss does not need them)."""

    noisy: dict[str, Tensor] | None = None  # modality -> (B, D_m) NEE-noised inputs (noise term)
    negative_noisy: dict[str, Tensor] | None = None  # modality -> (B, D_m) noised inputs (negative noise view)
    drop: Tensor | None = None  # (B, M) uniforms choosing the dropped modality (negative missing view)

    def as_dict(self) -> dict[str, object]:
        """The drawn fields only (a pytree `vmap` can map over)."""
        return {k: v for k, v in vars(self).items() if v is not None}


def draw(
    x: Mapping[str, Tensor],
    mask: Tensor,
    terms: StageTerms,
    *,
    cfg: ExperimentConfig,
    schedules: nee.NoiseSchedules,
    generator: torch.Generator,
) -> Draws:
    """The step's random inputs of one config, from its generator in the recipe's order.

    Args:
        x: modality -> (B, D_m) the batch's inputs.
        mask: (B, M) the batch's presence.
        terms: the config's terms in this stage.
        cfg: the config (NEE noise kind; negative-removal weights).
        schedules: its NEE schedules.
        generator: its noise generator (on the data's device).
    """
    noisy = negative_noisy = drop = None
    if terms.uses("noise"):
        noisy = nee.add_noise(x, schedules, cfg.nee, generator=generator)  # m -> (B, D_m)
    if terms.uses("negative"):
        if cfg.loss.neg_alpha > 0:
            negative_noisy = nee.add_noise(x, schedules, cfg.nee, generator=generator)  # m -> (B, D_m)
        if cfg.loss.neg_beta > 0:
            drop = negative.draw_for_missing_view(mask, generator)  # (B, M)
    return Draws(noisy, negative_noisy, drop)


class TrainNet(nn.Module):
    """MR-CCL and its temperatures; `forward` returns one config's loss (or its head logits).

    Only settings that are equal within a fused population live here (`contrastive_target`,
    `cls_heads`, `label_smoothing`, the negative-removal section); per-config weights arrive as
    arguments, so one module serves every member of a population.
    """

    def __init__(self, model: MRCCL, temps: losses.Temperatures, loss_cfg: LossConfig) -> None:
        super().__init__()
        self.model = model  # registered first: a flat parameter row starts with the model's
        self.temps = temps
        self.loss_cfg = loss_cfg

    def forward(
        self,
        x: Mapping[str, Tensor],
        mask: Tensor,
        y: Tensor | None = None,
        draws: Mapping[str, object] | None = None,
        weights: Mapping[str, Weight] | None = None,
        *,
        kind: LossKind | str,
        present: frozenset[str] = frozenset(),
    ) -> Tensor | tuple[Tensor, ...]:
        """The loss of one step (kind `pretrain` / `finetune`) or the head logits (kind `predict`).

        Args:
            x: modality -> (B, D_m) features.
            mask: (B, M) presence.
            y: (B,) labels (finetune).
            draws: `Draws.as_dict()` of this config's step.
            weights: term -> weight (float, or 0-d tensor under vmap); see `plan.stage_terms`.
            kind: `pretrain`, `finetune` or `predict`.
            present: the terms to compute (a population: those any member uses).

        Returns:
            0-d loss, or the logits of every head (a tuple in `model.head_names` order).
        """
        out = self.model(x, mask)
        if kind == "predict":
            return tuple(out.logits[h] for h in self.model.head_names)  # each (B, C)
        if weights is None:
            raise ValueError(f"kind {kind!r} needs the loss weights")
        draws = draws or {}
        cfg = self.loss_cfg
        total: Tensor | None = None
        if "cls" in present:
            if y is None:
                raise ValueError("the classification term needs labels")
            logits = out.logits if cfg.cls_heads == "all" else {"fusion": out.logits["fusion"]}
            cls = losses.classification_loss(logits, y, label_smoothing=cfg.label_smoothing)
            total = _add(total, _weighted(weights["cls"], cls))
        if "modality" in present:
            target = out.specific if cfg.contrastive_target == "specific" else out.invariant
            modality = losses.modality_contrastive(target, out.ovr, mask, self.model.modalities, self.temps)
            total = _add(total, _weighted(weights["modality"], modality))
        if "noise" in present:
            spec_noisy = self.model.encode_specific(draws["noisy"])  # m -> (B, H)
            noise = losses.noise_contrastive(out.specific, spec_noisy, mask, self.model.modalities, self.temps)
            total = _add(total, _weighted(weights["noise"], noise))
        if "negative" in present:  # already weighted inside by neg_alpha, neg_beta
            term = negative.negative_views_term(
                self.model,
                mask,
                out.specific,
                out.invariant,
                loss_cfg=cfg,
                noisy=draws.get("negative_noisy"),  # type: ignore[arg-type]
                drop_draws=draws.get("drop"),  # type: ignore[arg-type]
            )
            total = _add(total, _weighted(weights["negative"], term))
        if total is None:
            raise ValueError(f"no loss term is present in stage {kind!r}")
        return total


def _add(total: Tensor | None, term: Tensor) -> Tensor:
    return term if total is None else total + term


def _weighted(weight: Weight, term: Tensor) -> Tensor:
    if isinstance(weight, Tensor):
        # A member that does not use the term gets exactly 0 (not 0 * term: a NaN there must not leak).
        return torch.where(weight > 0, weight * term, torch.zeros_like(term))
    return weight * term


def fresh_net(cfg: ExperimentConfig, dims: Mapping[str, int], n_classes: int, device: torch.device, seed: int):
    """A freshly initialised `TrainNet` for `seed`: the global generator is seeded, then the model
    and the temperatures are built (the caller runs inside `torch.random.fork_rng`).

    Every executor builds its members here, so a member of a fused population starts from exactly
    its single run's weights. The weights are drawn in float32 and then cast to the run's
    `runtime.precision` storage dtype, so an fp64 run starts from its fp32 twin's values.
    """
    torch.manual_seed(seed)
    dtype = storage_dtype(cfg.runtime.precision)
    model = build_model(cfg.model, dims, n_classes).to(device=device, dtype=dtype)
    temps = losses.Temperatures.from_config(cfg.loss, tuple(dims)).to(device=device, dtype=dtype)
    return TrainNet(model, temps, cfg.loss)
