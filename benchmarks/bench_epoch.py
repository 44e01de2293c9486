"""`epoch`: MR-CCL fine-tuning seconds per 5,030-sample epoch at MER2024 dims, ours vs the reference.

Ours is exactly the single executor's step (`mer_core.train.single.SingleExecutor.step`):
index the resident tensors, draw the NEE randomness, then the trainer's own `StepFn` (the
`TrainNet` fine-tuning loss of `plan.stage_terms` under the trainer's autocast, gradients set to
None, backward, foreach grad clipping, the optimizer `make_optimizer` builds), captured as a CUDA
graph where `runtime.capture: auto` captures (CUDA). Like the trainer, it never reads the loss
back inside a step: the losses of a timed chunk are checked once, at its end. On CUDA a third arm
runs the same step uncaptured, which is what decides `auto`.
The baseline is the reference implementation of the same
forward pass: `nn.TransformerEncoder(nn.TransformerEncoderLayer)` on (B, 1, D) per modality,
then Linear, the same heads and the same loss functions, a plain Adam step with the same
hyperparameters. Both see the same batches of the same random data.

A full epoch is 158 steps; on 2 cores that takes minutes per arm, so `steps` steps per repeat
are timed and scaled to 158 (stated in the output).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from benchmarks.common import BENCHMARKS, BenchOptions, BenchResult, Row, pct_table, ratio, timed
from benchmarks.floor import PASSES, copy_bandwidth, step_bytes
from mer_core import losses, nee
from mer_core.configs import ExperimentConfig, build_config
from mer_core.data.featureset import FeatureSet
from mer_core.data.synthetic import generate_synthetic
from mer_core.models import InvariantEncoder, largest_divisor
from mer_core.models.heads import FcHead
from mer_core.train.capture import WARMUP_STEPS, StepGraphs, resolve_capture
from mer_core.train.device_data import DeviceData, batches
from mer_core.train.objective import draw, fresh_net  # the trainer's exact model, temperatures and loss
from mer_core.train.plan import stage_terms
from mer_core.train.single import StepFn, make_optimizer  # the trainer's exact step, not a copy

MER2024_DIMS = {"audio": 1024, "text": 5120, "video": 768}
EPOCH_SAMPLES = 5030  # MER2024-SEMI labelled set


class ReferenceMRCCL(nn.Module):
    """The baseline: MR-CCL as the reference code builds it (no length-1 shortcut, no masks)."""

    def __init__(self, cfg: ExperimentConfig, dims: dict[str, int], n_classes: int) -> None:
        super().__init__()
        m, hid = cfg.model, cfg.model.hidden_dim
        self.modalities = tuple(dims)

        def encoder(d: int) -> nn.TransformerEncoder:
            layer = nn.TransformerEncoderLayer(
                d, largest_divisor(d, m.nhead), dim_feedforward=m.ff_dim, dropout=m.dropout, batch_first=True
            )
            # enable_nested_tensor only matters with padding masks, which the reference never passes.
            return nn.TransformerEncoder(layer, num_layers=m.layers, enable_nested_tensor=False)

        self.encoders = nn.ModuleDict({k: encoder(d) for k, d in dims.items()})
        self.proj = nn.ModuleDict({k: nn.Linear(d, hid) for k, d in dims.items()})
        self.invariant = InvariantEncoder(hid, dropout=m.dropout, slope=m.invariant_slope)
        self.ovr = nn.ModuleDict({k: nn.Linear(hid, (len(dims) - 1) * hid) for k in dims})
        head = {"hidden": tuple(m.head_hidden), "batchnorm": m.head_batchnorm, "dropout": m.head_dropout}
        heads = {k: FcHead(hid, n_classes, **head) for k in dims}
        heads["fusion"] = FcHead(len(dims) * hid, n_classes, **head)
        self.heads = nn.ModuleDict(heads)

    def forward(self, x: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """(specific, one-vs-rest, logits); the invariant features are computed as the reference does."""
        s = {k: self.proj[k](self.encoders[k](x[k].unsqueeze(1)).squeeze(1)) for k in self.modalities}  # (B, H)
        _inv = {k: self.invariant(v) for k, v in s.items()}  # (B, H): computed, unused, as in the reference
        ovr = {k: self.ovr[k](s[k]) for k in self.modalities}  # (B, (M-1)H)
        logits = {k: self.heads[k](s[k]) for k in self.modalities}  # (B, C)
        logits["fusion"] = self.heads["fusion"](torch.cat([s[k] for k in self.modalities], dim=-1))  # (B, C)
        return s, ovr, logits


@dataclass
class Arm:
    """One implementation under test: a loss on a batch and the update that follows it."""

    label: str
    loss: Callable[[Tensor], Tensor]  # batch positions (B,) -> scalar loss
    update: Callable[[Tensor], None]  # loss -> zero_grad, backward, clip, optimizer step
    optimizer: torch.optim.Optimizer
    model: nn.Module
    train: Callable[[Tensor], Tensor] | None = None  # a whole step returning its device loss (ours)

    def step(self, pos: Tensor) -> Tensor:
        """One training step as its trainer runs it: the reference reads the loss back every step."""
        if self.train is not None:
            return self.train(pos)
        loss = self.loss(pos)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise RuntimeError(f"non-finite loss ({value}) in {self.label}")
        self.update(loss)
        return loss.detach()

    def steps(self, chunk: list[Tensor]) -> None:
        """Steps over `chunk`, then one finiteness check of their losses (ours: its only sync)."""
        values = torch.stack([self.step(pos) for pos in chunk])  # (S,)
        if not bool(torch.isfinite(values).all()):
            raise RuntimeError(f"non-finite loss in {self.label}")


def _config(opts: BenchOptions, device: torch.device) -> ExperimentConfig:
    # Smoke: a model small enough that the whole benchmark (both arms, floor, phases) takes seconds on 2 cores;
    # the baseline's per-modality encoders need each dim divisible by model.nhead (8).
    dims = MER2024_DIMS if not opts.smoke else {"audio": 16, "text": 32, "video": 16}
    overrides = {
        "data.synthetic.n_labelled": EPOCH_SAMPLES if not opts.smoke else 160,
        "data.synthetic.n_unlabelled": 0,
        "data.synthetic.dims": dims,
        "loss.w_noise": 0.0,  # the reference fine-tuning loss: 4-head CE + modality contrastive
        "runtime.device": device.type,
        "runtime.precision": "bf16" if opts.bf16 else "fp32",
    }
    if opts.smoke:
        overrides |= {"model.ff_dim": 64, "model.hidden_dim": 32, "model.head_hidden": [32]}
    return build_config(None, overrides)


def _autocast(cfg: ExperimentConfig, device: torch.device):
    dtype = torch.bfloat16 if cfg.runtime.precision == "bf16" else None
    return dtype, torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)


def ours_arm(cfg: ExperimentConfig, fs: FeatureSet, dev: DeviceData, *, capture: bool | None = None) -> Arm:
    """Our model and step, built the way the single executor builds them.

    Args:
        capture: capture the step as a CUDA graph (None: what `runtime.capture` resolves to).
    """
    device = dev.mask.device
    net = fresh_net(cfg, fs.dims, fs.n_classes, device, seed=0)
    terms = stage_terms(cfg, "finetune")
    schedules = nee.NoiseSchedules.from_config(cfg.nee, fs.modalities, device=device)
    gen = torch.Generator(device=device).manual_seed(1)
    dtype, _ = _autocast(cfg, device)
    capture = resolve_capture(cfg, device) if capture is None else capture
    opt = make_optimizer(net, cfg.optim, capturable=capture)
    step = StepFn(net, opt, terms, "finetune", cfg.optim.grad_clip, dtype, device.type, capturing=capture)
    graphs = StepGraphs(capture)
    labels = torch.as_tensor(fs.labels, dtype=torch.long, device=device)  # (N,)
    net.train()

    def inputs(pos: Tensor):
        x, mask = dev.take(pos)  # m -> (B, D_m), (B, M)
        draws = draw(x, mask, terms, cfg=cfg, schedules=schedules, generator=gen)
        return x, mask, labels[pos], draws.as_dict()

    def loss(pos: Tensor) -> Tensor:
        x, mask, y, draws = inputs(pos)
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
            return net(x, mask, y, draws, terms.weights, kind="finetune", present=terms.present)

    def update(value: Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        value.backward()
        if cfg.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(step.params, cfg.optim.grad_clip)
        opt.step()

    def train(pos: Tensor) -> Tensor:
        return graphs.run(("finetune", int(pos.shape[0])), step, *inputs(pos))

    label = "ours (trainer step" + (", CUDA graph)" if capture else ")")
    return Arm(label, loss, update, opt, net.model, train=train)


def baseline_arm(cfg: ExperimentConfig, fs: FeatureSet, dev: DeviceData) -> Arm:
    """The reference implementation with the same loss functions and optimizer settings."""
    device = dev.mask.device
    torch.manual_seed(0)
    model = ReferenceMRCCL(cfg, fs.dims, fs.n_classes).to(device)
    temps = losses.Temperatures.from_config(cfg.loss, fs.modalities).to(device)
    params = [*model.parameters(), *temps.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    labels = torch.as_tensor(fs.labels, dtype=torch.long, device=device)  # (N,)
    _, autocast = _autocast(cfg, device)

    def loss(pos: Tensor) -> Tensor:
        x = {m: v[pos] for m, v in dev.features.items()}  # m -> (B, D_m)
        with autocast:
            s, ovr, logits = model(x)
            cls = losses.classification_loss(logits, labels[pos])
            return cls + losses.modality_contrastive(s, ovr, None, fs.modalities, temps)

    def update(value: Tensor) -> None:
        opt.zero_grad()
        value.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip or float("inf"))
        opt.step()

    return Arm("baseline (nn.TransformerEncoder reference)", loss, update, opt, model)


def phase_seconds(arm: Arm, order: list[Tensor], sync: Callable[[], None] | None) -> list[tuple[str, float]]:
    """Mean seconds per step of forward+loss, backward, grad clipping and optimizer step.

    Mirrors the update of both arms phase by phase (same calls, with a clock between them).
    """
    params = [p for g in arm.optimizer.param_groups for p in g["params"]]
    names = ("forward + loss", "zero_grad + backward", "grad clip", "optimizer step")
    sums = dict.fromkeys(names, 0.0)

    def now() -> float:
        if sync is not None:
            sync()  # so a phase's time is its own device work, not the previous phase's
        return time.perf_counter()

    for pos in order:
        t0 = now()
        loss = arm.loss(pos)
        t1 = now()
        arm.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = now()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        t3 = now()
        arm.optimizer.step()
        t4 = now()
        for name, dt in zip(names, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            sums[name] += dt
    return [(k, v / len(order)) for k, v in sums.items()]


def _dead_share(arm: Arm, pos: Tensor) -> tuple[int, int]:
    """(elements whose gradient is exactly 0, all elements) after one backward."""
    arm.optimizer.zero_grad(set_to_none=True)
    arm.loss(pos).backward()
    grads = [p.grad for g in arm.optimizer.param_groups for p in g["params"] if p.grad is not None]
    return sum(int((g == 0).sum()) for g in grads), sum(g.numel() for g in grads)


def _resolve(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@BENCHMARKS.register("epoch")
def bench_epoch(opts: BenchOptions) -> BenchResult:
    """Seconds per 5,030-sample fine-tuning epoch, ours vs the reference, same data, same run."""
    device = _resolve(opts.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    cfg = _config(opts, device)
    fs = generate_synthetic(cfg.data.synthetic, seed=0)
    dev = DeviceData.from_featureset(fs, device)
    order = list(batches(fs.n_samples, cfg.optim.batch_size, generator=torch.Generator().manual_seed(0), device=device))
    steps = opts.steps or (3 if opts.smoke else 30)
    arms = [baseline_arm(cfg, fs, dev), ours_arm(cfg, fs, dev)]
    if resolve_capture(cfg, device):
        arms.append(ours_arm(cfg, fs, dev, capture=False))  # what `runtime.capture: auto` is measured against
    for arm in arms:  # warm-up: optimizer state, first-touch page faults, and the capture of ours
        arm.steps(order[: WARMUP_STEPS + 2])
    per_step: dict[str, list[float]] = {a.label: [] for a in arms}
    for r in range(opts.repeats):
        chunk = [order[(r * steps + i) % len(order)] for i in range(steps)]
        for arm in arms[r % len(arms) :] + arms[: r % len(arms)]:  # rotate: no arm always runs first
            per_step[arm.label].append(timed(lambda arm=arm, chunk=chunk: arm.steps(chunk), sync=sync))
    n_steps = len(order)
    rows = [
        Row(a.label, tuple(t / steps * n_steps for t in per_step[a.label]), "s/epoch", f"{steps} steps/repeat")
        for a in arms
    ]
    result = BenchResult(
        "epoch",
        f"MR-CCL fine-tuning epoch ({fs.n_samples} samples, batch {cfg.optim.batch_size}, dims {fs.dims}, "
        f"{device.type}{', bf16 autocast' if opts.bf16 else ''})",
        rows=rows,
        variant="-".join(p for p in ("" if device.type == "cpu" else device.type, "bf16" if opts.bf16 else "") if p),
    )
    result.ratios.append(ratio(rows[0], rows[1], "speedup", "baseline s/epoch ÷ ours s/epoch", goal=">= 5"))
    if len(rows) > 2:
        result.ratios.append(
            ratio(rows[2], rows[1], "capture_gain", "ours uncaptured ÷ ours captured (> 1: auto's capture pays)")
        )
    floor = _floor_row(arms[1], device, n_steps, repeats=opts.repeats, smoke=opts.smoke)
    result.rows.append(floor)
    result.ratios.append(
        ratio(rows[1], floor, "above_floor", "ours s/epoch ÷ its memory-traffic floor", goal="<= 2 on a GPU")
    )
    result.notes += _notes(arms, order, steps, n_steps, opts, sync)
    return result


def _floor_row(ours: Arm, device: torch.device, n_steps: int, *, repeats: int, smoke: bool) -> Row:
    """The memory floor of ours per epoch, one sample per repeat (each its own bandwidth measurement)."""
    n_params = sum(p.numel() for g in ours.optimizer.param_groups for p in g["params"])
    nbytes = (64 if smoke else 1024) * 2**20 if device.type == "cuda" else (16 if smoke else 256) * 2**20
    samples = tuple(step_bytes(n_params) / copy_bandwidth(device, nbytes=nbytes) * n_steps for _ in range(repeats))
    note = (
        f"{PASSES} passes over {n_params / 1e6:.1f} M fp32 parameters per step ({step_bytes(n_params) / 1e9:.2f} GB) "
        "at the copy bandwidth measured in this run (benchmarks/floor.py)"
    )
    return Row("memory floor of a step", samples, "s/epoch", note)


def _notes(
    arms: list[Arm], order: list[Tensor], steps: int, n_steps: int, opts: BenchOptions, sync: Callable | None
) -> list[str]:
    extrapolated = steps < n_steps
    opt = arms[1].optimizer
    kind = f"{type(opt).__name__} (fused={opt.defaults.get('fused')}, foreach={opt.defaults.get('foreach')})"
    notes = [
        f"Ours uses the trainer's optimizer as `make_optimizer` builds it today: {kind}.",
        "",
        f"Timed {steps} optimizer steps per repeat x {opts.repeats} repeats per arm (arms interleaved, "
        f"rotating order), scaled to the {n_steps} steps of one epoch"
        + (" (extrapolated: a full epoch per arm and repeat is too slow here)." if extrapolated else "."),
        "",
        "Where a step's time goes (mean of a few separate, phase-timed steps):",
    ]
    prof = order[: 2 if opts.smoke else 4]
    phases = {arm.label: phase_seconds(arm, prof, sync) for arm in arms}
    for arm in arms:
        notes += ["", f"*{arm.label}*", "", *pct_table(phases[arm.label], header="phase")]
    ours = phases[arms[1].label]
    top, top_s = max(ours, key=lambda kv: kv[1])
    notes += [
        "",
        f"In ours, **{top}** dominates ({100 * top_s / sum(v for _, v in ours):.0f}% of a step). The length-1 "
        "layers shrink forward and backward, and hold no Q/K rows of `in_proj`, so the update skips them too.",
    ]
    dead, total = _dead_share(arms[1], order[0])
    notes += [
        "",
        f"Gradient elements that are exactly 0 in ours after one backward: {dead / 1e6:.1f}M of {total / 1e6:.1f}M "
        f"({100 * dead / max(total, 1):.0f}%). Each still passes through zero-filling, grad clipping and Adam every "
        "step (the Q/K rows the length-1 layers used to hold were 41-44% of the gradient here).",
    ]
    return notes
