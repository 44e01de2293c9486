"""`scheduler.kind: forecast`: stop a trial when an optimistic forecast of its final value cannot win.

ASHA, Hyperband and the median rule compare trials by their rank at a fixed epoch, so a trial that
learns slowly (a small learning rate) is cut while it is still climbing, however good its end
would be. This rule reads the shape of each trial's curve and the measured noise of the metric:

- *forecast*: a trial's final value is at least the best value it has reported (the trainer ends a
  trial on its best epoch), and at most what its current climb would give if it went on: the
  last value plus the least-squares slope of its last `WINDOW` values (never negative) times the
  epochs left before `max_t`. The larger of the two is the forecast; carrying the slope on in a
  straight line is optimistic for a learning curve, which flattens.
- *noise*: the standard deviation of the metric around a smooth curve, measured from every result
  this scheduler has seen: second differences v[t] - 2 v[t-1] + v[t-2] of a locally straight curve
  are noise of variance 6 sigma^2, so sigma = 1.4826 * median(|second difference|) / sqrt(6)
  (the median makes it ignore the few bends of fast learning).
- *rule*: from `grace_period` results on (and never before two values give a slope), stop the trial
  when forecast + `margin_sd` * sigma is below the best final value of the trials that finished.
  Until a trial has finished nothing is stopped.

Values are signed by `mode`, so `max` and `min` metrics alike. A trial's final report (the one
with `final: 1`) ends its curve and sets the value finished trials are compared with.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from sweeps.trainable.report import FINAL_KEY

__all__ = ["WINDOW", "ForecastStopping"]

WINDOW = 3  # values the slope is fitted on: the climb now, not the steep start of the curve
MAD_TO_SD = 1.4826  # median absolute deviation -> standard deviation of a normal variable


class ForecastStopping(FIFOScheduler):
    """Stops trials whose optimistic forecast falls below the best finished value (module docstring)."""

    def __init__(
        self, *, time_attr: str, max_t: int, grace_period: int = 1, margin_sd: float = 2.0, metric=None, mode=None
    ) -> None:
        super().__init__()
        self._time_attr, self._max_t = time_attr, max_t
        self._grace, self._margin = max(grace_period, 2), margin_sd
        self._metric, self._sign = metric, None if mode is None else (1.0 if mode == "max" else -1.0)
        self._curves: dict[str, list[tuple[float, float]]] = {}  # trial id -> [(time, signed value)]
        self._bends: list[float] = []  # |second differences| of every curve so far
        self._best_final = -math.inf  # signed
        self.stopped = 0

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if self._metric is not None and metric is not None and metric != self._metric:
            return False
        self._metric = self._metric or metric
        if mode is not None and self._sign is None:
            self._sign = 1.0 if mode == "max" else -1.0
        return True

    @property
    def noise(self) -> float:
        """The measured standard deviation of the metric around a smooth curve (0 until 3 values of a trial)."""
        return MAD_TO_SD * float(np.median(self._bends)) / math.sqrt(6.0) if self._bends else 0.0

    def forecast(self, trial_id: str) -> float:
        """Signed optimistic forecast of the trial's final value (module docstring)."""
        points = self._curves[trial_id][-WINDOW:]
        t = np.array([p[0] for p in points])  # (w,)
        v = np.array([p[1] for p in points])  # (w,)
        slope = max(0.0, float(np.polyfit(t, v, 1)[0])) if len(points) >= 2 else 0.0
        climb = v[-1] + slope * max(self._max_t - t[-1], 0.0)
        return max(max(p[1] for p in self._curves[trial_id]), float(climb))

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        value = result.get(self._metric)
        if self._sign is None or self._time_attr not in result or not isinstance(value, (int, float)):
            return TrialScheduler.CONTINUE
        if result.get(FINAL_KEY):
            return TrialScheduler.CONTINUE  # the final report closes the curve (on_trial_complete)
        if not math.isfinite(value):
            return TrialScheduler.CONTINUE
        curve = self._curves.setdefault(trial.trial_id, [])
        curve.append((float(result[self._time_attr]), self._sign * float(value)))
        if len(curve) >= 3:
            self._bends.append(abs(curve[-1][1] - 2.0 * curve[-2][1] + curve[-3][1]))
        if curve[-1][0] < self._grace or len(curve) < 2 or not math.isfinite(self._best_final):
            return TrialScheduler.CONTINUE
        if self.forecast(trial.trial_id) + self._margin * self.noise < self._best_final:
            self.stopped += 1
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        value = (result or {}).get(self._metric)
        if (
            self._sign is not None
            and (result or {}).get(FINAL_KEY)
            and isinstance(value, (int, float))
            and math.isfinite(value)
        ):
            self._best_final = max(self._best_final, self._sign * float(value))
        self._curves.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._curves.pop(trial.trial_id, None)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._curves.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return f"Using ForecastStopping: stopped {self.stopped}, noise {self.noise:.4g}."
