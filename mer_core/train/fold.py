"""One fold of the MR-CCL recipe: pre-train, fine-tune, then self-training rounds."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from mer_core import losses, nee, pseudo, voting
from mer_core.configs.schema import ExperimentConfig
from mer_core.data.featureset import FeatureSet, Split
from mer_core.missing import build_imputer
from mer_core.models import build_model
from mer_core.train.device_data import DeviceData
from mer_core.train.fit import FitContext, finetune, make_optimizer, pretrain, voting_setup
from mer_core.train.missing_eval import fold_data, score_missing_rates
from mer_core.train.reporting import Reporter
from mer_core.train.result import FoldResult
from mer_core.train.steps import StepContext, predict


def fresh_step_context(cfg: ExperimentConfig, data: FeatureSet, device: torch.device, seed: int) -> StepContext:
    """A freshly initialised model, temperatures, NEE schedules and noise generator for `seed`
    (shared with the fused population trainer, whose members must draw exactly the same)."""
    torch.manual_seed(seed)  # model init; the caller runs us inside torch.random.fork_rng
    model = build_model(cfg.model, data.dims, data.n_classes).to(device)
    temps = losses.Temperatures(
        losses.contrastive_term_names(data.modalities),
        init=cfg.loss.temperature_init,
        learnable=cfg.loss.learnable_temperature,
    ).to(device)
    schedules = nee.NoiseSchedules.from_config(cfg.nee, data.modalities, device=device)
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    return StepContext(model, temps, schedules, cfg.loss, cfg.nee, gen)


def train_fold(
    cfg: ExperimentConfig,
    data: FeatureSet,
    dev: DeviceData,
    split: Split,
    *,
    fold: int,
    reporter: Reporter,
    autocast_dtype: torch.dtype | None = None,
    compile_model: bool = False,
) -> tuple[FoldResult, torch.nn.Module]:
    """Train one fold end to end; returns its result and the best model."""
    device = dev.mask.device
    seed = cfg.seed * 1009 + fold  # distinct, reproducible streams per fold
    step = fresh_step_context(cfg, data, device, seed)
    if compile_model:
        step = dataclasses.replace(step, model=torch.compile(step.model))
    dev = fold_data(dev, data, split, cfg.missing)  # the missing-modality protocol's mask for this fold
    ctx = FitContext(
        step=step,
        data=dev,
        optim=cfg.optim,
        voting_weights=voting_setup(cfg.voting, step.model.head_names, cls_heads=cfg.loss.cls_heads),
        voting_space=cfg.voting.space,
        class_names=data.class_names,
        batch_generator=torch.Generator().manual_seed(seed + 2),
        autocast_dtype=autocast_dtype,
        fold=fold,
        imputer=build_imputer(cfg.missing, dev, split.train),
    )
    labels = data.labels
    train = (split.train, labels[split.train])
    val = (split.val, labels[split.val])
    pool = data.unlabelled_idx  # (U,)
    if cfg.optim.pretrain_epochs > 0:
        opt = make_optimizer(step.model.parameters(), step.temps.parameters(), cfg.optim)
        pretrain(ctx, np.concatenate([split.train, pool]), epochs=cfg.optim.pretrain_epochs, opt=opt)
    outcome = finetune(ctx, train, val, reporter=reporter, stage="finetune")
    epochs = outcome.epochs
    reports: list[dict[str, Any]] = []
    for rnd in range(1, cfg.self_training.rounds + 1):
        if len(pool) == 0:
            break
        round_train, report = _pseudo_labelled_set(cfg, data, ctx, train, pool, seed=seed + 10 * rnd)
        reports.append({"round": rnd, **report})
        if cfg.self_training.reinit:
            fresh = fresh_step_context(cfg, data, device, seed + 10 * rnd)
            ctx = dataclasses.replace(ctx, step=fresh)
        outcome = finetune(ctx, round_train, val, reporter=reporter, stage=f"self_training_{rnd}")
        epochs += outcome.epochs
    result = FoldResult(
        fold=fold,
        metrics={**outcome.metrics, **score_missing_rates(ctx, data, split, cfg.missing)},
        val_idx=split.val,
        val_labels=val[1],
        val_logits=outcome.logits,
        pseudo=reports,
        epochs=epochs,
    )
    return result, ctx.step.model


def _pseudo_labelled_set(
    cfg: ExperimentConfig,
    data: FeatureSet,
    ctx: FitContext,
    train: tuple[np.ndarray, np.ndarray],
    pool: np.ndarray,
    *,
    seed: int,
) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """Predict the pool with the voting ensemble, keep confident samples, oversample every class."""
    logits = predict(ctx.step.model, ctx.data, pool, batch_size=max(256, cfg.optim.batch_size))
    return pseudo_labelled_set(cfg, data, logits, ctx.voting_weights, train, pool, seed=seed)


def pseudo_labelled_set(
    cfg: ExperimentConfig,
    data: FeatureSet,
    logits: dict[str, np.ndarray],
    voting_weights: dict[str, float],
    train: tuple[np.ndarray, np.ndarray],
    pool: np.ndarray,
    *,
    seed: int,
) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """`_pseudo_labelled_set` from the pool's head logits (shared with the fused population trainer)."""
    st = cfg.self_training
    probs = voting.vote_probs(logits, voting_weights, space=cfg.voting.space)  # (U, C)
    counts = np.bincount(train[1], minlength=data.n_classes)  # (C,)
    thresholds = pseudo.class_thresholds(st, data.class_names, counts)
    keep, pseudo_y, _conf = pseudo.select_pseudo_labels(probs, thresholds, max_pseudo=st.max_pseudo)
    truth = data.true_labels[pool[keep]] if data.true_labels is not None else np.full(len(keep), -1)
    report = pseudo.pseudo_label_report(pseudo_y, truth, data.class_names)
    idx = np.concatenate([train[0], pool[keep]])  # (n + K,)
    y = np.concatenate([train[1], pseudo_y]).astype(np.int64)  # (n + K,)
    if st.oversample:
        pos = pseudo.oversample(y, target=st.oversample_to, rng=np.random.default_rng(seed))
        idx, y = idx[pos], y[pos]
    report["train_size"] = len(idx)
    return (idx, y), report
