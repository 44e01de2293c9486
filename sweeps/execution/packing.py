"""`execution.population: auto`: the sweep sizes its fused populations on this machine before it runs.

`resolve_packing` turns a spec with `execution: {mode: fused, population: auto}` into one with a
number, from a short probe of the sweep's own base config on its own data
(`mer_core.train.fused.sizing`): the population size with the fewest seconds per member that fits
in the free GPU memory. When fusing does not pay (K = 1 is fastest) or a field forces trial mode
(one fused mode refuses, such as `missing.impute: retrieval`), the sweep runs one trial per
process instead (`mode: trial`), and on CUDA `resources.gpu` becomes the share that lets as many
trials as fit in memory run on one GPU. The returned line is what the sweep's header says.

The probe runs where the driver runs, so with `--address` on a cluster whose GPUs the driver
does not have, give a number instead. A resumed sweep keeps the choice of its first run (its
stored spec holds the number), so Ray's restored search and the spec agree.
"""

from __future__ import annotations

import dataclasses

import yaml

from mer_core.configs.schema import ExperimentConfig
from mer_core.data.featureset import FeatureSet
from mer_core.errors import ConfigError
from mer_core.train.fused.sizing import choose_population, gpu_fraction, probe_population
from sweeps.resume.state import SweepState
from sweeps.spec import SweepSpec

__all__ = ["is_auto", "resolve_packing", "resumed_packing"]


def is_auto(spec: SweepSpec) -> bool:
    return spec.execution.mode == "fused" and spec.execution.population == "auto"


def _with(spec: SweepSpec, *, mode: str, population: int, gpu: float) -> SweepSpec:
    execution = dataclasses.replace(spec.execution, mode=mode, population=population)
    resources = dataclasses.replace(spec.resources, gpu=gpu)
    return dataclasses.replace(spec, execution=execution, resources=resources)


def resumed_packing(spec: SweepSpec, state: SweepState) -> SweepSpec:
    """`spec` with the execution mode, population and GPU share its first run chose (auto only)."""
    if not is_auto(spec):
        return spec
    stored = yaml.safe_load(state.spec_yaml) or {}
    execution, resources = stored.get("execution", {}), stored.get("resources", {})
    if execution.get("population", "auto") == "auto":
        return spec  # the first run was not auto: check_same_sweep names the difference
    return _with(
        spec,
        mode=execution.get("mode", "fused"),
        population=int(execution["population"]),
        gpu=float(resources.get("gpu", spec.resources.gpu)),
    )


def resolve_packing(
    spec: SweepSpec, base: ExperimentConfig, data: FeatureSet, *, forced: ConfigError | None, num_samples: int
) -> tuple[SweepSpec, str]:
    """(the spec with a number for `population: auto`, the header line saying what and why).

    Args:
        spec: the sweep (returned unchanged, with "", unless its population is auto).
        base: its base experiment config (what the probe trains).
        data: the sweep's data.
        forced: the error of a field that forces trial mode, if any (fused mode refuses it).
        num_samples: trials the sweep runs (no population larger than that).
    """
    if not is_auto(spec):
        return spec, ""
    if forced is not None:
        probe = probe_population(base, data, sizes=(1,))
        cuda = probe.device == "cuda"
        gpu = gpu_fraction(probe.peak_bytes[0], probe.free_bytes) if cuda else spec.resources.gpu
        share = f", gpu {gpu:.3g} per trial from {probe.peak_bytes[0] / 2**20:.0f} MiB per trial" if cuda else ""
        line = f"execution: population auto -> trial mode ({forced.field} forces it: fused mode refuses it){share}"
        return _with(spec, mode="trial", population=1, gpu=gpu), line
    choice = choose_population(probe_population(base, data), num_samples=num_samples)
    if choice.population > 1:
        line = f"execution: population auto -> {choice.population} ({choice.reason})"
        return _with(spec, mode="fused", population=choice.population, gpu=spec.resources.gpu), line
    gpu = choice.gpu if choice.gpu > 0 else spec.resources.gpu
    share = f", gpu {gpu:.3g} per trial" if choice.gpu > 0 else ""
    line = f"execution: population auto -> trial mode{share} ({choice.reason})"
    return _with(spec, mode="trial", population=1, gpu=gpu), line
