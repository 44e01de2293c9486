"""What runs inside a Ray trial worker: the trial function and what it reports.

- `settings`: `TrialSettings`, what every trial shares (light: workers unpickle it first).
- `trial`: `trial_main`, which builds a trial's config and calls `mer_core.train.run`, and the
  artifacts it leaves (`config.yaml`, validation logits, `trial.json`).
- `objectives`: the registry of what a trial runs (`objective.name`): `mrccl` (`trial_main`, the
  default) or `bookkeeping` (`bookkeeping`: sleeps and reports on a clock, for driver benchmarks).
- `report`: the keys of a trial's results and the outcome the driver reads back (light: no trainer).
- `worker_setup`: process-wide settings of a worker; `faults`: fault injection for tests and benchmarks.
"""
