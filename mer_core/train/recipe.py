"""The MR-CCL training recipe, written once for every executor.

`train_members(cfgs, data, executor)` trains each config over its folds and returns one
`TrialResult` per config. Everything the recipe decides lives here: folds, each fold's data
(the missing-modality protocol's mask), the stages of `plan` in order, the epoch loops, batch
order, early stopping on validation weighted F1, reporting (which may prune a member), divergence,
pseudo-labelling and oversampling, re-initialisation, the missing-rate evaluation, the held-out
test scores and the results.

The held-out test split (`FeatureSet.test`) is not part of the rows the folds, the pool and early
stopping index, so none of them can touch it. Once a fold has finished (after early stopping,
self-training and with the member's voting weights: the fold's final prediction), each surviving
member's model predicts every test row once; its `test/*` scores join the fold's metrics. A
run's `test/<name>` is then the mean over folds, like `val/<name>`, not the score of a fold
ensemble: it estimates what one trained model scores (export-best ships one fold's model), and
keeps `val/` and `test/` on the same footing, so their gap is the optimism of selecting on
validation rows. Both executors run this same code, so fused members report the same test scores
as their single runs.

What an executor decides is only how members' weights are held and how one step runs:

- `SingleExecutor` (`mer_core.train.single`): each config owns a module and an optimiser;
  `mer_core.train.run` is this recipe with one member;
- `FusedExecutor` (`mer_core.train.fused`): K members of one shape group as rows of one stacked
  parameter tensor, one `vmap` per step.

A member that is pruned or diverges stops alone; the others go on.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from mer_core import nee, pseudo, voting
from mer_core.configs.schema import ExperimentConfig, MissingConfig, VotingConfig
from mer_core.data.featureset import FeatureSet, Split
from mer_core.data.splits import make_splits
from mer_core.missing.protocol import drop_pairs, drops_any, fold_mask, rate_vector, val_mask_at_rate
from mer_core.train.device_data import DeviceData, batches
from mer_core.train.plan import FoldSeeds, LossKind, noise_seed, round_stage
from mer_core.train.precision import storage_dtype
from mer_core.train.result import FoldResult, Status, TrialResult
from mer_core.train.scores import GRID_METRICS, aggregate, metric_name, score_logits

__all__ = [
    "Executor",
    "Fold",
    "HeldOut",
    "Member",
    "MemberReport",
    "Part",
    "Stacked",
    "fold_data",
    "pseudo_labelled_set",
    "train_members",
    "voting_setup",
]

MemberReport = Callable[[int, Mapping[str, Any]], "bool | None"]


@dataclass(eq=False)
class Member:
    """One config's runtime state: its outcome across folds, and its generators within a fold."""

    index: int  # position in the caller's config list (what `report` receives)
    cfg: ExperimentConfig
    status: Status = "ok"
    reason: str = ""
    iteration: int = 0  # reported epochs across stages and folds
    folds: list[FoldResult] = field(default_factory=list)
    model_state: dict[str, torch.Tensor] | None = None
    seeds: FoldSeeds = field(default_factory=lambda: FoldSeeds(0))  # set per fold
    batch_gen: torch.Generator | None = None  # batch order (CPU)
    noise_gen: torch.Generator | None = None  # NEE noise and negative-view draws (data's device)
    schedules: nee.NoiseSchedules | None = None
    voting_weights: dict[str, float] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.status == "ok"

    def fail(self, status: Status, reason: str) -> None:
        self.status, self.reason = status, reason


@dataclass(frozen=True, eq=False)
class Fold:
    """Fold `index` of every member: each member's rows (`split_of`) and the data.

    Members whose fold seed differs (`data.fold_seed`: the seeds of an ablation) have different folds
    of the same data; `dev` carries the missing-protocol mask, which is the same for all of them
    because a protocol with drops trains members of one fold seed together only (`_check_shared`).
    """

    index: int
    splits: Mapping[int, Split]  # member index -> its train/val rows in this fold
    data: FeatureSet
    dev: DeviceData

    def split_of(self, m: Member) -> Split:
        return self.splits[m.index]


