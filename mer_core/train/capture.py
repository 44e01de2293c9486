"""CUDA-graph capture of a training step: recorded once per step signature, replayed with new inputs.

A step of this model (forward, loss, backward, clipping, the optimiser update) is a few hundred
small kernels. On a GPU the launches, not the arithmetic, set its time (benchmarks/RESULTS.md:
about 29 ms a step on an H100 against a 1-2 ms memory-traffic bound), so `runtime.capture`
records the whole step as one CUDA graph and replays it.

What a step must do to be captured (both executors' steps keep to it):

- read everything that changes between steps from its tensor arguments: they are copied into
  the graph's static inputs before each replay; its return value is a static output, cloned;
- no host-device synchronisation and no Python branch on a tensor's value inside the step;
- randomness that must follow a member's own generator (NEE noise, negative views) is drawn
  before the step (`objective.draw`) and passed in; dropout inside the step uses the default
  CUDA generator, whose offsets graph replay advances (fresh masks on every replay);
- one graph per shape: the key names the stage kind, the batch size and the members, so the
  shorter last batch of an epoch gets its own graph and every sample counts exactly once;
- optimiser state exists before capture: the first `warmup` steps of a key run eagerly (on a
  side stream, as CUDA graphs require), then the next one is captured and replayed.

A graph holds the addresses of the tensors it recorded. An executor drops its graphs when it
replaces what they point at (a new optimiser for a stage, a re-initialised module).

`python` replay is the CPU stand-in used by the equality tests: it keeps the first step function
of a key and re-invokes it on the static inputs, so a step that read a per-step value from
anywhere but its arguments replays stale values there as a graph would.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Literal

import torch

# torch's private pytree helpers (pinned by tests/test_third_party_internals.py)
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from mer_core.configs.schema import ExperimentConfig
from mer_core.errors import ConfigError

__all__ = ["StepGraphs", "resolve_capture"]

Replay = Literal["cuda", "python"]
WARMUP_STEPS = 3  # eager steps per key before capture (the CUDA graphs guide's warm-up)


def resolve_capture(cfg: ExperimentConfig, device: torch.device) -> bool:
    """Whether steps are captured: `auto` captures on CUDA, `always` must be honoured or is refused.

    `auto` is off on the CPU (no graphs there: a CPU step is arithmetic, not launches), off
    with `runtime.compile` (the compiled module owns its own graphs) and with a
    `missing.impute` other than `zero` (the imputer swaps its stored tensors between epochs and
    searches on the CPU inside the forward).

    Raises:
        ConfigError: `runtime.capture: always` where capture cannot run.
    """
    rt = cfg.runtime
    blocker = None
    if device.type != "cuda":
        blocker = f"CUDA graphs need a CUDA device; this run trains on {device.type}"
    elif rt.compile:
        blocker = "runtime.compile: true compiles the step instead"
    elif cfg.missing.impute != "zero":
        blocker = f"missing.impute: {cfg.missing.impute} fills states on the CPU inside the forward"
    if rt.capture == "always" and blocker is not None:
        raise ConfigError("runtime.capture", f"auto, never ({blocker})", rt.capture, "cannot be honoured")
    return rt.capture != "never" and blocker is None


@dataclass(eq=False)
class _Graph:
    static_in: list[Any]  # flattened leaves of the step's arguments (tensors cloned; None kept)
    static_out: Any  # the step's return value (a tensor pytree)
    graph: torch.cuda.CUDAGraph | None = None  # None: python replay
    fn: Callable[..., Any] | None = None  # python replay: the captured step function
    spec: Any = None  # the arguments' pytree structure


class StepGraphs:
    """One executor's captured steps, keyed by step signature (see the module docstring).

    `run(key, fn, *args)` returns `fn(*args)` (a tensor or a pytree of tensors): eagerly when
    capture is off or the key is still warming up, else from a replay of the key's graph.
    """

    def __init__(self, enabled: bool, *, replay: Replay = "cuda", warmup: int = WARMUP_STEPS) -> None:
        self.enabled = enabled
        self.replay = replay
        self.warmup = warmup
        self._graphs: dict[Hashable, _Graph] = {}
        self._seen: dict[Hashable, int] = {}
        self._stream: torch.cuda.Stream | None = None

    def clear(self) -> None:
        """Forget every graph (what they recorded is about to be replaced)."""
        self._graphs.clear()
        self._seen.clear()

    def __len__(self) -> int:
        return len(self._graphs)

    def run(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> Any:
        if not self.enabled:
            return fn(*args)
        entry = self._graphs.get(key)
        if entry is None:
            seen = self._seen.get(key, 0)
            if seen < self.warmup:
                self._seen[key] = seen + 1
                return self._eager(fn, args)
            entry = self._graphs[key] = self._capture(fn, args)
        else:
            leaves, _ = tree_flatten(args)
            pairs = [(s, t) for s, t in zip(entry.static_in, leaves, strict=True) if isinstance(t, torch.Tensor)]
            torch._foreach_copy_([s for s, _ in pairs], [t for _, t in pairs])  # one kernel for every input
        if entry.graph is not None:
            entry.graph.replay()
        else:
            assert entry.fn is not None
            entry.static_out = entry.fn(*_unflatten(entry))
        return tree_map(lambda t: t.clone(), entry.static_out)

    def _eager(self, fn: Callable[..., Any], args: tuple) -> Any:
        if self.replay == "python":
            return fn(*args)
        # Warm-up on a side stream (the CUDA graphs guide): the caching allocator then keeps the
        # warm-up's blocks out of the capture's private pool.
        if self._stream is None:
            self._stream = torch.cuda.Stream()
        self._stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._stream):
            out = fn(*args)
        torch.cuda.current_stream().wait_stream(self._stream)
        return out

    def _capture(self, fn: Callable[..., Any], args: tuple) -> _Graph:
        leaves, spec = tree_flatten(args)
        static = [t.clone() if isinstance(t, torch.Tensor) else t for t in leaves]
        entry = _Graph(static, None, spec=spec)
        if self.replay == "python":
            entry.fn = fn
            return entry
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            entry.static_out = fn(*_unflatten(entry))
        entry.graph = graph
        return entry


def _unflatten(entry: _Graph) -> tuple:
    return tree_unflatten(entry.static_in, entry.spec)
