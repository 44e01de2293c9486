"""The sweep engine: spec schema, search-space compiler, samplers (Ray Tune wiring comes on top)."""

from sweeps.space.params import Param
from sweeps.space.search_space import (
    ALGORITHMS,
    AskTellGridSampler,
    SearchSpace,
    check_algorithm,
    load_space,
    make_sampler,
)
from sweeps.spec.schema import (
    METRICS,
    AblationConfig,
    ExecutionConfig,
    ResourcesConfig,
    RetuneConfig,
    SchedulerConfig,
    SearchConfig,
    SweepSpec,
    TrackingConfig,
    load_sweep,
)

__all__ = [
    "ALGORITHMS",
    "METRICS",
    "AblationConfig",
    "AskTellGridSampler",
    "ExecutionConfig",
    "Param",
    "ResourcesConfig",
    "RetuneConfig",
    "SchedulerConfig",
    "SearchConfig",
    "SearchSpace",
    "SweepSpec",
    "TrackingConfig",
    "check_algorithm",
    "load_space",
    "load_sweep",
    "make_sampler",
]