@dataclass(frozen=True, eq=False)
class Stacked:
    """The batches of members that step in lockstep (same set size and batch size), stacked.

    Built once per epoch, so an executor that trains members together reads one step's batches
    of all of them as one (Ka, B) slice instead of stacking Ka tensors every step.
    """

    members: tuple[int, ...]  # member indices, in row order
    idx: torch.Tensor  # (Ka, B) dataset rows
    y: torch.Tensor | None  # (Ka, B) labels, or None (pre-training)


@dataclass(frozen=True, eq=False)
class Part:
    """One member's share of a step: its batch's dataset rows (B,) and labels (B,) or None, and the
    stack of members its batch is a row of (None: it steps alone)."""

    member: Member
    idx: torch.Tensor
    y: torch.Tensor | None
    stack: Stacked | None = None


class Executor(Protocol):
    """How members' weights are held and how one step runs (see the module docstring)."""

    device: torch.device

    def begin_fold(self, members: Sequence[Member], fold: Fold) -> None:
        """Fresh weights for every member (seeded with `member.seeds.init`) and the fold's imputers."""

    def begin_stage(self, members: Sequence[Member], kind: LossKind) -> None:
        """A fresh optimiser state for `members` (the recipe builds a new optimiser per stage)."""

    def step(self, parts: Sequence[Part], kind: LossKind) -> torch.Tensor:
        """One optimisation step of each part's member on its batch; the (n,) losses in `parts` order.

        The losses stay on the device (no host-device synchronisation inside a step); the recipe
        reads them once per epoch and fails members whose epoch loss is not finite.
        """

    def predict(
        self, members: Sequence[Member], rows: Sequence[np.ndarray], *, dev: DeviceData | None = None
    ) -> list[dict[str, np.ndarray]]:
        """Each member's head -> (len(rows[j]), C) logits on its rows in eval mode (on `dev`, default the
        fold's data). Members that share rows get the same array object (the pool, a shared split)."""

    def snapshot(self, member: Member) -> Any:
        """The member's model as it is now (the best epoch so far)."""

    def restore(self, member: Member, snapshot: Any) -> None:
        """Load a snapshot back (model only; temperatures keep training values, as `load_state_dict`)."""

    def reinit(self, member: Member, seed: int) -> None:
        """Fresh weights for `member` from `seed` (self-training with `reinit`)."""

    def refresh_imputers(self, members: Sequence[Member]) -> None:
        """Re-encode each member's imputer store with its current weights (`missing.impute`)."""

    def model_state(self, member: Member) -> dict[str, torch.Tensor]:
        """The member's model as a CPU state dict of a single `MRCCL`."""


def train_members(
    cfgs: Sequence[ExperimentConfig],
    data: FeatureSet,
    executor: Executor,
    *,
    report: MemberReport | None = None,
    keep_model: bool = False,
) -> list[TrialResult]:
    """Train every config in `cfgs` with `executor`; one result per config, in order.

    Args:
        cfgs: the configs; they share the data section except `data.fold_seed` (each member's
            folds) and the missing protocol (one fold mask; with drops, one fold seed), which
            the callers guarantee.
        data: the dataset (shared, never modified).
        executor: how steps run.
        report: called as `report(index, metrics)` once per fine-tuning epoch of each member;
            returning True prunes that member only.
        keep_model: keep each member's last-fold best state dict (CPU) in its result.

    Returns:
        One `TrialResult` per config. `seconds` is the wall time of the whole call.
    """
    started = time.perf_counter()
    if not cfgs:
        return []
    _check_shared(cfgs)
    base, device = cfgs[0], executor.device
    if base.runtime.threads is not None:
        torch.set_num_threads(base.runtime.threads)
    dtype = storage_dtype(base.runtime.precision)  # runtime.* is shared by every member
    dev = DeviceData.from_featureset(data, device, dtype=dtype)
    test = HeldOut.of(data, base.missing, device, dtype=dtype)
    splits = {
        s: make_splits(data, folds=base.data.folds, val_fraction=base.data.val_fraction, seed=s)
        for s in sorted({c.data.split_seed for c in cfgs})
    }
    members = [Member(index=i, cfg=c) for i, c in enumerate(cfgs)]
    # Model init and dropout use the global generator: seed it per fold, leave the caller's alone.
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        for k, split in enumerate(splits[base.data.split_seed]):
            alive = [m for m in members if m.alive]
            if not alive:
                break
            own = {m.index: splits[m.cfg.data.split_seed][k] for m in members}
            fold = Fold(k, own, data, fold_data(dev, data, split, base.missing))
            _train_fold(executor, alive, fold, report=report, keep_model=keep_model)
            if test is not None:
                _score_test(executor, [m for m in alive if m.alive], test, data.class_names)
    seconds = time.perf_counter() - started
    head_names = (*data.modalities, "fusion")
    return [_result(m, head_names, data.class_names, seconds) for m in members]


