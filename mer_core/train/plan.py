"""The MR-CCL recipe as data: its stages, which loss terms each stage has, and the seeds.

Both executors (the single-trial trainer and the fused population trainer) read these and
nothing else to decide what a fold does, so a rule written here holds for both:

- stages, in order: `pretrain` (contrastive, labels unused; skipped when
  `optim.pretrain_epochs == 0`), `finetune` (supervised, early stopping on validation weighted
  F1), then `self_training_<r>` for r = 1..`self_training.rounds` (fine-tuning on the labelled
  set plus confident, oversampled pseudo-labels);
- which loss terms a member's loss holds in a stage and their weights (`stage_terms`);
- the seeds of a fold: model init, NEE noise draws, batch order, and each self-training round
  (`FoldSeeds`). The numbers are part of every stored result (same seed, same folds and
  batches), so they do not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mer_core.configs.schema import ExperimentConfig

__all__ = [
    "LOSS_KINDS",
    "TERMS",
    "FoldSeeds",
    "LossKind",
    "StageTerms",
    "noise_seed",
    "round_stage",
    "stage_terms",
]

LossKind = Literal["pretrain", "finetune"]
LOSS_KINDS: tuple[LossKind, ...] = ("pretrain", "finetune")

# Every loss term of the recipe, in the order they are added to a step's total.
TERMS = ("cls", "modality", "noise", "negative")

# Seeds of fold k derive from cfg.seed with these offsets: distinct, reproducible streams.
_FOLD_STRIDE = 1009  # init seed of fold k = seed * 1009 + k
_NOISE_OFFSET = 1  # NEE noise (and negative-view) generator
_BATCH_OFFSET = 2  # batch order generator (CPU)
_ROUND_STRIDE = 10  # self-training round r re-seeds init and oversampling with init + 10 * r


@dataclass(frozen=True)
class FoldSeeds:
    """The seeds of one fold of one config."""

    init: int  # global torch seed before the model and temperatures are built

    @classmethod
    def of(cls, seed: int, fold: int) -> FoldSeeds:
        return cls(init=seed * _FOLD_STRIDE + fold)

    @property
    def noise(self) -> int:
        """The generator of NEE noise and negative-view draws (on the data's device)."""
        return noise_seed(self.init)

    @property
    def batches(self) -> int:
        """The generator of the batch order (CPU)."""
        return self.init + _BATCH_OFFSET

    def round(self, r: int) -> int:
        """Self-training round r: the init seed of a re-initialised model and of its oversampling."""
        return self.init + _ROUND_STRIDE * r


def noise_seed(init_seed: int) -> int:
    """The noise generator's seed of a model initialised from `init_seed` (a fold or a re-init)."""
    return init_seed + _NOISE_OFFSET


def round_stage(r: int) -> str:
    """The reported `stage` of self-training round r."""
    return f"self_training_{r}"


@dataclass(frozen=True)
class StageTerms:
    """Which loss terms one config's loss holds in one stage, and their weights.

    Attributes:
        weights: term -> weight (`cls`, `modality`, `noise`; `negative` is weighted inside by
            `loss.neg_alpha` / `loss.neg_beta` and has weight 1 when present).
        present: the terms that are part of the loss graph. A term with weight 0 is absent,
            except pre-training's modality term, which the recipe always adds (its weight
            scales it, so weight 0 still gives the encoders zero gradients that Adam and weight
            decay act on).
    """

    weights: dict[str, float]
    present: frozenset[str]

    def uses(self, term: str) -> bool:
        return term in self.present


def stage_terms(cfg: ExperimentConfig, kind: LossKind) -> StageTerms:
    """The loss terms of `cfg` in a stage of kind `kind` (`pretrain` or `finetune`).

    The noise term needs NEE enabled and a positive weight; the negative-removal term exists in
    fine-tuning only, when `loss.neg_alpha` or `loss.neg_beta` is positive.
    """
    loss, nee_on = cfg.loss, cfg.nee.enabled
    if kind == "pretrain":
        weights = {
            "cls": 0.0,
            "modality": loss.pretrain_w_modality,
            "noise": loss.pretrain_w_noise if nee_on else 0.0,
            "negative": 0.0,
        }
        present = {"modality"} | ({"noise"} if weights["noise"] > 0 else set())
        return StageTerms(weights, frozenset(present))
    if kind != "finetune":
        raise ValueError(f"stage kind must be one of {LOSS_KINDS}; got {kind!r}")
    negative = loss.neg_alpha > 0 or loss.neg_beta > 0
    weights = {
        "cls": loss.w_cls,
        "modality": loss.w_modality,
        "noise": loss.w_noise if nee_on else 0.0,
        "negative": 1.0 if negative else 0.0,
    }
    present = {"cls"} | {t for t in ("modality", "noise", "negative") if weights[t] > 0}
    return StageTerms(weights, frozenset(present))
