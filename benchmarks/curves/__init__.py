"""A recorded learning-curve benchmark of MR-CCL on real data, and its table.

- `tasks`: the tasks (uci-mfeat view subsets and label shares), the configuration sample, the settings.
- `record`: `python -m benchmarks.curves.record` trains every configuration of every task to its
  end and stores the per-epoch curves in resumable chunks under `data/`.
- `datasheet`: `data/DATASHEET.md`, what the chunks hold and how they were made.
- `table`: the chunks read back as one table per task (what `search_replay` replays).
"""