def _check_shared(cfgs: Sequence[ExperimentConfig]) -> None:
    # One dataset and one fold mask serve every member; `data.fold_seed` only picks a member's folds.
    # The mask drops pairs at the test-time rate on a fold's validation rows, so members whose
    # folds differ can share it only when the protocol drops nothing.
    protocol = ("train_rate", "train_rates", "test_rate", "test_rates", "seed")
    first = cfgs[0]
    for cfg in cfgs[1:]:
        same_data = dataclasses.replace(cfg.data, fold_seed=first.data.fold_seed) == first.data
        if not same_data or any(getattr(cfg.missing, f) != getattr(first.missing, f) for f in protocol):
            raise ValueError(
                "members trained together must share `data` (but data.fold_seed) and the missing protocol "
                "(missing.*_rate(s), seed)"
            )
        if cfg.data.split_seed != first.data.split_seed and drops_any(first.missing):
            raise ValueError("members whose fold seed differs cannot share a missing protocol that drops pairs")


def fold_data(dev: DeviceData, data: FeatureSet, split: Split, cfg: MissingConfig) -> DeviceData:
    """`dev` with the fold's protocol mask (train-time drops on training and pool rows, test-time on
    validation rows); `dev` itself when no rate is set, so the features stay shared."""
    mask = fold_mask(data.mask, split.val, cfg, data.modalities)  # (N, M)
    if mask is data.mask:
        return dev
    return dataclasses.replace(dev, mask=torch.as_tensor(mask, device=dev.mask.device))


def _fresh_randomness(m: Member, data: FeatureSet, device: torch.device, init_seed: int) -> None:
    dtype = storage_dtype(m.cfg.runtime.precision)
    m.schedules = nee.NoiseSchedules.from_config(m.cfg.nee, data.modalities, device=device, dtype=dtype)
    m.noise_gen = torch.Generator(device=device).manual_seed(noise_seed(init_seed))


