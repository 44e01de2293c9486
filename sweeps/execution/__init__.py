"""Running a sweep on Ray Tune: prepare -> Tuner -> results, on the driver.

- `prepare`: validate the whole sweep against its data and tracking store (`PreparedSweep`), and
  what `--dry-run` prints.
- `engine`: `execute`: open the MLflow parent run, start Ray, run the Tuner, summarise.
- `tuner`: the Tuner: searcher (Optuna, ablation, fused), scheduler (ASHA, Hyperband, median), resources, storage.
- `results`: rows per trial, the best one, `runs/<sweep>/best_config.yaml`, the final table.
- `progress`: the live status line, fed from Ray Tune's trials; `status`: what the line says
  (ended trials counted as they end, the time left, the text); `interrupt`: did Ctrl-C stop the
  Tuner; `ray_start`: start or join the Ray cluster.
"""
