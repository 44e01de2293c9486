"""`search.history`: TPE's window over a long history keeps the best trials and the recent ones, and
changes nothing while the history is shorter than the window."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.space import load_space, make_sampler
from sweeps.space.window import BEST_KEPT, window
from tests.sweep_helpers import ROOT

SPACE = ROOT / "search_spaces/quick.yaml"


def _trial(number: int, state: TrialState, value: float | None) -> optuna.trial.FrozenTrial:
    dist = optuna.distributions.FloatDistribution(0.0, 1.0)
    return optuna.trial.FrozenTrial(
        number=number,
        state=state,
        value=value,
        datetime_start=None,
        datetime_complete=None,
        params={"x": 0.5},
        distributions={"x": dist},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=number,
    )


def test_window_keeps_the_best_the_recent_and_every_unfinished_trial() -> None:
    # 200 finished trials whose value is their number (trial 0 the best when minimising), a running
    # and a failed one in between.
    trials = [_trial(i, TrialState.COMPLETE if i % 2 else TrialState.PRUNED, float(i)) for i in range(200)]
    trials.insert(50, _trial(200, TrialState.RUNNING, None))
    trials.insert(80, _trial(201, TrialState.FAIL, None))
    seen = window(trials, 60, minimize=True)
    finished = [t for t in seen if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 60
    best = sorted(t.number for t in trials if t.state == TrialState.COMPLETE)[:BEST_KEPT]
    assert set(best) <= {t.number for t in finished}  # the best complete trials of the whole history
    recent = {t.number for t in finished} - set(best)
    assert recent == set(range(200 - len(recent), 200))  # the rest: the most recent finished ones
    assert {200, 201} <= {t.number for t in seen}  # running (constant liar) and failed trials stay
    assert [t.number for t in seen] == [t.number for t in trials if t in seen]  # order kept
    maximise = window(trials, 60, minimize=False)
    assert 199 in {t.number for t in maximise} and 1 not in {t.number for t in maximise}
    assert window(trials, 500, minimize=True) == trials  # shorter than the window: unchanged


def _proposals(history: int | None, *, n: int) -> list[dict]:
    space = load_space(SPACE)
    sampler = make_sampler("tpe", 3, space=space, n_startup_trials=5, history=history)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    out = []
    for i in range(n):
        trial = study.ask()
        space.define_by_run(trial)
        out.append(dict(trial.params))
        study.tell(trial, float(trial.params["optim.lr"]) * (1 + i % 3))
    return out


def test_a_window_longer_than_the_history_proposes_exactly_what_plain_tpe_does() -> None:
    assert _proposals(1000, n=40) == _proposals(None, n=40)


def test_a_short_window_changes_proposals_only_past_its_size_and_still_follows_the_best() -> None:
    plain, windowed = _proposals(None, n=70), _proposals(BEST_KEPT + 5, n=70)
    assert windowed[: BEST_KEPT + 6] == plain[: BEST_KEPT + 6]  # up to `history` finished trials: the same
    assert windowed != plain
    # The objective rewards a large learning rate: with its best trials kept in the window, TPE's
    # later proposals still lean high, as plain TPE's do (the space's log-uniform median is 1e-3).
    late = sorted(p["optim.lr"] for p in windowed[40:])
    assert late[len(late) // 2] > 1e-3


@pytest.mark.parametrize("history", [0, BEST_KEPT - 1])
def test_a_window_smaller_than_the_kept_best_is_refused(tmp_path, history: int) -> None:
    from mer_core.errors import ConfigError
    from sweeps.spec import load_sweep
    from tests.sweep_helpers import write_sweep

    path = write_sweep(tmp_path, "w", search={"algorithm": "tpe", "num_samples": 4, "history": history})
    with pytest.raises(ConfigError, match=r"search\.history"):
        load_sweep(path)
