"""K members' parameters as the rows of one flat (K, P) tensor, and their stacked buffers.

One flat tensor instead of one stacked tensor per parameter (what `torch.func.stack_module_state`
returns) because everything per member is then a row: the optimiser state, the snapshot of a
member's best epoch, the gather of the members that still train. The parameters handed to
`functional_call` are column slices of it, and their gradients are slices of one (K, P) buffer.
The model's parameters come first, the temperatures last, so `[:n_model]` of a row is exactly
what `model.state_dict()` holds of the parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mer_core.train.objective import TrainNet

__all__ = ["Layout", "Population", "Snapshot"]


@dataclass(frozen=True)
class Layout:
    """Where each named parameter of a `TrainNet` lives in a flat row."""

    names: tuple[str, ...]  # TrainNet parameter names, model.* first, then temps.*
    shapes: tuple[torch.Size, ...]
    sizes: tuple[int, ...]  # numel of each
    n_model: int  # columns [0, n_model) hold model.* parameters

    @classmethod
    def of(cls, net: TrainNet) -> Layout:
        named = list(net.named_parameters())
        names = tuple(n for n, _ in named)
        if not all(n.startswith("model.") for n in names[: len(list(net.model.parameters()))]):
            raise ValueError("TrainNet must register the model before the temperatures")
        n_model = sum(p.numel() for p in net.model.parameters())
        return cls(names, tuple(p.shape for _, p in named), tuple(p.numel() for _, p in named), n_model)

    @property
    def width(self) -> int:
        return sum(self.sizes)


@dataclass
class Snapshot:
    """A member's model at its best epoch (what `model.state_dict()` holds), to restore later."""

    params: Tensor  # (n_model,)
    buffers: dict[str, Tensor]


class Population:
    """Stacked state of K members of one template `TrainNet`.

    Attributes:
        net: the template module (its own parameters are never trained: functional_call
            replaces them by rows of `flat`).
        layout: the flat row layout.
        flat: (K, P) parameter storage (trained through the leaf views of `trainable`).
        buffers: name -> (K, ...) stacked buffers (BatchNorm running statistics).
    """

    def __init__(self, net: TrainNet, members: Sequence[TrainNet], device: torch.device) -> None:
        self.net = net.to(device)
        self.layout = Layout.of(net)
        dtype = next(net.parameters()).dtype  # runtime.precision's storage dtype (fresh_net)
        self.flat = torch.zeros(len(members), self.layout.width, device=device, dtype=dtype)
        self.buffers = {n: torch.stack([b.to(device) for _ in members]) for n, b in net.named_buffers()}
        for k, member in enumerate(members):
            self.load_row(k, member)
        # Gradients accumulate in place into these persistent buffers (zeroed per step) instead of
        # a fresh (K, P) tensor per step: on the CPU a fresh allocation that size costs page faults
        # on every step, about as much as the copy itself.
        self.grad = torch.zeros_like(self.flat)  # all members' gradients
        self._scratch = torch.zeros_like(self.flat)  # gradients of gathered subsets, disjoint rows per group
        self._all = self._leaves(self.flat, self.grad)

    @property
    def size(self) -> int:
        return self.flat.shape[0]

    @torch.no_grad()
    def load_row(self, k: int, member: TrainNet) -> None:
        """Copy a member module's parameters and buffers into row `k` (init and re-init)."""
        params = dict(member.named_parameters())
        if tuple(params) != self.layout.names:
            raise ValueError("member and template differ in parameter names; they are not one shape group")
        row = torch.cat([params[n].detach().reshape(-1) for n in self.layout.names])  # (P,)
        self.flat[k].copy_(row)
        for name, buf in member.named_buffers():
            self.buffers[name][k].copy_(buf)

    def rows_index(self, rows: Sequence[int]) -> Tensor | None:
        """Index tensor of `rows`, or None when `rows` is every member in order (no gather needed)."""
        if list(rows) == list(range(self.size)):
            return None
        return torch.as_tensor(list(rows), dtype=torch.long, device=self.flat.device)

    def params(self, index: Tensor | None) -> dict[str, Tensor]:
        """name -> (Ka, *shape) parameter views of the selected rows (no gradient), for prediction."""
        sel = self.flat if index is None else self.flat.index_select(0, index)  # (Ka, P)
        return self._views(sel)

    def trainable(self, index: Tensor | None, first: int) -> tuple[dict[str, Tensor], Tensor]:
        """Leaf parameters of the selected rows for a training forward, and their (Ka, P) gradient.

        Each leaf's `.grad` is a view of the returned buffer (zeroed here), so backward
        accumulates every gradient into it in place.

        Args:
            index: rows (None = every member, in order: the persistent leaves over `flat`).
            first: first scratch row this selection may use; selections trained in the same
                step must use disjoint scratch rows.
        """
        if index is None:
            self.grad.zero_()
            return self._all, self.grad
        grad = self._scratch[first : first + index.shape[0]]
        grad.zero_()
        return self._leaves(self.flat.index_select(0, index), grad), grad

    def _views(self, sel: Tensor) -> dict[str, Tensor]:
        cols = sel.split(self.layout.sizes, dim=1)  # each (Ka, numel)
        return {
            n: c.view(sel.shape[0], *s) for n, c, s in zip(self.layout.names, cols, self.layout.shapes, strict=True)
        }

    def _leaves(self, sel: Tensor, grad: Tensor) -> dict[str, Tensor]:
        leaves = self._views(sel)
        for leaf, g in zip(leaves.values(), self._views(grad).values(), strict=True):
            leaf.requires_grad_(True)
            leaf.grad = g
        return leaves

    def buffers_of(self, index: Tensor | None) -> dict[str, Tensor]:
        """name -> (Ka, ...) buffers of the selected rows (the stacked tensors themselves for all rows)."""
        if index is None:
            return self.buffers
        return {n: b.index_select(0, index) for n, b in self.buffers.items()}

    @torch.no_grad()
    def write_buffers(self, index: Tensor | None, sub: dict[str, Tensor]) -> None:
        """Store buffers a train-mode forward updated on a gathered copy back into their rows."""
        if index is None:
            return
        for name, b in self.buffers.items():
            b.index_copy_(0, index, sub[name])

    @torch.no_grad()
    def snapshot(self, k: int) -> Snapshot:
        return Snapshot(
            self.flat[k, : self.layout.n_model].clone(),
            {n: b[k].clone() for n, b in self.buffers.items()},
        )

    @torch.no_grad()
    def restore(self, k: int, snap: Snapshot) -> None:
        """Load a snapshot back (like `model.load_state_dict(best_state)`: temperatures untouched)."""
        self.flat[k, : self.layout.n_model].copy_(snap.params)
        for name, b in self.buffers.items():
            b[k].copy_(snap.buffers[name])

    @torch.no_grad()
    def model_state(self, k: int) -> dict[str, Tensor]:
        """Row `k` as the state dict of a single `MRCCL` (CPU tensors, keys without `model.`)."""
        views = dict(zip(self.layout.names, self.flat[k].split(self.layout.sizes), strict=True))
        state = {}
        for name, tensor in self.net.model.state_dict().items():
            key = f"model.{name}"
            value = views[key].view(tensor.shape) if key in views else self.buffers[key][k]
            state[name] = value.detach().cpu().clone()
        return state
