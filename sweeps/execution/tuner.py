"""Construction of the Ray Tune Tuner: searcher, scheduler (ASHA, Hyperband, median, forecast), resources, storage,
callbacks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from ray import tune
from ray.tune.schedulers import (
    ASHAScheduler,
    AsyncHyperBandScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from mer_core.configs import ExperimentConfig
from sweeps.ablation.plan import AblationPlan
from sweeps.ablation.search import AblationSearcher
from sweeps.execution.forecast import ForecastStopping
from sweeps.fused.rungs import RungSchedule
from sweeps.fused.search import PopulationSearcher
from sweeps.space import SearchSpace, make_sampler
from sweeps.space.study import StudyRef, default_storage
from sweeps.space.tell import TellingOptunaSearch
from sweeps.space.warm_start import WarmStart
from sweeps.spec import SchedulerConfig, SweepSpec
from sweeps.trainable.objectives import trial_iterations
from sweeps.trainable.report import TIME_ATTR, max_iterations


class SeededHyperBand(AsyncHyperBandScheduler):
    """Ray's asynchronous Hyperband with its bracket draws, seeded: every random choice comes from the config.

    Ray draws each new trial's bracket from the global NumPy generator (softmax over the
    brackets' rung counts); here the same draw comes from a generator seeded by the sweep, so a
    sweep's brackets repeat with its seed. Ray's bracket bookkeeping is private; pinned by
    tests/test_third_party_internals.py.
    """

    def __init__(self, *, seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rng = np.random.default_rng(seed)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)  # validates metric/mode and records a bracket
        sizes = np.array([len(b._rungs) for b in self._brackets])
        weights = np.exp(sizes - sizes.max())  # Ray's softmax: brackets with more rungs get more trials
        self._trial_info[trial.trial_id] = self._brackets[self._rng.choice(len(sizes), p=weights / weights.sum())]


def hyperband_brackets(grace_period: int, max_t: int, reduction_factor: float) -> int:
    """Brackets of a full Hyperband: one per rung of the first bracket, plus one whose trials all run to `max_t`."""
    return int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1) + 1


def build_scheduler(s: SchedulerConfig, *, max_t: int, seed: int) -> TrialScheduler:
    """The Ray scheduler `scheduler.kind` names; `max_t` = the longest trial in reported results.

    ASHA's and Hyperband's top rung defaults to the longest trial, so neither ever cuts a trial
    that would finish. `hyperband` is ASHA with several brackets (Li et al. 2020, "A System for
    Massively Parallel Hyperparameter Tuning", section 3.3): bracket s cuts first at
    grace_period * reduction_factor**s, so later brackets give every trial more epochs first.
    """
    top = s.max_t or max_t
    if s.kind == "asha":
        return ASHAScheduler(
            time_attr=TIME_ATTR, grace_period=s.grace_period, max_t=top, reduction_factor=s.reduction_factor
        )
    if s.kind == "hyperband":
        brackets = s.brackets or hyperband_brackets(s.grace_period, top, s.reduction_factor)
        return SeededHyperBand(
            seed=seed,
            time_attr=TIME_ATTR,
            grace_period=s.grace_period,
            max_t=top,
            reduction_factor=s.reduction_factor,
            brackets=brackets,
        )
    if s.kind == "median":
        # Ray's rule PAUSEs a trial to let a pending one start while fewer than 3 others got as far; our
        # trials checkpoint only at their end, so a paused one would restart from its first epoch. With an
        # infinite time slice it never pauses; what it stops is unchanged.
        return MedianStoppingRule(
            time_attr=TIME_ATTR, grace_period=s.grace_period, min_samples_required=3, min_time_slice=math.inf
        )
    if s.kind == "forecast":
        return ForecastStopping(time_attr=TIME_ATTR, max_t=top, grace_period=s.grace_period, margin_sd=s.margin_sd)
    return FIFOScheduler()


def make_scheduler(spec: SweepSpec, base: ExperimentConfig) -> TrialScheduler:
    """The sweep's scheduler (`build_scheduler`), its bracket draws seeded by `search.seed`."""
    return build_scheduler(spec.scheduler, max_t=trial_iterations(spec, base), seed=spec.search.seed)


def make_ablation_searcher(
    spec: SweepSpec, space: SearchSpace | None, plan: AblationPlan, study: StudyRef | None, *, restart: bool = False
) -> AblationSearcher:
    """Variants x seeds; re-tuning studies (if any) beside the sweep's name in `study`'s storage.
    Fused mode: each look's seeds of a variant train as populations of up to `execution.population`."""
    population = spec.execution.population if spec.execution.mode == "fused" else None
    return AblationSearcher(
        plan,
        space=space,
        algorithm=spec.search.algorithm,
        seed=spec.search.seed,
        population=population,
        study=study,
        restart=restart,
    )


def ablation_searcher(tuner: tune.Tuner) -> AblationSearcher | None:
    """The ablation searcher a Tuner runs (the restored one on `--resume`), for its status; else None."""
    # Ray keeps no public handle on the (restored) searcher; pinned by tests/test_third_party_internals.py.
    alg = tuner._local_tuner._tune_config.search_alg
    return alg if isinstance(alg, AblationSearcher) else None


def make_study(
    spec: SweepSpec, space: SearchSpace, ref: StudyRef, warm: WarmStart | None, *, replace: bool = False
) -> optuna.Study:
    """The sweep's new stored study with its seeded sampler, holding the warm-start trials if any.

    `replace`: a resumed sweep Ray had saved nothing of starts over, its earlier study too.
    """
    sampler = make_sampler(
        spec.search.algorithm,
        spec.search.seed,
        space=space,
        n_startup_trials=spec.startup_trials(),
        history=spec.search.history,
    )
    study = ref.create(sampler=sampler, mode=spec.mode, replace=replace)
    if warm is not None:
        warm.seed(study)
    return study


def make_searcher(spec: SweepSpec, space: SearchSpace, study: optuna.Study) -> TellingOptunaSearch:
    return TellingOptunaSearch(space=space.define_by_run, metric=spec.metric, mode=spec.mode, study=study)


def make_population_searcher(spec: SweepSpec, space: SearchSpace, study: optuna.Study) -> PopulationSearcher:
    """Fused mode: one Optuna study, K members per Ray trial (`execution.population`)."""
    return PopulationSearcher(
        space,
        sampler=study.sampler,
        metric=spec.metric,
        mode=spec.mode,
        num_samples=spec.search.num_samples,
        population=spec.execution.population,
        study=study,
    )


def population_schedule(spec: SweepSpec, base: ExperimentConfig) -> RungSchedule:
    """Fused mode's early stopping of members: the rungs `make_scheduler` would give ASHA, or none
    (always none in an ablation, whose seeds train to the end to stay paired)."""
    s = spec.scheduler
    if s.kind == "asha" and spec.kind == "search":
        max_t = s.max_t or max_iterations(base)
        return RungSchedule.asha(
            grace_period=s.grace_period, reduction_factor=s.reduction_factor, max_t=max_t, mode=spec.mode
        )
    return RungSchedule.none(mode=spec.mode)


def _search(
    spec: SweepSpec,
    space: SearchSpace | None,
    base: ExperimentConfig,
    plan: AblationPlan | None,
    study: StudyRef | None,
    warm: WarmStart | None,
    restart: bool,
) -> tuple[Any, TrialScheduler, int]:
    """(searcher, scheduler, Ray trials) of an ablation, a fused search or a one-trial-per-config search.

    Fused mode stops members inside each population (`population_schedule`), so Tune itself
    stops no Ray trial there.
    """
    if plan is not None:
        ablation = make_ablation_searcher(spec, space, plan, study, restart=restart)
        return ablation, FIFOScheduler(), ablation.num_ray_trials
    assert space is not None and study is not None
    ot_study = make_study(spec, space, study, warm, replace=restart)
    if spec.execution.mode == "fused":
        searcher = make_population_searcher(spec, space, ot_study)
        return searcher, FIFOScheduler(), searcher.num_populations
    return make_searcher(spec, space, ot_study), make_scheduler(spec, base), spec.search.num_samples


def build_tuner(
    spec: SweepSpec,
    space: SearchSpace | None,
    trainable: Any,
    *,
    folder: Path,
    callbacks: list,
    resume: bool,
    base: ExperimentConfig,
    plan: AblationPlan | None = None,
    study: StudyRef | None = None,
    warm: WarmStart | None = None,
    restart: bool = False,
) -> tune.Tuner:
    """A new Tuner writing to `folder`, or the one restored from it (`resume`).

    A search keeps its Optuna study in `study`'s storage, seeded with `warm`'s trials; `restart`:
    a resumed sweep that Ray had saved nothing of, whose study starts over.
    An ablation (`plan`) runs its own searcher (variants x seeds, optional re-tuning) and no
    scheduler: every trial trains to the end so the seeds stay paired.
    """
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    trainable = tune.with_resources(trainable, resources)
    if resume:
        tuner = tune.Tuner.restore(str(folder), trainable, resume_unfinished=True, resume_errored=True)
        # Callbacks are pickled with the tuner without their live MLflow client; give the
        # restored run the fresh ones (same parent run, reopened by the caller). Tuner.restore takes
        # no callbacks; pinned by tests/test_third_party_internals.py.
        tuner._local_tuner.get_run_config().callbacks = callbacks
        return tuner
    study = study or StudyRef(default_storage(folder), spec.name)
    search_alg, scheduler, num_samples = _search(spec, space, base, plan, study, warm, restart)
    tune_config = tune.TuneConfig(
        metric=spec.metric,
        mode=spec.mode,
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=num_samples,
        max_concurrent_trials=spec.resources.max_concurrent,
        time_budget_s=spec.time_budget_s,
        reuse_actors=True,  # one worker process serves many trials: no per-trial process start
        trial_dirname_creator=lambda trial: trial.trial_id,
    )
    run_config = tune.RunConfig(
        name=folder.name,
        storage_path=str(folder.parent),
        callbacks=callbacks,
        # Ray Tune's own progress reporter stays silent (with RAY_AIR_NEW_OUTPUT=0, set by the engine):
        # the sweep's progress display is sweeps/execution/progress.py, one of `callbacks`.
        verbose=0,
        # A failed trial (an exception, a lost node) reruns from scratch: trials checkpoint only
        # their final artifacts, so there is nothing mid-trial to restore.
        failure_config=tune.FailureConfig(max_failures=spec.resources.max_retries),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
    )
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
