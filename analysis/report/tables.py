"""The report's tables as plain rows: the trials of a sweep and an ablation's comparison.

The comparison is taken as `analysis.compare` writes it (its Markdown for people, its CSV for
machines), never rebuilt here, so a column that `compare` gains appears in the report, in the
parent run's tables and in its per-variant metrics without a change in this module.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from analysis.runs import SweepRuns, TrialRun
from sweeps.tracking.names import variant_metric

if TYPE_CHECKING:
    from analysis.compare import AblationTable

Rows = list[dict[str, Any]]  # one dict per row, every row with the same keys in the same order


def ablation_markdown_rows(table: AblationTable) -> tuple[tuple[str, ...], ...]:
    """The comparison as `python -m analysis compare` prints it: header row first, formatted cells."""
    from analysis.compare import to_markdown

    lines = [ln.strip() for ln in to_markdown(table).splitlines() if ln.strip().startswith("|")]
    rows = [ln for ln in lines if not set(ln) <= set("|-: ")]  # the |---|---| line under the header
    return tuple(tuple(c.strip() for c in ln.strip("|").split(" | ")) for ln in rows)


def ablation_rows(table: AblationTable) -> Rows:
    """The comparison at full precision (`compare`'s CSV): numbers as floats, the rest as text."""
    from analysis.compare import to_csv

    return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(to_csv(table)))]


def variant_metrics(rows: Rows) -> dict[str, float]:
    """Every finite number of every variant's row as a parent-run metric (`variant/<name>/<column>`),
    so MLflow's run table and charts show the study."""
    out: dict[str, float] = {}
    for row in rows:
        name = str(row.get("variant", ""))
        for column, value in row.items():
            if isinstance(value, float) and math.isfinite(value) and column != "variant":
                out[variant_metric(name, column)] = value
    return out


def trial_rows(sweep: SweepRuns, params: Sequence[str]) -> Rows:
    """One row per trial, best first: ids, status, ablation arm, the sweep metric and `params`."""
    arms = sweep.kind == "ablation"
    order = {t.run_id: i for i, t in enumerate(sweep.ranked())}
    trials = sorted(sweep.trials, key=lambda t: (order.get(t.run_id, len(order)), t.trial_id))
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial": t.trial_id, "run_id": t.run_id, "status": t.status}
        if arms:
            row.update(variant=t.variant or "", seed=t.seed, phase=t.phase)
        row[sweep.metric] = t.metrics.get(sweep.metric)
        row.update({p: _value(t, p) for p in params})
        rows.append(row)
    return rows


def varying_params(sweep: SweepRuns, *, limit: int = 20) -> list[str]:
    """Params whose value differs between trials (what the sweep searched or an arm changed), sorted."""
    seen: dict[str, set[str]] = {}
    for t in sweep.trials:
        for k, v in t.params.items():
            seen.setdefault(k, set()).add(v)
    keys = set().union(*(t.params.keys() for t in sweep.trials)) if sweep.trials else set()
    return sorted(k for k in keys if len(seen[k]) > 1 or any(k not in t.params for t in sweep.trials))[:limit]


def table_json(rows: Rows) -> str:
    """Rows in `mlflow.log_table`'s file format (pandas' orient="split"), which MLflow's UI renders.

    Numbers keep 4 significant digits, for reading; the CSV beside it has them all.
    """
    columns = list(rows[0]) if rows else []
    data = [[_json_cell(row.get(c)) for c in columns] for row in rows]
    return json.dumps({"columns": columns, "data": data})


def table_csv(rows: Rows) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buf.getvalue()


def _value(trial: TrialRun, name: str) -> Any:
    value = trial.param_value(name)
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _json_cell(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.4g}") if math.isfinite(value) else None  # JSON has no NaN: an empty cell
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
