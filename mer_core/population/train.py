"""`train_population`: K configs of one shape group trained as one stacked model, fold by fold.

Each member follows `mer_core.train.run` step for step: the same folds, the same seeds
(`seed * 1009 + fold` for the init, `+1` for the NEE noise generator, `+2` for the batch
order, `+10 * round` for self-training), the same stages, the same reports, the same result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mer_core import nee
from mer_core.configs import with_overrides
from mer_core.configs.schema import ExperimentConfig
from mer_core.data.featureset import FeatureSet, Split
from mer_core.data.splits import make_splits
from mer_core.errors import ConfigError
from mer_core.population.dropout import marker_rates
from mer_core.population.engine import Member, MemberReport, PopContext, predict
from mer_core.population.grouping import group_by_shape, template_key
from mer_core.population.optim import MemberOptimizer
from mer_core.population.probe import active_parameters, build_member, probe_key
from mer_core.population.stack import Population
from mer_core.population.stages import finetune_stage, pretrain_stage
from mer_core.train.device_data import DeviceData, resolve_device
from mer_core.train.fit import voting_setup
from mer_core.train.fold import pseudo_labelled_set
from mer_core.train.result import FoldResult, TrialResult
from mer_core.train.run import aggregate

__all__ = ["train_population"]


def train_population(
    cfgs: Sequence[ExperimentConfig],
    data: FeatureSet,
    *,
    report: MemberReport | None = None,
    keep_model: bool = False,
) -> list[TrialResult]:
    """Train every config in `cfgs` as one member of a fused population; one result per config.

    A member's result equals `mer_core.train.run(cfg, data)` with its config up to float
    rounding (batched kernels), given dropout 0; with dropout > 0 only the dropout draws differ
    (see `mer_core.population.dropout`).

    Args:
        cfgs: members' configs; they must form one group of `group_by_shape`.
        data: the dataset (shared, never modified).
        report: called as `report(member_index, metrics)` once per fine-tuning epoch of each
            member, with the metrics `run` would report; True prunes that member only.
        keep_model: keep each member's last-fold best state dict (CPU) in its result.

    Returns:
        One `TrialResult` per config, in order. `seconds` is the whole population's wall time.

    Raises:
        ConfigError: the configs do not form one group (or a schedule field differs), or
            `runtime.compile` is set.
    """
    started = time.perf_counter()
    if not cfgs:
        return []
    _check_one_group(cfgs)
    base = cfgs[0]
    if base.runtime.compile:
        raise ConfigError("runtime.compile", "false (fused populations run uncompiled)", True)
    device = resolve_device(base.runtime)
    if base.runtime.threads is not None:
        torch.set_num_threads(base.runtime.threads)
    dev = DeviceData.from_featureset(data, device)
    splits = make_splits(data, folds=base.data.folds, val_fraction=base.data.val_fraction, seed=base.data.seed)
    members = [Member(index=i, cfg=c) for i, c in enumerate(cfgs)]
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        for k, split in enumerate(splits):
            alive = [m for m in members if m.alive]
            if not alive:
                break
            _train_fold(alive, data, dev, split, fold=k, report=report, keep_model=keep_model)
    seconds = time.perf_counter() - started
    head_names = (*data.modalities, "fusion")
    return [_result(m, head_names, data.class_names, seconds) for m in members]


def _check_one_group(cfgs: Sequence[ExperimentConfig]) -> None:
    groups = group_by_shape(cfgs)
    if len(groups) == 1:
        return
    keys = [dict(template_key(cfgs[g[0]])) for g in groups]
    fields = sorted({f for key in keys for f in key if len({repr(k.get(f)) for k in keys}) > 1})
    raise ConfigError(
        ", ".join(fields),
        "one value per fused population (split the configs with group_by_shape and train each group)",
        {f: [k.get(f) for k in keys] for f in fields},
        problem="members need different modules",
    )


def _template(cfgs: Sequence[ExperimentConfig], data: FeatureSet, device: torch.device):
    """The module every member runs through, with marker dropout rates where members differ."""
    values = {
        "model.dropout": [c.model.dropout for c in cfgs],
        "model.head_dropout": [c.model.head_dropout for c in cfgs],
    }
    markers = {f: r for f, r in marker_rates(values).items() if r is not None}
    cfg = with_overrides(cfgs[0], markers) if markers else cfgs[0]
    template = build_member(cfg, data, device, seed=cfgs[0].seed)
    for p in template.parameters():
        p.requires_grad_(True)  # only the probe differentiates the template; members may freeze temperatures
    return template, markers


def _train_fold(
    members: list[Member],
    data: FeatureSet,
    dev: DeviceData,
    split: Split,
    *,
    fold: int,
    report: MemberReport | None,
    keep_model: bool,
) -> None:
    """`mer_core.train.fold.train_fold` for every member; appends a FoldResult to each survivor."""
    ctx, active = _fold_context(members, data, dev, split, fold=fold, report=report)
    train = (split.train, data.labels[split.train])
    val = (split.val, data.labels[split.val])
    pool = data.unlabelled_idx  # (U,)
    pretrain_epochs = members[0].cfg.optim.pretrain_epochs
    if pretrain_epochs > 0:
        for m in members:
            ctx.opt.set_active(m.row, active["pretrain"][m.row])
        pretrain_stage(ctx, members, np.concatenate([split.train, pool]), epochs=pretrain_epochs)
    for m in members:
        ctx.opt.set_active(m.row, active["finetune"][m.row])
    survivors = [m for m in members if m.alive]
    outcomes = finetune_stage(ctx, survivors, {m.index: train for m in survivors}, val, stage="finetune")
    epochs = {k: o.epochs for k, o in outcomes.items()}
    reports: dict[int, list[dict[str, Any]]] = {m.index: [] for m in members}
    for rnd in range(1, max(m.cfg.self_training.rounds for m in members) + 1):
        round_members = [m for m in members if m.alive and m.cfg.self_training.rounds >= rnd]
        if len(pool) == 0 or not round_members:
            break
        sets = _self_training_sets(ctx, round_members, data, train, pool, rnd, reports)
        for k, o in finetune_stage(ctx, round_members, sets, val, stage=f"self_training_{rnd}").items():
            outcomes[k], epochs[k] = o, epochs[k] + o.epochs
    for m in (m for m in members if m.alive):
        o = outcomes[m.index]
        m.folds.append(FoldResult(fold, o.metrics, split.val, val[1], o.logits, reports[m.index], epochs[m.index]))
        if keep_model:
            m.model_state = ctx.pop.model_state(m.row)


def _fold_context(
    members: list[Member], data: FeatureSet, dev: DeviceData, split: Split, *, fold: int, report: MemberReport | None
) -> tuple[PopContext, dict[str, list[tuple[bool, ...]]]]:
    """Fresh members (init, generators, voting weights as `train_fold` makes them), stacked."""
    device, base = dev.mask.device, members[0].cfg
    template, markers = _template([m.cfg for m in members], data, device)
    nets = []
    for row, m in enumerate(members):
        m.row, m.seed = row, m.cfg.seed * 1009 + fold
        nets.append(build_member(m.cfg, data, device, m.seed))
        _fresh_generators(m, data, device, m.seed)
        m.batch_gen = torch.Generator().manual_seed(m.seed + 2)
        m.voting_weights = voting_setup(m.cfg.voting, template.model.head_names, cls_heads=m.cfg.loss.cls_heads)
    pop = Population(template, nets, device)
    active = _active_sets(template, members, data, dev, split)
    opt = MemberOptimizer(pop, [m.cfg.optim for m in members], active["finetune"])
    autocast = torch.bfloat16 if base.runtime.precision == "bf16" else None
    return PopContext(pop, opt, dev, data, markers, autocast, fold, report, base.optim.batch_size), active


def _active_sets(template, members: list[Member], data: FeatureSet, dev: DeviceData, split: Split):
    """stage -> per member (by row), which parameters its single run's optimiser updates."""
    rows = torch.as_tensor(split.train[:4], dtype=torch.long, device=dev.mask.device)
    cache: dict[tuple, tuple[bool, ...]] = {}
    out = {}
    for stage in ("pretrain", "finetune"):
        for m in members:
            key = probe_key(m.cfg, stage)
            if key not in cache:
                cache[key] = active_parameters(template, m.cfg, data, dev, rows, stage)
        out[stage] = [cache[probe_key(m.cfg, stage)] for m in members]
    return out


