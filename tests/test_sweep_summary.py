"""The CLI's final summary: counts by outcome and the top finished trials."""

from __future__ import annotations

from sweeps.execution.results import SweepOutcome, TrialRow, format_table


def _row(trial: str, outcome: str, value: float | None) -> TrialRow:
    return TrialRow(trial, outcome, value, {"optim.lr": 0.001}, iterations=3)


def test_summary_counts_interrupted_trials_apart_from_pruned_and_failed() -> None:
    rows = [_row("a", "ok", 0.8), _row("b", "pruned", 0.5), _row("c", "interrupted", None), _row("d", "error", None)]
    text = format_table(SweepOutcome(rows=rows, best_config_path="runs/x/best_config.yaml"), metric="m", mode="max")
    assert text.splitlines()[0] == "4 trials: 1 finished, 1 pruned, 1 interrupted, 1 failed"
    assert "best config: runs/x/best_config.yaml" in text


def test_summary_ranks_finished_trials_only_and_says_when_none_finished() -> None:
    rows = [_row("a", "ok", 0.2), _row("b", "ok", 0.9), _row("c", "pruned", 0.99)]
    lines = format_table(SweepOutcome(rows=rows), metric="m", mode="max").splitlines()
    assert lines[0] == "3 trials: 2 finished, 1 pruned, 0 failed"  # no "interrupted" when there are none
    assert [line.split()[0] for line in lines[2:4]] == ["b", "a"]  # best first; the pruned 0.99 is not ranked
    assert format_table(SweepOutcome(rows=[_row("c", "pruned", 0.5)]), metric="m", mode="min").endswith(
        "no trial finished"
    )
