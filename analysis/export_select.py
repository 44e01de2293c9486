"""Which configuration `export-best` ships: group trials that differ only in their seed, rank by mean.

A single seed's score carries the seed's luck, and the best of many single-seed trials is the one
with the most luck (the winner's curse). So trials are grouped into configurations, each
configuration is scored by its mean over seeds, and a search (one seed per configuration) first
re-runs its top configurations over extra seeds (the tuning playbook's advice). Pure functions of
`TrialRun`s, so they are testable without MLflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from analysis.runs import SweepRuns, TrialRun
from sweeps.tracking.names import CONFIG_SEED_PARAM, EVAL_PHASE, EXPORT_SOURCE_TAG, RESEED_PHASE, SEARCH_PHASE

SEED_PARAMS = frozenset({CONFIG_SEED_PARAM})  # the flattened config keys a re-seed changes


@dataclass(frozen=True)
class SeedGroup:
    """Runs of one configuration (a search) or one variant (an ablation) over seeds."""

    label: str
    runs: tuple[TrialRun, ...]  # representative first, then by seed
    metric: str

    @property
    def values(self) -> np.ndarray:
        return np.array([r.metrics[self.metric] for r in self.runs], dtype=np.float64)  # (n_runs,)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted({r.seed for r in self.runs if r.seed is not None}))

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def representative(self) -> TrialRun:
        """The run whose config is exported: the original (not re-seeded) run with the smallest seed."""
        return self.runs[0]


def _order(run: TrialRun) -> tuple[int, int, str]:
    reseeded = int(run.phase == RESEED_PHASE)
    return (reseeded, run.seed if run.seed is not None else 0, run.run_id)


def config_key(run: TrialRun) -> tuple[tuple[str, str], ...]:
    """Every flattened config param except the seed: runs with equal keys are one configuration."""
    return tuple(sorted((k, v) for k, v in run.params.items() if k not in SEED_PARAMS))


def eligible(sweep: SweepRuns) -> list[TrialRun]:
    """Finished runs that measure a configuration: an ablation's `eval` runs; a search's search runs
    and earlier re-seeds (so a second `export-best` reuses them instead of training again)."""
    if sweep.kind == "ablation":
        return [t for t in sweep.finished() if t.phase in (EVAL_PHASE, RESEED_PHASE)]
    return [t for t in sweep.finished() if t.phase in (SEARCH_PHASE, RESEED_PHASE)]


def group_runs(runs: Iterable[TrialRun], *, metric: str, by_variant: bool = False) -> list[SeedGroup]:
    """Runs grouped by variant tag (`by_variant`) or by configuration minus seed.

    A re-seeded run joins the group of the run it re-ran (its `EXPORT_SOURCE_TAG`), whatever its params say.
    """
    runs = [r for r in runs if metric in r.metrics]
    by_id = {r.run_id: r for r in runs}

    def key(run: TrialRun):
        source = by_id.get(run.tags.get(EXPORT_SOURCE_TAG, ""), run)
        return (source.variant or source.name) if by_variant else config_key(source)

    groups: dict[object, list[TrialRun]] = {}
    for run in runs:
        groups.setdefault(key(run), []).append(run)
    out = []
    for members in groups.values():
        members.sort(key=_order)
        first = members[0]
        label = (first.variant or first.name) if by_variant else first.name
        out.append(SeedGroup(label=label, runs=tuple(members), metric=metric))
    return out


def seed_overrides(kind: str, seed: int) -> dict[str, int]:
    """What a re-seed changes: an ablation's seed fixes the folds too (`data.fold_seed`), a search's only
    `seed`; neither touches `data.seed`, which drew the dataset and its test split for the whole sweep."""
    return {"seed": seed, "data.fold_seed": seed} if kind == "ablation" else {"seed": seed}


def rank(groups: Sequence[SeedGroup], *, mode: str) -> list[SeedGroup]:
    """Best mean first (`mode` max or min); ties by more seeds, then label, so the order is stable."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(groups, key=lambda g: (sign * g.mean, -len(g.seeds), g.label))


def needs_reseed(groups: Sequence[SeedGroup]) -> bool:
    """True when no configuration has been measured over more than one seed (a plain search)."""
    return bool(groups) and all(len(g.seeds) <= 1 for g in groups)


def choose_best(groups: Sequence[SeedGroup], *, mode: str) -> SeedGroup:
    """The best configuration by mean over seeds.

    Only groups measured over 2+ seeds compete when any exist: a single-seed score next to means
    would win by luck as often as by merit.

    Raises:
        ValueError: no groups.
    """
    if not groups:
        raise ValueError("choose_best needs at least one group")
    multi = [g for g in groups if len(g.seeds) >= 2]
    return rank(multi or list(groups), mode=mode)[0]


def extra_seeds(group: SeedGroup, requested: Sequence[int] | None, *, count: int = 3) -> list[int]:
    """Seeds to re-run a group with: `requested` minus those it has, else the `count` smallest new ones."""
    have = set(group.seeds)
    if requested is not None:
        return [s for s in dict.fromkeys(requested) if s not in have]
    seeds, candidate = [], 0
    while len(seeds) < count:
        if candidate not in have:
            seeds.append(candidate)
        candidate += 1
    return seeds
