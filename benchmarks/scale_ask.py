"""TPE's ask on a stored study of n finished trials: what the sweep's driver pays per trial started.

A study of `n` finished trials over `search_spaces/quick.yaml` (values from the bookkeeping
objective's score, so the model has a best region to find) is written to SQLite, loaded the way the
driver holds it (Optuna's RDB storage behind its cache) and asked as the driver asks
(`study.ask()` then the space's define-by-run), once to warm the cache and then `ASKS` times, each
told before the next. Timed with the sweep's default window (`search.history`) and without one.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from sweeps.space import load_space, make_sampler
from sweeps.trainable.bookkeeping import config_score

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces/quick.yaml"
ASKS = 9
STARTUP = 5


def stored_study(folder: Path, n: int) -> str:
    """An SQLite study of `n` finished trials (random proposals, told their score); returns its URL."""
    url = f"sqlite:///{folder / f'ask-{n}.db'}"
    stored = optuna.create_study(storage=url, study_name="ask", direction="maximize")
    stored.add_trials(memory_study(n).get_trials(deepcopy=False))
    return url


@dataclass(frozen=True)
class AskTime:
    """Median milliseconds of one ask: wall (what the driver waits, the machine's load included),
    CPU (this process's own work, which load hardly moves), and of that CPU TPE's model (search
    space and sampling; the rest is writing the new trial and its params to the storage)."""

    total_ms: float
    cpu_ms: float
    model_ms: float


class _ModelClock:
    """CPU seconds spent in a sampler's model methods (wraps them on the instance; the benchmark's own sampler)."""

    def __init__(self, sampler: optuna.samplers.BaseSampler) -> None:
        self.seconds = 0.0
        for name in ("infer_relative_search_space", "sample_relative"):
            setattr(sampler, name, self._timed(getattr(sampler, name)))

    def _timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - start

        return timed


def ask_ms(url: str, *, history: int | None) -> AskTime:
    """One ask (plus define-by-run) on the stored study, warm cache: medians over `ASKS` asks."""
    space = load_space(SPACE)
    sampler = make_sampler("tpe", 0, space=space, n_startup_trials=STARTUP, history=history)
    clock = _ModelClock(sampler)
    study = optuna.load_study(study_name="ask", storage=url, sampler=sampler)
    totals, cpus, models = [], [], []
    for i in range(ASKS + 1):
        clock.seconds = 0.0
        start, cpu = time.perf_counter(), time.process_time()
        trial = study.ask()
        space.define_by_run(trial)
        took, cpu_took = time.perf_counter() - start, time.process_time() - cpu
        study.tell(trial, config_score(trial.params))
        if i:  # the first ask also reads the whole study into the storage's cache: not per trial
            totals.append(took)
            cpus.append(cpu_took)
            models.append(clock.seconds)
    ms = [1000 * statistics.median(x) for x in (totals, cpus, models)]
    return AskTime(*ms)


def ask_latencies(folder: Path, sizes: tuple[int, ...], *, history: int | None) -> dict[int, tuple[AskTime, AskTime]]:
    """n -> (ask with `history`, ask with the whole history)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: dict[int, tuple[AskTime, AskTime]] = {}
    for n in sizes:
        url = stored_study(folder, n)
        out[n] = (ask_ms(url, history=history), ask_ms(url, history=None))
    return out


def memory_study(n: int) -> optuna.Study:
    """`n` finished trials in memory (random proposals, told their score). The ask benchmark times TPE's
    model at 10,000 trials on these: building them in SQLite takes minutes, and the model (what grows
    with n) costs the same whichever storage holds them."""
    space = load_space(SPACE)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(n):
        trial = study.ask()
        space.define_by_run(trial)
        study.tell(trial, config_score(trial.params))
    return study


def model_cpu_ms(study: optuna.Study, *, history: int | None) -> float:
    """Median CPU milliseconds of TPE's model per ask on `study` (in memory), as `ask_ms` counts it."""
    space = load_space(SPACE)
    sampler = make_sampler("tpe", 0, space=space, n_startup_trials=STARTUP, history=history)
    clock = _ModelClock(sampler)
    study.sampler = sampler
    models = []
    for _ in range(ASKS):
        clock.seconds = 0.0
        trial = study.ask()
        space.define_by_run(trial)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # not part of the history the next ask sees
        models.append(clock.seconds)
    return 1000 * statistics.median(models)


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.scale_ask [N ...]`: TPE's model CPU per ask at N finished trials (in memory),
    with the default `search.history` and without a window."""
    import argparse

    from sweeps.spec.schema import HISTORY

    p = argparse.ArgumentParser(prog="python -m benchmarks.scale_ask")
    p.add_argument("sizes", nargs="*", type=int, default=[1000, 3000, 10000])
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"| finished trials | model ms, search.history {HISTORY} | model ms, whole history |")
    print("|---|---|---|")
    for n in args.sizes:
        study = memory_study(n)
        windowed, whole = model_cpu_ms(study, history=HISTORY), model_cpu_ms(study, history=None)
        print(f"| {n} | {windowed:.1f} | {whole:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
