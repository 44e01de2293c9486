"""Ablation sweeps (`kind: ablation`): named variants x paired seeds, optionally re-tuned per variant.

- `plan`: what an ablation runs (`AblationPlan`), and each trial's variant overrides and MLflow params.
- `batches`: a batch of ablation trials as Ray configs (one per seed, or fused populations), read back.
- `search`: `AblationSearcher`, the Ray Tune searcher that hands out re-tuning, then eval trials,
  look by look when seeds are adaptive.
- `sequential`: the per-look levels (Bonferroni across variants, O'Brien-Fleming-type spending).
- `verdicts`: the paired t-interval and the verdict it gives (different / equivalent / undecided),
  power, minimum detectable difference and seeds needed.
- `calibration`: simulated studies that check the verdicts' error rates and power.
- `summary`: the verdicts the CLI prints when the sweep ends (`python -m analysis compare` has more).
"""
