"""Fused population training: K configs of one shape group trained as one stacked model.

Usage (one Ray trial training a population)::

    for group in group_by_shape(cfgs):              # ConfigError if data/batch/epochs/optimizer differ
        members = [cfgs[i] for i in group]
        results = train_population(members, data, report=lambda i, metrics: asha_says_stop(group[i], metrics))

- `group_by_shape(cfgs)` splits configs into groups that share one module structure (hidden
  size, layers, heads, fusion operator, head type...; see `grouping`), and raises a
  `ConfigError` naming every schedule field (data, batch sizes, epochs, optimizer type, runtime)
  that differs, since those fix the step sequence every member shares.
- `train_population(cfgs, data, report=...)` trains one group and returns one `TrialResult`
  per config, in order. `report(member_index, metrics)` receives exactly what
  `mer_core.train.run` would report for that config (once per fine-tuning epoch); returning
  True prunes that member only.

What equals the single run (`mer_core.train.run(cfg, data)`, same seed): initialisation, fold
splits, batch order, NEE noise draws, pseudo-labels, the optimiser arithmetic (torch's own
fused Adam/AdamW/SGD per member, clipping per member, frozen parameters skipped as `torch.optim`
skips them), early stopping, reports and results. What differs:

- float rounding: batched kernels (bmm under vmap) round differently from the single run's
  matmuls (1 ulp in a step's loss). Training amplifies it where gradients are pure rounding
  noise, which Adam normalises into full-size steps: biases in front of a BatchNorm (their
  true gradient is 0; they move the running means, so eval outputs drift, most with AdamW,
  whose decay does not steer them), InfoNCE over oversampled duplicate rows, fresh re-inits.
  The single trainer shows the same spread between 1 and 2 threads; the correctness tests
  (tests/test_population.py) hold members to 1e-4 on short runs;
- dropout > 0: the draws come from the global generator under `vmap(randomness="different")`,
  not the single run's stream (same distribution; a member with rate 0 stays exact);
- `TrialResult.seconds` is the whole population's wall time;
- `runtime.compile: true` is refused (ConfigError).
"""

from mer_core.population.engine import MemberReport
from mer_core.population.grouping import group_by_shape
from mer_core.population.train import train_population

__all__ = ["MemberReport", "group_by_shape", "train_population"]
