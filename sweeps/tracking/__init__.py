"""MLflow tracking on the driver: one parent run per sweep, one child run per trial.

- `names`: every tag, param, metric and artifact name mersweep writes (and `analysis/` reads back).
- `tracker`: `SweepTracker`, the parent and child runs, logged in batches.
- `retry`: retries and an ordered outbox that ride out a tracking-server outage.
- `uri`: which tracking store (`resolve_tracking_uri`), shown without credentials (`redact`),
  checked before anything is written (`check_reachable`).
- `callback`: `MlflowCallback`, the Ray Tune callback that feeds trials to the tracker.
"""
