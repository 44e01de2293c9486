"""Ablation sweeps (`kind: ablation`): named variants x paired seeds, optionally re-tuned per variant.

- `plan`: what an ablation runs (`AblationPlan`), and each trial's variant overrides and MLflow params.
- `search`: `AblationSearcher`, the Ray Tune searcher that hands out re-tuning, then eval trials.
- `batches`: a batch of seeds of one variant as Ray trials: one per seed, or fused populations.
- `summary`: the mean ± sd table per variant the CLI prints (`python -m analysis compare` tests it).
"""