def _train_fold(
    ex: Executor, members: list[Member], fold: Fold, *, report: MemberReport | None, keep_model: bool
) -> None:
    """One fold of every member: pre-train, fine-tune, self-training rounds; appends a FoldResult to survivors."""
    data, device = fold.data, ex.device
    for m in members:
        m.seeds = FoldSeeds.of(m.cfg.seed, fold.index)
        _fresh_randomness(m, data, device, m.seeds.init)
        m.batch_gen = torch.Generator().manual_seed(m.seeds.batches)
        m.voting_weights = voting_setup(m.cfg.voting, (*data.modalities, "fusion"), cls_heads=m.cfg.loss.cls_heads)
    ex.begin_fold(members, fold)
    splits = {m.index: fold.split_of(m) for m in members}
    train = {k: (s.train, data.labels[s.train]) for k, s in splits.items()}
    val = {k: (s.val, data.labels[s.val]) for k, s in splits.items()}
    pool = data.unlabelled_idx  # (U,)
    pretraining = [m for m in members if m.cfg.optim.pretrain_epochs > 0]
    if pretraining:
        rows = {m.index: np.concatenate([splits[m.index].train, pool]) for m in pretraining}
        _pretrain(ex, pretraining, rows, fold)
    tuning = [m for m in members if m.alive]
    outcomes = _finetune(ex, tuning, {m.index: train[m.index] for m in tuning}, val, fold, "finetune", report)
    epochs = {k: o.epochs for k, o in outcomes.items()}
    rounds: dict[int, list[dict[str, Any]]] = {m.index: [] for m in members}
    for rnd in range(1, max(m.cfg.self_training.rounds for m in members) + 1):
        round_members = [m for m in members if m.alive and m.cfg.self_training.rounds >= rnd]
        if len(pool) == 0 or not round_members:
            break
        sets = {}
        for m, logits in zip(round_members, ex.predict(round_members, [pool] * len(round_members)), strict=True):
            seed = m.seeds.round(rnd)
            sets[m.index], pseudo_report = pseudo_labelled_set(
                m.cfg, data, logits, m.voting_weights, train[m.index], pool, seed=seed
            )
            rounds[m.index].append({"round": rnd, **pseudo_report})
            if m.cfg.self_training.reinit:
                ex.reinit(m, seed)
                _fresh_randomness(m, data, device, seed)
        for k, o in _finetune(ex, round_members, sets, val, fold, round_stage(rnd), report).items():
            outcomes[k], epochs[k] = o, epochs[k] + o.epochs
    for m in (m for m in members if m.alive):
        o, (val_idx, val_y) = outcomes[m.index], val[m.index]
        scores = {**o.metrics, **_score_missing_rates(ex, m, fold)}
        m.folds.append(FoldResult(fold.index, scores, val_idx, val_y, o.logits, rounds[m.index], epochs[m.index]))
        if keep_model:
            m.model_state = ex.model_state(m)


@dataclass
class FitOutcome:
    """A stage's best epoch: its validation metrics and head logits."""

    metrics: dict[str, float]
    logits: dict[str, np.ndarray]
    epochs: int


def _device_sets(device: torch.device, sets: Mapping[int, tuple[np.ndarray, np.ndarray | None]]):
    return {
        k: (
            torch.as_tensor(idx, dtype=torch.long, device=device),  # (n,)
            None if y is None else torch.as_tensor(y, dtype=torch.long, device=device),  # (n,)
        )
        for k, (idx, y) in sets.items()
    }


