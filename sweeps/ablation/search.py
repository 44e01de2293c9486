"""`AblationSearcher`: the Ray Tune searcher that runs an ablation plan (see `sweeps.ablation.plan`)."""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from ray.tune.search import Searcher

from sweeps.ablation.plan import PHASE_KEY, SEED_KEY, VARIANT_KEY, AblationPlan
from sweeps.resume.study import HISTORY_KEY, restore_study, snapshot, trial_by_number
from sweeps.space import SearchSpace, make_sampler
from sweeps.space.study import StudyRef, retune_study_name, tag_ray_trial
from sweeps.space.tell import tell
from sweeps.tracking.names import EVAL_PHASE, RETUNE_PHASE
from sweeps.trainable.report import trial_outcome

log = logging.getLogger("mersweep.sweep")


class AblationSearcher(Searcher):
    """Hands Ray Tune the ablation's trials: re-tuning trials first, then the paired eval trials.

    Each variant's re-tuning is its own Optuna study, `<sweep>.retune.<variant>` in the sweep's
    study storage (`study`; None: in memory). Saved and restored with the Tuner (`--resume`): the
    studies' histories and the queue travel in the searcher checkpoint, and the stored studies are
    put back to them (`sweeps.resume.study`), so a resumed ablation neither repeats nor loses a trial.
    """

    def __init__(
        self,
        plan: AblationPlan,
        *,
        space: SearchSpace | None,
        algorithm: str,
        seed: int,
        study: StudyRef | None = None,
        restart: bool = False,
    ) -> None:
        super().__init__(metric=plan.metric, mode=plan.mode)
        if plan.retune_trials and space is None:
            raise ValueError("re-tuning needs a search space")
        self.plan = plan
        self.space = space
        self._studies: dict[str, optuna.Study] = {}
        self._asked: dict[str, tuple[str, Any]] = {}  # trial_id -> (variant, optuna trial) of retune trials
        self._retune_issued = {v: 0 for v in plan.variants}
        self._retune_done = {v: 0 for v in plan.variants}
        self._eval_queue: list[dict[str, Any]] = []
        self._eval_released: set[str] = set()
        if plan.retune_trials:
            for i, variant in enumerate(plan.variants):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    sampler = make_sampler(algorithm, seed + i, space=space, n_startup_trials=plan.retune_trials // 2)
                if study is None:
                    direction = "maximize" if plan.mode == "max" else "minimize"
                    self._studies[variant] = optuna.create_study(direction=direction, sampler=sampler)
                else:
                    ref = StudyRef(study.storage, retune_study_name(study.name, variant))
                    self._studies[variant] = ref.create(sampler=sampler, mode=plan.mode, replace=restart)
        else:
            for variant in plan.variants:
                self._release_eval(variant, {})

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
        variant, trial = asked
        value = None if error or not result else result.get(self.plan.metric)
        tell(self._studies[variant], trial, trial_outcome(result, errored=error), value)
        self._retune_done[variant] += 1
        if self._retune_done[variant] == self.plan.retune_trials:
            self._release_eval(variant, self._best_params(variant))

    # -- checkpoint (--resume) ------------------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        histories = {v: snapshot(study) for v, study in self._studies.items()}
        with open(checkpoint_path, "wb") as fh:
            pickle.dump({**self.__dict__, HISTORY_KEY: histories}, fh)

    def restore(self, checkpoint_path: str) -> None:
        """Our state as Ray saved it; each stored re-tuning study put back to match.

        Re-tuning trials still in `_asked` had not ended: Ray reruns them from scratch.
        """
        with open(checkpoint_path, "rb") as fh:
            state = pickle.load(fh)  # Ray's own checkpoint of this sweep, written by this driver
        histories = state.pop(HISTORY_KEY, None)
        self.__dict__.update(state)
        for variant, history in (histories or {}).items():
            rerun = {t.number for v, t in self._asked.values() if v == variant}
            self._studies[variant] = restore_study(self._studies[variant], history, rerun=rerun)
        self._asked = {rid: (v, trial_by_number(self._studies[v], t.number)) for rid, (v, t) in self._asked.items()}

    # -- internals -------------------------------------------------------------------------------
    def _ask_retune(self, trial_id: str, variant: str) -> dict[str, Any]:
        assert self.space is not None
        trial = self._studies[variant].ask()
        tag_ray_trial(trial, trial_id)
        fixed = self.space.define_by_run(trial) or {}
        self._asked[trial_id] = (variant, trial)
        self._retune_issued[variant] += 1
        params = {**trial.params, **fixed}
        return {VARIANT_KEY: variant, SEED_KEY: self.plan.seeds[0], PHASE_KEY: RETUNE_PHASE, **params}

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
        for seed in self.plan.seeds:
            self._eval_queue.append({VARIANT_KEY: variant, SEED_KEY: seed, PHASE_KEY: EVAL_PHASE, **params})
