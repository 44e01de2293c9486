"""`AblationSearcher`: the Ray Tune searcher that runs an ablation plan (see `sweeps.ablation.plan`)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from ray.tune.search import Searcher

from sweeps.ablation.batches import ray_trials, retune_config, seed_batch, seed_outcomes
from sweeps.ablation.plan import AblationPlan
from sweeps.resume.searcher import PickledStateMixin
from sweeps.space import SearchSpace, make_sampler
from sweeps.space.tell import tell
from sweeps.tracking.names import EVAL_PHASE, RETUNE_PHASE

log = logging.getLogger("mersweep.sweep")


class AblationSearcher(PickledStateMixin, Searcher):
    """Hands Ray Tune the ablation's trials: re-tuning trials first, then the paired eval trials.

    Saved and restored with the Tuner (`--resume`): the Optuna studies and the queue travel in
    the searcher checkpoint, so a resumed ablation neither repeats nor loses a trial.

    `population` (fused mode): a variant's eval seeds, and its re-tuning trials, go out as
    populations of up to that many members, one Ray trial each (`sweeps.ablation.batches`);
    None: one Ray trial per seed and per re-tuning trial.
    """

    def __init__(
        self,
        plan: AblationPlan,
        *,
        space: SearchSpace | None,
        algorithm: str,
        seed: int,
        population: int | None = None,
    ) -> None:
        super().__init__(metric=plan.metric, mode=plan.mode)
        if plan.retune_trials and space is None:
            raise ValueError("re-tuning needs a search space")
        self.plan = plan
        self.space = space
        self.population = population
        self._studies: dict[str, optuna.Study] = {}
        self._asked: dict[str, tuple[str, list, dict]] = {}  # retune trial_id -> (variant, optuna trials, config)
        self._retune_issued = {v: 0 for v in plan.variants}
        self._retune_done = {v: 0 for v in plan.variants}
        self._eval_queue: list[dict[str, Any]] = []
        self._eval_released: set[str] = set()
        if plan.retune_trials:
            for i, variant in enumerate(plan.variants):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    sampler = make_sampler(algorithm, seed + i, space=space, n_startup_trials=plan.retune_trials // 2)
                self._studies[variant] = optuna.create_study(
                    direction="maximize" if plan.mode == "max" else "minimize", sampler=sampler
                )
        else:
            for variant in plan.variants:
                self._release_eval(variant, {})

    @property
    def num_ray_trials(self) -> int:
        """Ray trials the plan takes (the Tuner's num_samples): re-tuning trials, then the eval batches."""
        n = len(self.plan.variants)
        retune = ray_trials([self.plan.retune_trials] * n, population=self.population)
        return retune + ray_trials([len(self.plan.seeds)] * n, population=self.population)

    # -- Ray Tune's Searcher interface ---------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._eval_queue:
            return self._eval_queue.pop(0)
        for variant in self.plan.variants:
            if self._retune_issued[variant] < self.plan.retune_trials:
                return self._ask_retune(trial_id, variant)
        if len(self._eval_released) == len(self.plan.variants):
            return Searcher.FINISHED
        return None  # waiting for re-tuning trials to end before the eval trials can start

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        asked = self._asked.pop(trial_id, None)
        if asked is None:
            return
        variant, trials, config = asked
        outcomes = seed_outcomes(config, result, metric=self.plan.metric, errored=error)
        for trial, seen in zip(trials, outcomes, strict=True):
            tell(self._studies[variant], trial, seen.outcome, seen.value)
        self._retune_done[variant] += len(trials)
        if self._retune_done[variant] == self.plan.retune_trials:
            self._release_eval(variant, self._best_params(variant))

    # -- internals -------------------------------------------------------------------------------
    def _ask_retune(self, trial_id: str, variant: str) -> dict[str, Any]:
        assert self.space is not None
        left = self.plan.retune_trials - self._retune_issued[variant]
        trials, members = [], []
        for _ in range(1 if self.population is None else min(self.population, left)):
            trial = self._studies[variant].ask()  # one at a time: TPE's constant liar sees the ones asked before
            fixed = self.space.define_by_run(trial) or {}
            trials.append(trial)
            members.append({**trial.params, **fixed})
        config = retune_config(variant, self.plan.seeds[0], RETUNE_PHASE, members, population=self.population)
        self._asked[trial_id] = (variant, trials, config)
        self._retune_issued[variant] += len(trials)
        return config

    def _best_params(self, variant: str) -> dict[str, Any]:
        assert self.space is not None
        study = self._studies[variant]
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            log.warning("ablation: every re-tuning trial of variant %s failed; its eval trials use the base", variant)
            return {}
        best = study.best_trial
        log.info("ablation: variant %s re-tuned: %s = %.4f with %s", variant, self.plan.metric, best.value, best.params)
        return self.space.sample_config_overrides(best.params)

    def _release_eval(self, variant: str, params: Mapping[str, Any]) -> None:
        self._eval_released.add(variant)
        self._eval_queue += seed_batch(variant, self.plan.seeds, EVAL_PHASE, params, population=self.population)
