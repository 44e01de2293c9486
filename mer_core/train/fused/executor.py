"""The fused executor: K members of one shape group as rows of one stacked model, one `vmap` per step.

A step takes each participating member's own batch (its own shuffled order, from its own
generator, decided by the recipe), draws each member's randomness outside `vmap` from its own
generator (`objective.draw`), runs every member's `TrainNet` loss in one `vmap` over
`functional_call`, and one backward for all. Members whose batch sizes differ in a step (last
batches, self-training sets of different sizes) run in one vmap per batch size; the gradients
still land in one (K, P) tensor. Each member then takes its single run's optimiser update,
all members in one pass (`optim.MemberOptimizer`).

The losses stay on the device (the recipe reads them once per epoch), and with
`runtime.capture` the whole population step, from the gathered inputs to the last member's
update, is one CUDA graph per step signature (`mer_core.train.capture`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call, vmap

from mer_core.configs import with_overrides
from mer_core.configs.schema import ExperimentConfig
from mer_core.train.capture import Replay, StepGraphs, resolve_capture
from mer_core.train.device_data import DeviceData, batches
from mer_core.train.fused.dropout import MemberDropout, marker_rates
from mer_core.train.fused.optim import MemberOptimizer
from mer_core.train.fused.probe import active_parameters, probe_key
from mer_core.train.fused.stack import Population, Snapshot
from mer_core.train.objective import TrainNet, draw, fresh_net
from mer_core.train.plan import LOSS_KINDS, TERMS, LossKind, StageTerms, stage_terms
from mer_core.train.precision import autocast_dtype, storage_dtype, widened
from mer_core.train.recipe import Fold, Member, Part

__all__ = ["FusedExecutor"]


class FusedExecutor:
    """Holds a fold's population and runs its steps (see the module docstring)."""

    def __init__(
        self,
        cfgs: Sequence[ExperimentConfig],
        device: torch.device,
        *,
        capture: bool | None = None,
        replay: Replay = "cuda",
    ) -> None:
        """Args:
        cfgs: the members' configs (one shape group).
        device: where the population trains.
        capture: capture each step (None: `capture.resolve_capture` of the shared runtime section).
        replay: `python` replays captured steps on the CPU (the capture tests' stand-in).
        """
        self.device = device
        self.cfgs = list(cfgs)
        precision = cfgs[0].runtime.precision  # a schedule field: shared
        self.autocast_dtype = autocast_dtype(precision)
        self.dtype = storage_dtype(precision)  # of the stacked rows, the data and the per-member weights
        self._fold: Fold | None = None
        self.pop: Population | None = None
        self.opt: MemberOptimizer | None = None
        self.rows: dict[int, int] = {}  # member index -> row in this fold's population
        self.markers: dict[str, float] = {}  # dropout field -> marker rate (fields whose rates differ)
        self._active: dict[LossKind, dict[int, tuple[bool, ...]]] = {}
        self._tensors: dict[tuple, tuple] = {}
        self._index: dict[tuple[int, ...], Tensor | None] = {}
        self._steps: dict[tuple, Any] = {}  # step functions by step signature (the graphs' keys)
        if capture is None:
            capture = resolve_capture(cfgs[0], device)  # runtime.* and missing.impute are shared
        self.graphs = StepGraphs(capture, replay=replay)

    # -- setup --------------------------------------------------------------------------------
    @property
    def fold(self) -> Fold:
        if self._fold is None:
            raise RuntimeError("begin_fold() first")
        return self._fold

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        # The cast cache must not outlive a captured step (CUDA graphs guide: cache_enabled=False).
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, cache_enabled=not self.graphs.enabled)

    def _template(self, members: Sequence[Member]) -> TrainNet:
        """The module every member runs through, with marker dropout rates where members differ."""
        values = {
            "model.dropout": [m.cfg.model.dropout for m in members],
            "model.head_dropout": [m.cfg.model.head_dropout for m in members],
        }
        self.markers = {f: r for f, r in marker_rates(values).items() if r is not None}
        first = members[0].cfg
        cfg = with_overrides(first, self.markers) if self.markers else first
        data = self.fold.data
        template = fresh_net(cfg, data.dims, data.n_classes, self.device, first.seed)
        for p in template.parameters():
            p.requires_grad_(True)  # only the probe differentiates the template; members may freeze temperatures
        return template

    def begin_fold(self, members: Sequence[Member], fold: Fold) -> None:
        self._fold, self._tensors, self._index, self._steps = fold, {}, {}, {}
        self.graphs.clear()
        data = fold.data
        template = self._template(members)
        nets = [fresh_net(m.cfg, data.dims, data.n_classes, self.device, m.seeds.init) for m in members]
        self.rows = {m.index: row for row, m in enumerate(members)}
        self.pop = Population(template, nets, self.device)
        train = fold.split_of(members[0]).train  # any labelled rows do: the probe only needs >= 2 for BatchNorm
        rows = torch.as_tensor(train[:4], dtype=torch.long, device=self.device)
        cache: dict[tuple, tuple[bool, ...]] = {}
        self._active = {}
        for kind in LOSS_KINDS:
            self._active[kind] = {}
            for m in members:
                key = probe_key(m.cfg, kind)
                if key not in cache:
                    cache[key] = active_parameters(template, m.cfg, data, fold.dev, rows, kind)
                self._active[kind][m.index] = cache[key]
        self.opt = MemberOptimizer(
            self.pop, [m.cfg.optim for m in members], [self._active["finetune"][m.index] for m in members]
        )

    def begin_stage(self, members: Sequence[Member], kind: LossKind) -> None:
        assert self.opt is not None and self.pop is not None
        for m in members:
            self.opt.set_active(self.rows[m.index], self._active[kind][m.index])
        self.opt.reset([self.rows[m.index] for m in members])
        self.graphs.clear()  # they recorded the previous stage's optimiser state
        self._steps = {}
        self.pop.net.train()

    # -- one step -----------------------------------------------------------------------------
    def _member_tensors(self, members: Sequence[Member], kind: LossKind):
        """Terms, loss weights as (Ka,) tensors, and dropout rates of `members`.

        Cached per member set: the same members step together for a whole epoch, and on a GPU
        building these tensors every step would cost a host-to-device copy each.
        """
        key = (kind, tuple(m.index for m in members))
        if key not in self._tensors:
            terms = [stage_terms(m.cfg, kind) for m in members]
            present = frozenset().union(*(t.present for t in terms))
            # In the storage dtype: an fp64 member weighs its terms by its single run's Python floats.
            w = {
                k: torch.tensor([t.weights[k] for t in terms], device=self.device, dtype=self.dtype) for k in TERMS
            }  # each (Ka,)
            rates = {}
            for dotted, marker in self.markers.items():
                section, name = dotted.split(".")
                values = [float(getattr(getattr(m.cfg, section), name)) for m in members]
                rates[marker] = torch.tensor(values, device=self.device, dtype=self.dtype)  # (Ka,)
            self._tensors[key] = (terms, present, w, rates)
        return self._tensors[key]

    def _draws(self, x: dict[str, Tensor], mask: Tensor, members: Sequence[Member], terms: Sequence[StageTerms]):
        """Each member's draws from its own generator in its single run's order, stacked over members.

        A member that does not draw a field another member needs gets its clean input in its place
        (weight 0 switches its term off); the negative-removal fields are shape fields, so every
        member of a population draws them or none does.
        """
        if not any(t.uses("noise") or t.uses("negative") for t in terms):
            return {}  # nothing to draw (fine-tuning without the noise term): no work per member
        per_member = []
        for j, (m, t) in enumerate(zip(members, terms, strict=True)):
            xj = {mod: v[j] for mod, v in x.items()}  # m -> (B, D_m)
            assert m.schedules is not None and m.noise_gen is not None
            per_member.append(draw(xj, mask[j], t, cfg=m.cfg, schedules=m.schedules, generator=m.noise_gen))
        out: dict[str, Any] = {}
        if any(d.noisy is not None for d in per_member):
            out["noisy"] = {
                mod: torch.stack([(d.noisy or {mod: x[mod][j]})[mod] for j, d in enumerate(per_member)]) for mod in x
            }  # m -> (Ka, B, D_m)
        if per_member[0].negative_noisy is not None:
            out["negative_noisy"] = {mod: torch.stack([d.negative_noisy[mod] for d in per_member]) for mod in x}
        if per_member[0].drop is not None:
            out["drop"] = torch.stack([d.drop for d in per_member])  # (Ka, B, M)
        return out

    def _rows_index(self, members: Sequence[Member]) -> Tensor | None:
        """`Population.rows_index` of `members`, built once per member set (no copy to the device per step)."""
        assert self.pop is not None
        key = tuple(m.index for m in members)
        if key not in self._index:
            self._index[key] = self.pop.rows_index([self.rows[i] for i in key])
        return self._index[key]

    def _inputs(self, parts: Sequence[Part], kind: LossKind) -> dict[str, Any]:
        """The step inputs of members that share a batch size: features, mask, labels, draws."""
        members = [p.member for p in parts]
        stack = parts[0].stack
        if stack is not None and stack.members == tuple(m.index for m in members):
            idx, y = stack.idx, stack.y  # (Ka, B) each: the recipe stacked them once per epoch
        else:
            idx = torch.stack([p.idx for p in parts])  # (Ka, B)
            y = torch.stack([p.y for p in parts]) if kind == "finetune" else None  # (Ka, B)
        y = y if kind == "finetune" else None
        ka, b = idx.shape
        dev = self.fold.dev
        flat = idx.reshape(-1)  # (Ka * B,)
        x = {mod: f.index_select(0, flat).view(ka, b, -1) for mod, f in dev.features.items()}
        mask = dev.mask.index_select(0, flat).view(ka, b, -1)  # (Ka, B, M)
        terms = self._member_tensors(members, kind)[0]
        return {"x": x, "mask": mask, "y": y, "draws": self._draws(x, mask, members, terms)}

    def _group_losses(
        self, members: Sequence[Member], inputs: dict[str, Any], kind: LossKind, first: int
    ) -> tuple[Tensor, Tensor]:
        """(Ka,) losses of members that share a batch size, in one vmap, and the (Ka, P) buffer of their gradients."""
        assert self.pop is not None
        index = self._rows_index(members)
        _terms, present, w, rates = self._member_tensors(members, kind)
        params, grad = self.pop.trainable(index, first)
        buffers = self.pop.buffers_of(index)
        net = self.pop.net

        def member_loss(p, bufs, xm, mk, ym, dr, wm, rt):
            with MemberDropout(rt) if rt else nullcontext():
                return functional_call(net, (p, bufs), (xm, mk, ym, dr, wm), {"kind": kind, "present": present})

        y = inputs["y"]
        dims = (0, 0, 0, 0, None if y is None else 0, 0, 0, 0)
        args = (params, buffers, inputs["x"], inputs["mask"], y, inputs["draws"], w, rates)
        with self._autocast():
            out = vmap(member_loss, in_dims=dims, randomness="different")(*args)
        self.pop.write_buffers(index, buffers)
        return widened(out), grad  # (Ka,), (Ka, P)

    def _step_fn(self, groups: Sequence[Sequence[Member]], kind: LossKind):
        """The population's step over `groups` (members by batch size), as a function of their inputs.

        Every member's loss, one backward for all, each member's own clipped update. A member
        whose loss is not finite steps too (its rows only: gradients and updates are per row);
        the recipe fails it at the end of the epoch. Returns the (n,) detached losses in group order.
        """
        assert self.opt is not None
        opt = self.opt
        indexes = [self._rows_index(g) for g in groups]  # built before capture: no host copy inside the step

        def step(inputs: list[dict[str, Any]]) -> Tensor:
            losses, grads, first = [], [], 0
            for members, group_inputs in zip(groups, inputs, strict=True):
                loss, grad = self._group_losses(members, group_inputs, kind, first)
                losses.append(loss)
                grads.append(grad)
                first += len(members)
            total = torch.cat(losses)  # (n,)
            with warnings.catch_warnings():
                # The leaves and their gradient buffers are strided views of the flat rows (by design).
                warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
                total.sum().backward()
            for index, grad in zip(indexes, grads, strict=True):
                opt.step(index, grad)  # every member of the group in one update
            return total.detach()

        return step

    def step(self, parts: Sequence[Part], kind: LossKind) -> Tensor:
        by_size: dict[int, list[int]] = {}
        for j, part in enumerate(parts):
            by_size.setdefault(int(part.idx.shape[0]), []).append(j)
        groups = [[parts[j].member for j in js] for js in by_size.values()]
        inputs = [self._inputs([parts[j] for j in js], kind) for js in by_size.values()]
        key = (kind, tuple((size, tuple(m.index for m in g)) for size, g in zip(by_size, groups, strict=True)))
        if key not in self._steps:
            order = [j for js in by_size.values() for j in js]
            back = None if order == sorted(order) else torch.as_tensor(order, device=self.device).argsort()
            self._steps[key] = (self._step_fn(groups, kind), back)
        fn, back = self._steps[key]
        losses = self.graphs.run(key, fn, inputs)  # (n,) in group order
        return losses if back is None else losses.index_select(0, back)  # (n,) in parts order

    # -- prediction and state -----------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self, members: Sequence[Member], rows: Sequence[np.ndarray], *, dev: DeviceData | None = None
    ) -> list[dict[str, np.ndarray]]:
        """Members that share one rows array (the pool, one split) read the same inputs; members with
        rows of their own (folds of different `data.fold_seed`) gather theirs, one vmap per row count."""
        if all(r is rows[0] for r in rows):
            return self._predict(members, rows[0], shared=True, dev=dev)
        by_size: dict[int, list[int]] = {}
        for j, r in enumerate(rows):
            by_size.setdefault(len(r), []).append(j)
        out: list[dict[str, np.ndarray]] = [{} for _ in members]
        for js in by_size.values():
            stacked = np.stack([rows[j] for j in js])  # (Ka, n)
            predicted = self._predict([members[j] for j in js], stacked, shared=False, dev=dev)
            for j, logits in zip(js, predicted, strict=True):
                out[j] = logits
        return out

    def _predict(
        self, members: Sequence[Member], idx: np.ndarray, *, shared: bool, dev: DeviceData | None
    ) -> list[dict[str, np.ndarray]]:
        """Logits of `members` on rows `idx`: (n,) read by every member, or (Ka, n) one row set each."""
        assert self.pop is not None
        source = self.fold.dev if dev is None else dev
        net = self.pop.net
        index = self.pop.rows_index([self.rows[m.index] for m in members])
        params, buffers = self.pop.params(index), self.pop.buffers_of(index)
        rows = torch.as_tensor(idx, dtype=torch.long, device=self.device)  # (n,) or (Ka, n)
        n = rows.shape[-1]

        def member_logits(p, bufs, x, mask):
            return functional_call(net, (p, bufs), (x, mask), {"kind": "predict"})

        was_training = net.training
        net.eval()
        chunks: list[tuple[Tensor, ...]] = []
        size = max(max(256, members[0].cfg.optim.batch_size), 2)  # batch_size is a schedule field
        in_dims = (0, 0, None, None) if shared else (0, 0, 0, 0)
        mapped = vmap(member_logits, in_dims=in_dims, randomness="different")
        for pos in batches(n, size, generator=None, device=self.device):
            if shared:
                x, mask = source.take(rows[pos])  # shared by every member: m -> (B, D_m), (B, M)
            else:
                flat = rows[:, pos].reshape(-1)  # (Ka * B,)
                x, mask = source.take(flat)
                x = {mod: v.view(len(members), len(pos), -1) for mod, v in x.items()}  # m -> (Ka, B, D_m)
                mask = mask.view(len(members), len(pos), -1)  # (Ka, B, M)
            chunks.append(mapped(params, buffers, x, mask))
        net.train(was_training)
        heads = net.model.head_names
        if not chunks:
            return [{h: np.zeros((0, 0), np.float32) for h in heads} for _ in members]
        # per head (Ka, n, C)
        logits = [widened(torch.cat([c[h] for c in chunks], dim=1)).cpu().numpy() for h in range(len(heads))]
        return [{h: logits[i][j] for i, h in enumerate(heads)} for j in range(len(members))]

    def snapshot(self, member: Member) -> Snapshot:
        assert self.pop is not None
        return self.pop.snapshot(self.rows[member.index])

    def restore(self, member: Member, snapshot: Snapshot) -> None:
        assert self.pop is not None
        self.pop.restore(self.rows[member.index], snapshot)

    def reinit(self, member: Member, seed: int) -> None:
        assert self.pop is not None
        data = self.fold.data
        self.pop.load_row(self.rows[member.index], fresh_net(member.cfg, data.dims, data.n_classes, self.device, seed))

    def refresh_imputers(self, members: Sequence[Member]) -> None:
        """Nothing to refresh: `missing.impute` other than `zero` is refused in fused mode (fields.py)."""

    def model_state(self, member: Member) -> dict[str, Tensor]:
        assert self.pop is not None
        return self.pop.model_state(self.rows[member.index])
