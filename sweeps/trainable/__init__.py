"""What runs inside a Ray trial worker: the trial function and what it reports.

- `trial`: `trial_main`, which builds a trial's config and calls `mer_core.train.run`, and the
  artifacts it leaves (`config.yaml`, validation logits, `trial.json`).
- `report`: the keys of a trial's results and the outcome the driver reads back (light: no trainer).
- `worker_setup`: process-wide settings of a worker; `faults`: fault injection for tests and benchmarks.
"""
