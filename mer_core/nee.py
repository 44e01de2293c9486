"""Noise Embedding Enhancement (NEE): beta schedules and noised copies of the inputs.

NEE is the diffusion forward process used as data augmentation: a feature x is
mixed with noise at a random step t of a per-modality schedule,

    x_noisy = sqrt(ᾱ_t) · x + sqrt(1 − ᾱ_t) · ε,   ᾱ_t = Π_{s<=t} (1 − β_s),

and the noise-contrastive loss pulls the encodings of x and x_noisy together.
Everything here is a pure function of its inputs and an explicit `torch.Generator`;
`NoiseSchedules` is a frozen container a trial builds once from its `NEEConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mer_core.configs.fields import FrozenDict
from mer_core.configs.schema import NEEConfig
from mer_core.errors import ConfigError

__all__ = ["SCHEDULED_NOISES", "SCHEDULES", "NoiseSchedules", "add_noise", "alphas_cumprod", "beta_schedule"]


def _linear(timesteps: int, beta_start: float, beta_end: float) -> Tensor:
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def _scaled_linear(timesteps: int, beta_start: float, beta_end: float) -> Tensor:
    # diffusers' "scaled_linear": linear in sqrt(β), so small β early and faster growth late.
    return torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2


def _squaredcos_cap_v2(timesteps: int, beta_start: float, beta_end: float) -> Tensor:
    # Nichol & Dhariwal (2021): ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2) with s = 0.008 and
    # β_i = 1 − ᾱ((i+1)/T)/ᾱ(i/T), capped at 0.999 so the last step is not pure noise.
    # beta_start / beta_end are not used by this schedule.
    del beta_start, beta_end
    s = 0.008
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps  # (T+1,)
    alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2  # (T+1,)
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)  # (T,)


def _sigmoid(timesteps: int, beta_start: float, beta_end: float) -> Tensor:
    # diffusers' "sigmoid": sigmoid(linspace(-6, 6)) rescaled into [beta_start, beta_end].
    ramp = torch.sigmoid(torch.linspace(-6, 6, timesteps, dtype=torch.float64))  # (T,)
    return ramp * (beta_end - beta_start) + beta_start


# A registry, not an if-chain: the schedule is a sweepable categorical.
SCHEDULES: Mapping[str, Callable[[int, float, float], Tensor]] = FrozenDict(
    {
        "linear": _linear,
        "scaled_linear": _scaled_linear,
        "squaredcos_cap_v2": _squaredcos_cap_v2,
        "sigmoid": _sigmoid,
    }
)


def beta_schedule(
    kind: str, timesteps: int, beta_start: float = 0.001, beta_end: float = 0.1, *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The β_t of a diffusion noise schedule.

    Args:
        kind: `linear` (linspace(β_start, β_end)), `scaled_linear` (linspace of sqrt(β), squared),
            `squaredcos_cap_v2` (Nichol & Dhariwal cosine ᾱ, β capped at 0.999; ignores
            beta_start / beta_end) or `sigmoid` (sigmoid(linspace(-6, 6)) scaled into [β_start, β_end]).
        timesteps: number of steps T (>= 1).
        beta_start: β of the first step.
        beta_end: β of the last step.
        dtype: dtype of the result (computed in float64).

    Returns:
        (T,) tensor of β values in (0, 1).

    Raises:
        ConfigError: unknown kind (field `nee.schedule`) or T < 1 (field `nee.timesteps`).
    """
    if kind not in SCHEDULES:
        raise ConfigError("nee.schedule", ", ".join(SCHEDULES), kind, "unknown schedule")
    if int(timesteps) < 1:
        raise ConfigError("nee.timesteps", "an integer >= 1", timesteps, "out of range")
    return SCHEDULES[kind](int(timesteps), float(beta_start), float(beta_end)).to(dtype)


