"""`--resume`: what a sweep keeps so that a stopped or crashed sweep continues where it was.

- `state`: `runs/<sweep>/mersweep_state.json` (the MLflow parent run, the spec it started with).
- `searcher`: save/restore of our searchers' whole state (and their studies' history) with Ray's checkpoint.
- `study`: a stored Optuna study put back to what a restored searcher knows.
- `snapshot`: a consistent copy of Ray's experiment state, put back before a resumed Tuner reads it.
"""