def _epoch(
    ex: Executor, members: list[Member], sets: Mapping[int, tuple], kind: LossKind, where: str
) -> dict[int, float]:
    """One epoch of every member in `members` over its own (rows, labels) set; returns train/loss.

    Each member draws its own batch order; step j runs batch j of every member that has one.
    Everything per member (its rows and labels in batch order, split into batches, and the stack
    of members that step in lockstep) is built here once per epoch, so a step costs the host the
    same whatever the number of members. Step losses stay on the device and are read back once,
    at the end of the epoch: a step never waits for the device. Members whose epoch loss is not
    finite are marked diverged and removed from `members` (a member that diverged mid-epoch
    stepped on to the epoch's end; its weights are never used again).
    """
    plans: dict[int, list[Part]] = {}
    lockstep: dict[tuple[int, int], list[Member]] = {}
    ordered: dict[int, tuple[torch.Tensor, torch.Tensor | None, list[int]]] = {}
    for m in members:
        size = m.cfg.optim.pretrain_batch_size if kind == "pretrain" else m.cfg.optim.batch_size
        idx, y = sets[m.index]
        pos = list(batches(len(idx), size, generator=m.batch_gen, device=ex.device))
        order = torch.cat(pos) if pos else idx[:0]  # (n,) positions in batch order
        sizes = [len(p) for p in pos]
        ordered[m.index] = (idx[order], None if y is None else y[order], sizes)  # (n,), (n,)
        lockstep.setdefault((len(idx), size), []).append(m)
    for group in lockstep.values():
        if not ordered[group[0].index][2]:  # empty sets: no batch
            plans.update({m.index: [] for m in group})
            continue
        rows = torch.stack([ordered[m.index][0] for m in group])  # (Ka, n)
        labels = None if ordered[group[0].index][1] is None else torch.stack([ordered[m.index][1] for m in group])
        sizes = ordered[group[0].index][2]
        rows_b = rows.split(sizes, dim=1)  # S x (Ka, B)
        labels_b = labels.split(sizes, dim=1) if labels is not None else [None] * len(sizes)
        stacks = [Stacked(tuple(m.index for m in group), r, lb) for r, lb in zip(rows_b, labels_b, strict=True)]
        for m in group:
            idx_b = ordered[m.index][0].split(sizes)  # S x (B,)
            y = ordered[m.index][1]
            y_b = y.split(sizes) if y is not None else [None] * len(sizes)
            plans[m.index] = [Part(m, i, yy, st) for i, yy, st in zip(idx_b, y_b, stacks, strict=True)]
    step_losses: list[torch.Tensor] = []  # (n_s,) per step, on the device
    owners: list[int] = []  # position in `members` of each step loss
    weights: list[int] = []  # its batch size
    slot = {m.index: i for i, m in enumerate(members)}
    for j in range(max((len(p) for p in plans.values()), default=0)):
        parts = [plans[m.index][j] for m in members if j < len(plans[m.index])]
        if not parts:
            break
        step_losses.append(ex.step(parts, kind))
        owners += [slot[p.member.index] for p in parts]
        weights += [len(p.idx) for p in parts]
    means = _epoch_means(members, step_losses, owners, weights)
    for m in list(members):
        if not math.isfinite(means[m.index]):
            m.fail("diverged", f"non-finite loss ({means[m.index]}) during {where}")
            members.remove(m)
    return means


def _epoch_means(
    members: Sequence[Member], step_losses: Sequence[torch.Tensor], owners: Sequence[int], weights: Sequence[int]
) -> dict[int, float]:
    """Each member's sample-weighted mean step loss, read back in one transfer for all members."""
    out = {m.index: 0.0 for m in members}
    if not step_losses:
        return out
    values = torch.cat(list(step_losses)).double()  # (T,) in float64, as the sum of Python floats was
    device = values.device
    n = torch.tensor(weights, dtype=torch.float64).to(device, non_blocking=True)  # (T,)
    owner = torch.tensor(owners, dtype=torch.long).to(device, non_blocking=True)  # (T,)
    sums = torch.zeros(len(members), dtype=torch.float64, device=device).index_add_(0, owner, values * n)  # (M,)
    totals = [0] * len(members)
    for o, w in zip(owners, weights, strict=True):
        totals[o] += w
    stepped = [i for i, t in enumerate(totals) if t > 0]
    found = (sums[stepped] / torch.tensor([totals[i] for i in stepped], dtype=torch.float64, device=device)).tolist()
    out.update({members[i].index: v for i, v in zip(stepped, found, strict=True)})  # the epoch's one sync
    return out


def _pretrain(ex: Executor, members: list[Member], rows: Mapping[int, np.ndarray], fold: Fold) -> None:
    """Stage 1 (contrastive, labels unused) over each member's `rows` (its labelled train + the pool)."""
    ex.begin_stage(members, "pretrain")
    sets = _device_sets(ex.device, {m.index: (rows[m.index], None) for m in members})
    running = list(members)
    for epoch in range(1, max(m.cfg.optim.pretrain_epochs for m in members) + 1):
        running = [m for m in running if m.alive and epoch <= m.cfg.optim.pretrain_epochs]
        if not running:
            break
        _epoch(ex, running, sets, "pretrain", f"pre-training (fold {fold.index}, epoch {epoch})")