def alphas_cumprod(
    kind: str, timesteps: int, beta_start: float = 0.001, beta_end: float = 0.1, *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """ᾱ_t = Π_{s<=t} (1 − β_s) of `beta_schedule(kind, ...)`, a (T,) tensor decreasing in (0, 1)."""
    betas = beta_schedule(kind, timesteps, beta_start, beta_end, dtype=torch.float64)  # (T,)
    return torch.cumprod(1 - betas, dim=0).to(dtype)  # (T,)


@dataclass(frozen=True, eq=False)  # eq on tensors is ambiguous; identity is enough
class NoiseSchedules:
    """Per-modality ᾱ tables, built once per trial (nothing is cached globally).

    Attributes:
        alpha_bars: modality -> (T_m,) ᾱ tensor.
        packed: every table end to end, in the order of `alpha_bars` ((Σ T_m,)), with `offsets` (M,) and
            `lengths` (M,) locating each: `add_noise` draws every modality's t in one kernel and looks up
            every ᾱ_t in one more, instead of two per modality. Derived, not passed.
    """

    alpha_bars: Mapping[str, Tensor]
    packed: Tensor = field(init=False, repr=False)
    offsets: Tensor = field(init=False, repr=False)
    lengths: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        tables = list(self.alpha_bars.values())
        if not tables:
            raise ValueError("NoiseSchedules needs at least one modality")
        sizes = [int(t.shape[0]) for t in tables]
        device = tables[0].device
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        # Frozen: the derived tables are set once here, the one place a NoiseSchedules is made.
        object.__setattr__(self, "packed", torch.cat(tables))  # (Σ T_m,)
        object.__setattr__(self, "offsets", torch.tensor(starts, device=device))  # (M,)
        object.__setattr__(self, "lengths", torch.tensor(sizes, device=device))  # (M,)

    @classmethod
    def from_config(
        cls,
        cfg: NEEConfig,
        modalities: Sequence[str],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> NoiseSchedules:
        """ᾱ for each modality (as `dtype`), with T_m = cfg.timesteps.get(m, cfg.default_timesteps)."""
        tables = {
            m: alphas_cumprod(
                cfg.schedule, cfg.timesteps.get(m, cfg.default_timesteps), cfg.beta_start, cfg.beta_end, dtype=dtype
            )
            for m in modalities
        }
        return cls(FrozenDict({m: t.to(device) for m, t in tables.items()}))

    def timesteps(self, modality: str) -> int:
        """T of one modality's schedule."""
        return int(self[modality].shape[0])

    def to(self, device: torch.device | str) -> NoiseSchedules:
        """A copy with every table on `device` (do this once, not per step)."""
        return NoiseSchedules(FrozenDict({m: t.to(device) for m, t in self.alpha_bars.items()}))

    def __getitem__(self, modality: str) -> Tensor:
        if modality not in self.alpha_bars:
            raise KeyError(f"no noise schedule for modality {modality!r}; known: {', '.join(self.alpha_bars)}")
        return self.alpha_bars[modality]

    def lookup(self, modalities: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
        """(packed, offsets, lengths) for `modalities` in that order: the stored ones when the order is theirs."""
        if tuple(modalities) == tuple(self.alpha_bars):
            return self.packed, self.offsets, self.lengths
        return NoiseSchedules(FrozenDict({m: self[m] for m in modalities})).lookup(modalities)


def add_noise(
    x: Mapping[str, Tensor],
    schedules: NoiseSchedules | None,
    cfg: NEEConfig,
    *,
    generator: torch.Generator,
    per_sample: bool = False,
) -> dict[str, Tensor]:
    """Noised copies of per-modality features, one draw of t per modality and batch.

    Formulas, with t ~ U{0, ..., T_m − 1} and ᾱ_t from `schedules`:

    - `gaussian`: sqrt(ᾱ_t)·x + sqrt(1 − ᾱ_t)·ε, ε ~ N(0, I). Variance preserving: a
      unit-variance x gives a unit-variance output.
    - `impulse`: the same mixing, with sign noise ε_k = ±1 each with probability
      occur_freq / 2 and 0 with probability 1 − occur_freq.
    - `gaussian_dropout` (the non-NEE comparison arm, no schedule, no t):
      x·(1 + sqrt(p/(1 − p))·ε), ε ~ N(0, I), p = cfg.dropout_p.

    Every modality is noised in one pass: the features are laid end to end, each modality's
    (B, ...) block contiguous (the step's kernels then see the same layout as a fresh tensor's,
    whether a step is replayed from a capture or not), all t come from one uniform draw
    (n_t, M) and all ε from one draw over every block, in the iteration order of `x`. So a
    step launches a handful of kernels whatever the number of modalities, and the same seed
    and modality order give the same result. The generator must live on the device of the
    features.

    Args:
        x: modality -> (B, D_m) or (B, T, D_m) features (one dtype and device).
        schedules: ᾱ tables for every modality of `x`; may be None for `gaussian_dropout`.
        cfg: NEE config (noise kind, occur_freq, dropout_p).
        generator: source of every random draw.
        per_sample: draw one t per sample instead of one per batch (the reference draws
            one per batch).

    Returns:
        modality -> noised tensor of the same shape and dtype.
    """
    if cfg.noise != "gaussian_dropout" and cfg.noise not in SCHEDULED_NOISES:
        raise ConfigError("nee.noise", "gaussian, impulse, gaussian_dropout", cfg.noise, "unknown noise kind")
    if cfg.noise != "gaussian_dropout" and schedules is None:
        raise ValueError(f"nee.noise={cfg.noise!r} needs noise schedules; got None")
    names = list(x)
    feats = [x[m] for m in names]
    batch = feats[0].shape[0]
    sizes = [f.numel() for f in feats]  # B·F_m, F_m = the product of a modality's non-batch dims
    flat = torch.cat([f.reshape(-1) for f in feats])  # (Σ B·F_m,): modality blocks end to end
    if cfg.noise == "gaussian_dropout":
        eps = torch.randn(flat.shape, generator=generator, device=flat.device, dtype=flat.dtype)  # (Σ B·F_m,)
        mixed = flat * (1 + math.sqrt(cfg.dropout_p / (1 - cfg.dropout_p)) * eps)
    else:
        assert schedules is not None
        packed, offsets, lengths = schedules.lookup(names)  # (Σ T_m,), (M,), (M,)
        n_t = batch if per_sample else 1
        u = torch.rand((n_t, len(names)), generator=generator, device=flat.device)  # (n_t, M)
        # floor(u·T) is uniform on {0..T-1}; the clamp only guards float rounding at u -> 1.
        t = torch.minimum((u * lengths).long(), lengths - 1)  # (n_t, M)
        ab = packed[offsets + t].to(device=flat.device, dtype=flat.dtype)  # (n_t, M)
        # Each modality's ᾱ_t over its block: (Σ B·F_m,). One t per batch: expanded views of a scalar, one
        # copy; one per sample: row b of block m gets ab[b, m].
        ab = torch.cat(
            [ab[:, j : j + 1].expand(batch, n // batch).reshape(-1) for j, n in enumerate(sizes)]
            if per_sample
            else [ab[0, j].expand(n) for j, n in enumerate(sizes)]
        )
        eps = SCHEDULED_NOISES[cfg.noise](flat, cfg, generator)  # (Σ B·F_m,)
        mixed = ab.sqrt() * flat + (1 - ab).sqrt() * eps
    parts = torch.split(mixed, sizes)  # contiguous blocks
    return {m: part.view(f.shape) for m, part, f in zip(names, parts, feats, strict=True)}


def _gaussian(feat: Tensor, cfg: NEEConfig, generator: torch.Generator) -> Tensor:
    return torch.randn(feat.shape, generator=generator, device=feat.device, dtype=feat.dtype)


def _impulse(feat: Tensor, cfg: NEEConfig, generator: torch.Generator) -> Tensor:
    # One uniform draw decides both occurrence and sign: u < f/2 -> +1, f/2 <= u < f -> -1, else 0.
    u = torch.rand(feat.shape, generator=generator, device=feat.device)
    f = cfg.occur_freq
    return (u < f / 2).to(feat.dtype) - ((u >= f / 2) & (u < f)).to(feat.dtype)


# ε of the scheduled noise kinds; `gaussian_dropout` has no schedule and is handled apart.
SCHEDULED_NOISES: Mapping[str, Callable[[Tensor, NEEConfig, torch.Generator], Tensor]] = FrozenDict(
    {"gaussian": _gaussian, "impulse": _impulse}
)
