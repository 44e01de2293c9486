"""After the Tuner: pick the best finished trial, print the top table, write best_config.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mer_core.configs import build_config, save_config
from sweeps.callbacks import trial_outcome
from sweeps.trainable import trial_overrides

if TYPE_CHECKING:
    from sweeps.engine import PreparedSweep


@dataclass
class TrialRow:
    trial_id: str
    outcome: str
    value: float | None
    params: dict[str, Any]
    iterations: int


@dataclass
class SweepOutcome:
    rows: list[TrialRow] = field(default_factory=list)
    best_trial: str | None = None
    best_value: float | None = None
    best_config_path: str | None = None
    interrupted: bool = False

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.rows)


def summarize(grid, prepared: PreparedSweep) -> SweepOutcome:
    """Rows for every trial, the best finished one, and its complete config written to disk."""
    spec = prepared.spec
    rows = []
    for result in grid:
        last = result.metrics or {}
        outcome = trial_outcome(last, errored=result.error is not None)
        value = last.get(spec.metric)
        rows.append(
            TrialRow(
                trial_id=str(last.get("trial_id", result.path.rsplit("/", 1)[-1] if result.path else "?")),
                outcome=outcome,
                value=float(value) if isinstance(value, (int, float)) else None,
                params={k: v for k, v in (result.config or {}).items()},
                iterations=int(last.get("training_iteration", 0)),
            )
        )
    done = [r for r in rows if r.outcome == "ok" and r.value is not None]
    # Stopped early: fewer trials than asked for, or some never ended (Ctrl-C during the last ones).
    unfinished = len(rows) - grid.num_terminated - grid.num_errors
    out = SweepOutcome(rows=rows, interrupted=len(rows) < prepared.total_trials or unfinished > 0)
    if done:
        best = max(done, key=lambda r: r.value if spec.mode == "max" else -r.value)  # type: ignore[operator]
        cfg = build_config(prepared.settings.base, trial_overrides(best.params, prepared.settings))
        path = prepared.folder / "best_config.yaml"
        header = (
            f"Best trial of sweep '{spec.name}': trial {best.trial_id}, {spec.metric} = {best.value:.4f}\n"
            f"Reproduce: python -m mer_core.train {path}"
        )
        save_config(cfg, path, header=header)
        out.best_trial, out.best_value, out.best_config_path = best.trial_id, best.value, str(path)
    return out


def format_table(outcome: SweepOutcome, *, metric: str, mode: str, top: int = 5) -> str:
    """The final summary: counts, then the top trials with their sampled parameters."""
    ranked = sorted(
        (r for r in outcome.rows if r.value is not None and r.outcome == "ok"),
        key=lambda r: r.value if mode == "min" else -r.value,  # type: ignore[operator]
    )[:top]
    head = (
        f"{len(outcome.rows)} trials: {outcome.count('ok')} finished, {outcome.count('pruned')} pruned, "
        f"{len(outcome.rows) - outcome.count('ok') - outcome.count('pruned')} failed"
    )
    lines = [head]
    if not ranked:
        return "\n".join([*lines, "no trial finished"])
    keys = sorted({k for r in ranked for k in r.params})
    short = [k.rsplit(".", 1)[-1][:14] for k in keys]
    lines.append("  ".join([f"{'trial':<12}", f"{metric:>16}", f"{'epochs':>6}", *(f"{s:>14}" for s in short)]))
    for r in ranked:
        cells = [f"{r.trial_id:<12}", f"{r.value:>16.4f}", f"{r.iterations:>6}"]
        cells += [f"{_fmt(r.params.get(k)):>14}" for k in keys]
        lines.append("  ".join(cells))
    if outcome.best_config_path:
        lines.append(f"best config: {outcome.best_config_path}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)[:14]