def _finetune(
    ex: Executor,
    members: list[Member],
    train: Mapping[int, tuple[np.ndarray, np.ndarray]],
    val: Mapping[int, tuple[np.ndarray, np.ndarray]],
    fold: Fold,
    stage: str,
    report: MemberReport | None,
) -> dict[int, FitOutcome]:
    """Supervised epochs with early stopping on val weighted F1; each member ends on its best epoch.

    Returns the best outcome of every member that neither diverged nor was pruned.
    """
    running = list(members)
    ex.begin_stage(running, "finetune")
    sets = _device_sets(ex.device, train)
    best: dict[int, FitOutcome] = {}
    snaps: dict[int, Any] = {}
    since = {m.index: 0 for m in running}
    ex.refresh_imputers(running)
    for epoch in range(1, max(m.cfg.optim.max_epochs for m in members) + 1):
        train_loss = _epoch(ex, running, sets, "finetune", f"{stage} (fold {fold.index}, epoch {epoch})")
        if not running:
            break
        ex.refresh_imputers(running)
        for m, (found, logits) in zip(list(running), _evaluate(ex, running, val, fold), strict=True):
            found["train/loss"] = train_loss[m.index]
            if m.index not in best or found["val/weighted_f1"] > best[m.index].metrics["val/weighted_f1"]:
                best[m.index] = FitOutcome(found, logits, epoch)
                snaps[m.index], since[m.index] = ex.snapshot(m), 0
            else:
                since[m.index] += 1
            pruned = _report(m, {**found, "stage": stage, "fold": fold.index, "epoch": epoch}, report)
            done = since[m.index] >= m.cfg.optim.patience or epoch >= m.cfg.optim.max_epochs
            if pruned or done:
                running.remove(m)
    survivors = [m for m in members if m.alive]
    for m in survivors:
        ex.restore(m, snaps[m.index])
    ex.refresh_imputers(survivors)
    return {m.index: best[m.index] for m in survivors}


def _report(m: Member, found: dict[str, Any], report: MemberReport | None) -> bool:
    """Count the epoch and hand it to the caller; True when the caller pruned the member."""
    m.iteration += 1
    if report is None:
        return False
    if report(m.index, {**found, "iteration": m.iteration}):
        m.fail("pruned", f"stopped by the caller after {m.iteration} reported epochs")
        return True
    return False


def _evaluate(ex: Executor, members: Sequence[Member], val: Mapping[int, tuple[np.ndarray, np.ndarray]], fold: Fold):
    """Each member's (validation metrics, head logits) on its own validation rows."""
    names = fold.data.class_names
    predicted = ex.predict(members, [val[m.index][0] for m in members])
    return [
        (score_logits(logits, val[m.index][1], m.voting_weights, space=m.cfg.voting.space, class_names=names), logits)
        for m, logits in zip(members, predicted, strict=True)
    ]


def _score_missing_rates(ex: Executor, m: Member, fold: Fold) -> dict[str, float]:
    """`metric_name(r, g)` for each `missing.eval_rates` r and g in GRID_METRICS: the member's final
    model re-scored on the validation rows with one more modality rate dropped (fixed draws)."""
    cfg = m.cfg.missing
    out: dict[str, float] = {}
    if not cfg.eval_rates:
        return out
    data, split = fold.data, fold.split_of(m)
    base = fold.dev.mask.cpu().numpy()  # (N, M) the fold's mask
    y = data.labels[split.val]  # (n_val,)
    for rate in cfg.eval_rates:
        mask = val_mask_at_rate(base, data.mask, split.val, rate, cfg.seed)  # (N, M)
        dev = dataclasses.replace(fold.dev, mask=torch.as_tensor(mask, device=fold.dev.mask.device))
        logits = ex.predict([m], [split.val], dev=dev)[0]
        found = score_logits(logits, y, m.voting_weights, space=m.cfg.voting.space, class_names=data.class_names)
        out.update({metric_name(rate, g): found[f"val/{g}"] for g in GRID_METRICS})
    return out


_TEST_DRAWS = 0x7E57  # the test rows' missing-protocol draws: their own stream of `missing.seed`


