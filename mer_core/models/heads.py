"""Classifier heads, in the `HEADS` registry.

Every head is built as `cls(in_dim, n_classes, *, hidden=..., batchnorm=..., dropout=...)`
and maps (B, in_dim) features to (B, n_classes) logits.
"""

from __future__ import annotations

from torch import Tensor, nn

from mer_core.registry import Registry

HEADS: Registry[type[nn.Module]] = Registry("head")


@HEADS.register("fc")
class FcHead(nn.Module):
    """MERTools `FcClassifier`-style MLP: per hidden width Linear -> [BatchNorm1d] -> ReLU -> Dropout, then Linear.

    With `batchnorm` the head needs B >= 2 in train mode (BatchNorm1d cannot normalise a
    single sample); the trainer guarantees it (`optim.batch_size` >= 2 is validated, and a
    trailing batch of one must be dropped or merged). MERTools itself orders ReLU before BatchNorm; the
    pre-activation order used here is the conventional one.
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        hidden: tuple[int, ...] = (256, 128),
        batchnorm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        """Builds the head.

        Args:
            in_dim: Input width.
            n_classes: Number of logits.
            hidden: Widths of the hidden layers; empty = a single Linear.
            batchnorm: BatchNorm1d after each hidden Linear.
            dropout: Dropout after each hidden activation.
        """
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_dim
        for out in hidden:
            blocks.append(nn.Linear(width, out))
            if batchnorm:
                blocks.append(nn.BatchNorm1d(out))
            blocks.append(nn.ReLU())
            if dropout > 0.0:
                blocks.append(nn.Dropout(dropout))
            width = out
        self.hidden = nn.Sequential(*blocks)
        self.out = nn.Linear(width, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Maps (B, in_dim) features to (B, n_classes) logits."""
        return self.out(self.hidden(x))  # (B, C)


@HEADS.register("linear")
class LinearHead(nn.Module):
    """A single Linear layer (a linear probe); `hidden`, `batchnorm` and `dropout` are ignored."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        hidden: tuple[int, ...] = (),
        batchnorm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        """Builds the head.

        Args:
            in_dim: Input width.
            n_classes: Number of logits.
            hidden: Ignored (kept for the common constructor signature).
            batchnorm: Ignored.
            dropout: Ignored.
        """
        super().__init__()
        self.out = nn.Linear(in_dim, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Maps (B, in_dim) features to (B, n_classes) logits."""
        return self.out(x)  # (B, C)


__all__ = ["HEADS", "FcHead", "LinearHead"]
