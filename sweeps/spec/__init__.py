"""The sweep spec: a sweep YAML (`sweeps/<name>.yaml`) as one frozen, validated `SweepSpec`.

- `schema`: the `SweepSpec` dataclass and its sections (search, scheduler, resources, tracking,
  execution, ablation), each field checked on its own.
- `load`: `load_sweep`, the one boundary: normalises the raw YAML, applies `--set sweep.*`,
  validates, resolves the files it names, then runs the checks.
- `checks`: the checks that read files or span fields (base config, variants, search spaces).
- `experiment`: the experiment config a trial starts from (base YAML + `data` + `set` + variant).
"""

from sweeps.spec.load import load_sweep
from sweeps.spec.schema import (
    METRICS,
    REPORT_METRICS,
    AblationConfig,
    ExecutionConfig,
    ResourcesConfig,
    RetuneConfig,
    SchedulerConfig,
    SearchConfig,
    SeedSchedule,
    SweepSpec,
    TrackingConfig,
    VaryConfig,
)

__all__ = [
    "METRICS",
    "REPORT_METRICS",
    "AblationConfig",
    "ExecutionConfig",
    "ResourcesConfig",
    "RetuneConfig",
    "SchedulerConfig",
    "SearchConfig",
    "SeedSchedule",
    "SweepSpec",
    "TrackingConfig",
    "VaryConfig",
    "load_sweep",
]