@dataclass(frozen=True, eq=False)
class HeldOut:
    """The held-out test split on the device, with the missing protocol's test-time drops.

    Test rows are dropped like validation rows (`missing.test_rate(s)`), from uniform draws of
    their own, so `test/*` measures the condition `val/*` measures, on samples nothing selected on.
    """

    labels: np.ndarray  # (T,) int64, all labelled
    data_mask: np.ndarray  # (T, M) presence in the data
    draws: np.ndarray  # (T, M) uniform draws of the protocol
    dev: DeviceData  # features and the test-time mask

    @classmethod
    def of(
        cls, data: FeatureSet, cfg: MissingConfig, device: torch.device, *, dtype: torch.dtype = torch.float32
    ) -> HeldOut | None:
        """The test split of `data` (features as `dtype`), or None when it has none."""
        if data.test is None or data.test.n_samples == 0:
            return None
        test = data.test
        draws = np.random.default_rng([cfg.seed, _TEST_DRAWS]).random(test.mask.shape)  # (T, M)
        rates = rate_vector(cfg.test_rate, cfg.test_rates, test.modalities)  # (M,)
        mask = drop_pairs(test.mask, rates, draws) if rates.any() else test.mask  # (T, M)
        dev = DeviceData.from_featureset(dataclasses.replace(test, mask=mask), device, dtype=dtype)
        return cls(labels=test.labels, data_mask=test.mask, draws=draws, dev=dev)

    @property
    def rows(self) -> np.ndarray:
        return np.arange(self.labels.shape[0])  # (T,)

    def at_rate(self, rate: float) -> DeviceData:
        """The test rows with every modality dropped at `rate` (the draws `val_mask_at_rate` nests)."""
        mask = drop_pairs(self.data_mask, np.full(self.data_mask.shape[1], rate), self.draws)  # (T, M)
        return dataclasses.replace(self.dev, mask=torch.as_tensor(mask, device=self.dev.mask.device))


def _score_test(ex: Executor, members: Sequence[Member], test: HeldOut, class_names: tuple[str, ...]) -> None:
    """Each member's final model of the fold just trained scores the test split once: `test/*` (and,
    for `missing.eval_rates`, `test/<g>_missing_<r>`) join its last FoldResult's metrics."""
    if not members:
        return
    rows = [test.rows] * len(members)  # every member scores the same test rows: one shared array
    for m, logits in zip(members, ex.predict(members, rows, dev=test.dev), strict=True):
        space = m.cfg.voting.space
        found = score_logits(logits, test.labels, m.voting_weights, space=space, class_names=class_names, split="test")
        for rate in m.cfg.missing.eval_rates:
            at_rate = ex.predict([m], [test.rows], dev=test.at_rate(rate))[0]
            scores = score_logits(at_rate, test.labels, m.voting_weights, space=space, class_names=class_names)
            found.update({metric_name(rate, g, split="test"): scores[f"val/{g}"] for g in GRID_METRICS})
        m.folds[-1].metrics.update(found)
        m.folds[-1].test_logits = logits


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
    """The round's training set: the labelled rows plus the pool's confident votes, oversampled per class."""
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


def voting_setup(cfg: VotingConfig, head_names: tuple[str, ...], *, cls_heads: str = "all") -> dict[str, float]:
    """Resolved per-head voting weights (heads the map does not name get the default).

    With `loss.cls_heads: fusion` only the fusion head is trained; the untrained unimodal heads
    would vote noise, so the fusion head alone decides.
    """
    if cls_heads == "fusion":
        return {h: 1.0 if h == "fusion" else 0.0 for h in head_names}
    weights, _unmatched = voting.resolve_weights(cfg, head_names)
    return weights


def _result(m: Member, head_names: tuple[str, ...], class_names: tuple[str, ...], seconds: float) -> TrialResult:
    return TrialResult(
        status=m.status,
        metrics=aggregate(m.folds),
        folds=m.folds,
        head_names=head_names,
        class_names=class_names,
        failure_reason=m.reason,
        epochs=m.iteration,
        seconds=seconds,
        model_state=m.model_state,
    )
