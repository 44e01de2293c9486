"""`AblationSearcher`: the Ray Tune searcher that runs an ablation plan (see `sweeps.ablation.plan`)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from ray.tune.search import Searcher

from sweeps.ablation.batches import plan_ray_trials, populations, seed_outcomes
from sweeps.ablation.plan import INIT_KEY, PHASE_KEY, SEED_KEY, SPLIT_KEY, VARIANT_KEY, AblationPlan
from sweeps.ablation.verdicts import UNDECIDED, Verdict, judge_all
from sweeps.fused.members import member_trial_id
from sweeps.resume.searcher import load_searcher, save_searcher
from sweeps.resume.study import restore_study, snapshot, trial_by_number
from sweeps.space import SearchSpace, make_sampler
from sweeps.space.study import StudyRef, retune_study_name, tag_ray_trial
from sweeps.space.tell import tell
from sweeps.tracking.names import EVAL_PHASE, RETUNE_PHASE, VARIANCE_PHASE

log = logging.getLogger("mersweep.sweep")


class AblationSearcher(Searcher):
    """Hands Ray Tune the ablation's trials: re-tuning trials first, then the paired eval trials.

    Eval trials go out one look at a time: every released variant gets the seeds of the current
    look; once all of them have ended (and every variant is released), the verdicts are taken and
    the reference plus every undecided variant get the next look's seeds. Returning None makes
    Tune wait for running trials; `Searcher.FINISHED` ends the sweep once nothing is left to add.

    Each variant's re-tuning is its own Optuna study, `<sweep>.retune.<variant>` in the sweep's
    study storage (`study`; None: in memory). Saved and restored with the Tuner (`--resume`): the
    studies' histories, the queue, the scores and the trials in flight travel in the searcher
    checkpoint, and the stored studies are put back to them (`sweeps.resume.study`), so a resumed
    ablation neither repeats nor loses a trial, and its looks continue where they were.

    `population` (fused mode): a look's seeds of one variant, a variant's re-tuning trials and the
    variance design go out as populations of up to that many members, one Ray trial each
    (`sweeps.ablation.batches`); None: one Ray trial per seed and per re-tuning trial.
    """

    def __init__(
        self,
        plan: AblationPlan,
        *,
        space: SearchSpace | None,
        algorithm: str,
        seed: int,
        population: int | None = None,
        study: StudyRef | None = None,
        restart: bool = False,
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
        self._extra_queue: list[dict[str, Any]] = []  # variance trials: run when a worker would idle
        self._best: dict[str, dict[str, Any]] = {}  # variant -> nuisance params of its eval trials (released)
        self._issued = {v: 0 for v in plan.variants}  # eval seeds handed out per variant
        self._pending: dict[str, dict[str, Any]] = {}  # trial_id -> Ray config of eval trials in flight
        self._scores: dict[str, dict[int, float]] = {v: {} for v in plan.variants}
        self._look = 0  # index into plan.looks of the seeds being run
        self._open = {v for v in plan.variants if v != plan.reference}  # variants still undecided
        self._verdicts: dict[str, Verdict] = {}
        self._done = False  # no more eval seeds will be added
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

    @property
    def num_ray_trials(self) -> int:
        """The most Ray trials the plan can take (the Tuner's num_samples)."""
        return plan_ray_trials(self.plan, population=self.population)

    # -- Ray Tune's Searcher interface ---------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._eval_queue:
            config = self._eval_queue.pop(0)
            self._pending[trial_id] = config
            return config
        for variant in self.plan.variants:
            if self._retune_issued[variant] < self.plan.retune_trials:
                return self._ask_retune(trial_id, variant)
        if self._extra_queue:
            return self._extra_queue.pop(0)
        if self._finished():
            return Searcher.FINISHED
        return None  # waiting for re-tuning trials or the current look's seeds to end

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        evaluated = self._pending.pop(trial_id, None)
        if evaluated is not None:
            for seen in seed_outcomes(evaluated, result, metric=self.plan.judged_metric, errored=error):
                if seen.outcome == "ok" and seen.value is not None:
                    self._scores[seen.variant][seen.seed] = seen.value
                else:  # a failed seed leaves a hole in this variant's pairing; the others keep theirs
                    log.warning(
                        "ablation: eval trial %s (variant %s, seed %s) did not finish",
                        trial_id,
                        seen.variant,
                        seen.seed,
                    )
            self._advance()
            return
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

    # -- what the progress line and the summary show ----------------------------------------------
    @property
    def verdicts(self) -> dict[str, Verdict]:
        """The verdicts of the last look taken (empty before the first)."""
        return dict(self._verdicts)

    @property
    def finished(self) -> bool:
        """Every trial the ablation needs has been handed out (the sweep was not cut short)."""
        return (
            self._finished()
            and not self._extra_queue
            and not any(self._retune_issued[v] < self.plan.retune_trials for v in self.plan.variants)
        )

    def status(self) -> str:
        """One phrase for the progress line: the look, and the verdicts so far."""
        plan = self.plan
        if len(self._best) < len(plan.variants):
            return f"ablation: re-tuning {len(plan.variants) - len(self._best)} variants"
        seeds = plan.looks[self._look]
        where = f"{seeds}/{plan.looks[-1]} seeds"
        if plan.adaptive:
            where += f" (look {self._look + 1}/{len(plan.looks)})"
        if not self._verdicts:
            return f"ablation: {where}, verdicts after the first look"
        counts: dict[str, int] = {}
        for v in self._verdicts.values():
            counts[v.decision] = counts.get(v.decision, 0) + 1
        text = ", ".join(f"{n} {word}" for word, n in sorted(counts.items()))
        return f"ablation: {where}: {text}" + ("" if not self._done else " (final)")

    # -- checkpoint (--resume) ------------------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        save_searcher(self, checkpoint_path, {v: snapshot(study) for v, study in self._studies.items()})

    def restore(self, checkpoint_path: str) -> None:
        """Our state as Ray saved it; each stored re-tuning study put back to match.

        Re-tuning trials still in `_asked` had not ended: Ray reruns them from scratch.
        """
        histories = load_searcher(self, checkpoint_path)
        for variant, history in (histories or {}).items():
            rerun = {t.number for v, trials, _ in self._asked.values() if v == variant for t in trials}
            self._studies[variant] = restore_study(self._studies[variant], history, rerun=rerun)
        self._asked = {
            rid: (v, [trial_by_number(self._studies[v], t.number) for t in trials], config)
            for rid, (v, trials, config) in self._asked.items()
        }

    # -- internals -------------------------------------------------------------------------------
    def _finished(self) -> bool:
        """Nothing left to hand out: the verdicts are final, or the last look's seeds are all out."""
        if self._done:
            return True
        released = len(self._best) == len(self.plan.variants)
        return released and self._look == len(self.plan.looks) - 1 and not self._eval_queue

    def _ask_retune(self, trial_id: str, variant: str) -> dict[str, Any]:
        assert self.space is not None
        left = self.plan.retune_trials - self._retune_issued[variant]
        seed = self.plan.seed_config(self.plan.seeds[0])
        trials, members = [], []
        for i in range(1 if self.population is None else min(self.population, left)):
            trial = self._studies[variant].ask()  # one at a time: TPE's constant liar sees the ones asked before
            tag_ray_trial(trial, trial_id if self.population is None else member_trial_id(trial_id, i))
            fixed = self.space.define_by_run(trial) or {}
            trials.append(trial)
            members.append({VARIANT_KEY: variant, **seed, PHASE_KEY: RETUNE_PHASE, **trial.params, **fixed})
        (config,) = populations(members, population=self.population)
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
        self._best[variant] = dict(params)
        if variant == self.plan.reference or variant in self._open:
            self._issue(variant, self.plan.looks[self._look])
        if variant == self.plan.reference and self.plan.variance_seeds:
            self._queue_variance(params)
        self._advance()

    def _issue(self, variant: str, upto: int) -> None:
        """Queue `variant`'s eval trials for seeds up to count `upto` (those not handed out yet)."""
        configs = [
            {VARIANT_KEY: variant, **self.plan.seed_config(seed), PHASE_KEY: EVAL_PHASE, **self._best[variant]}
            for seed in self.plan.seeds[self._issued[variant] : upto]
        ]
        self._eval_queue += populations(configs, population=self.population)
        self._issued[variant] = max(self._issued[variant], upto)

    def _queue_variance(self, params: Mapping[str, Any]) -> None:
        """The reference's crossed design: k init seeds x k split seeds (the first k paired seeds)."""
        ks = self.plan.seeds[: self.plan.variance_seeds]
        configs = [
            {VARIANT_KEY: self.plan.reference, SEED_KEY: init, INIT_KEY: init, SPLIT_KEY: split}
            | {PHASE_KEY: VARIANCE_PHASE, **params}
            for init in ks
            for split in ks
        ]
        self._extra_queue += populations(configs, population=self.population)

    def _advance(self) -> None:
        """Take the look once its seeds have all ended, then add the next look's seeds or finish."""
        if self._done or self._pending or self._eval_queue or len(self._best) < len(self.plan.variants):
            return
        plan = self.plan
        ref = self._scores[plan.reference]
        self._verdicts = judge_all(
            self._scores, reference=plan.reference, design=plan.design, min_effect=plan.min_effect
        )
        # A variant no seed could be paired for (every trial failed) stays open: more seeds may pair.
        self._open = {v for v in self._open if v not in self._verdicts or self._verdicts[v].decision == UNDECIDED}
        log.info("look %d/%d taken at %d reference seeds: %s", self._look + 1, len(plan.looks), len(ref), self.status())
        if not self._open or self._look + 1 >= len(plan.looks):
            self._done = True
            return
        self._look += 1
        for variant in (plan.reference, *(v for v in plan.variants if v in self._open)):
            self._issue(variant, plan.looks[self._look])