def _fresh_generators(m: Member, data: FeatureSet, device: torch.device, seed: int) -> None:
    m.schedules = nee.NoiseSchedules.from_config(m.cfg.nee, data.modalities, device=device)
    m.noise_gen = torch.Generator(device=device).manual_seed(seed + 1)


def _self_training_sets(ctx: PopContext, members, data, train, pool, rnd: int, reports) -> dict:
    """Each member's pseudo-labelled, oversampled set for round `rnd` (re-initialised when asked)."""
    sets = {}
    for m, logits in zip(members, predict(ctx, members, pool), strict=True):
        seed = m.seed + 10 * rnd
        round_train, rep = pseudo_labelled_set(m.cfg, data, logits, m.voting_weights, train, pool, seed=seed)
        reports[m.index].append({"round": rnd, **rep})
        sets[m.index] = round_train
        if m.cfg.self_training.reinit:
            device = ctx.dev.mask.device
            ctx.pop.load_row(m.row, build_member(m.cfg, data, device, seed))
            _fresh_generators(m, data, device, seed)
    return sets


def _result(m: Member, head_names, class_names, seconds: float) -> TrialResult:
    return TrialResult(
        status=m.status,  # type: ignore[arg-type]
        metrics=aggregate(m.folds),
        folds=m.folds,
        head_names=head_names,
        class_names=class_names,
        failure_reason=m.reason,
        epochs=m.iteration,
        seconds=seconds,
        model_state=m.model_state,
    )
