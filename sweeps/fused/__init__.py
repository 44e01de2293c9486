"""Fused mode (`execution: {mode: fused, population: K}`): K trials of one search train as one stacked model.

One Ray trial is then a population of K members, each still its own Optuna trial and MLflow run.
An ablation (`kind: ablation`) fuses the seeds of one variant instead (`sweeps.ablation.batches`):
its members run `population_main` with no early stopping, each on its own folds.

- `members`: how a population's config and results carry its members (keys, `m<i>/` prefixes, ids).
- `search`: `PopulationSearcher`, one Optuna study handed to Ray Tune K members at a time.
- `rungs`: ASHA's early-stopping rule applied to each member inside its population.
- `trial`: `population_main`, the function a fused Ray trial runs (`mer_core.train.fused` trains).
"""
