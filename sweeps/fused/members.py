"""How a fused Ray trial carries its members: config keys, result prefixes, ids, outcomes.

One Ray trial of fused mode is a population of members, each its own trial of the sweep. Its
config lists the members' sampled params (`members_of`), its results carry each member's values
under `m<i>/` (`member_result`), and each member goes by `<ray trial id>-m<i>` in MLflow and in
the summary. `run_units` and `member_outcome` let the driver treat a one-trial Ray trial and a
population alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sweeps.trainable.report import FINAL_KEY

MEMBERS_KEY = "__members"
NUMBERS_KEY = "__member_numbers"
RUNGS_KEY = "__rungs"
RUNGS_RESULT = "population/rungs"  # final result: JSON list (per rung) of the scores this population recorded


def members_of(config: Mapping[str, Any] | None) -> list[dict[str, Any]] | None:
    """The members' sampled params of a fused Ray trial's config; None for a one-trial config."""
    members = (config or {}).get(MEMBERS_KEY)
    return None if members is None else [dict(m) for m in members]


def member_prefix(index: int) -> str:
    """Key prefix of member `index`'s values in a population's results."""
    return f"m{index}/"


def member_trial_id(trial_id: str, index: int) -> str:
    """The id a member goes by in MLflow and the summary: `<ray trial id>-m<index>`."""
    return f"{trial_id}-m{index}"


def member_result(result: Mapping[str, Any] | None, index: int) -> dict[str, Any]:
    """Member `index`'s values in a population result, without their prefix."""
    prefix = member_prefix(index)
    return {k[len(prefix) :]: v for k, v in (result or {}).items() if k.startswith(prefix)}


def member_outcome(last: Mapping[str, Any] | None, index: int, *, errored: bool = False) -> str:
    """ok | pruned | diverged | invalid | error of member `index` of a fused trial, from its last result."""
    if errored:
        return "error"
    if last and last.get(FINAL_KEY):
        return str(member_result(last, index).get("status", "error"))
    return "pruned"  # the population was stopped before its final report (as `trial_outcome`)


def run_units(trial: Any) -> list[tuple[str, str, Mapping[str, Any], str]]:
    """(trial id, run name, params config, result prefix) of each sweep trial in a Ray trial:
    the trial itself, or in fused mode each of its members."""
    members = members_of(trial.config)
    if members is None:
        return [(trial.trial_id, str(trial), trial.config, "")]
    return [
        (member_trial_id(trial.trial_id, i), f"{trial}-m{i}", params, member_prefix(i))
        for i, params in enumerate(members)
    ]
