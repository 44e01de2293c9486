"""By-hand micro-benchmark: K members trained fused vs K sequential `run` calls (same configs).

    python -m benchmarks.population_micro [--k 8] [--threads 1] [--device cpu] [--dropout]

Quickstart-like configs (bundled UCI digits, 20% labelled, the quickstart's `set:` overrides) with
per-member lr, weight decay, contrastive weight, voting weights and seed drawn from a seeded RNG;
`--dropout` also gives each member its own dropout rate. Prints both wall times, their ratio and
the largest |Δ val/weighted_f1| between a member and its own single run. Wall and process CPU
time are both printed: on a shared machine the CPU time is the steadier figure. Not a registered
benchmark (the `fused` entry of `python -m benchmarks` is): a quick check while working on
`mer_core.train.fused`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mer_core.configs import load_config, with_overrides
from mer_core.data import load_data
from mer_core.train import run
from mer_core.train.fused import train_population

QUICKSTART = [
    "data.source=uci-mfeat",
    "data.labelled_fraction=0.2",
    "data.folds=1",
    "data.val_fraction=0.25",
    "optim.batch_size=64",
    "model.ff_dim=256",
    "model.hidden_dim=64",
    "optim.max_epochs=15",
    "optim.patience=4",
    "optim.pretrain_epochs=2",
    "self_training.rounds=1",
    "self_training.oversample_to=150",
]


def member_sets(k: int, *, threads: int, device: str, dropout: bool, seed: int = 0) -> list[list[str]]:
    """The `--set` strings of K quickstart-like members (member i is the same for every k)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(k):
        sets = [
            *QUICKSTART,
            f"seed={i}",
            f"runtime.threads={threads}",
            f"runtime.device={device}",
            f"optim.lr={10 ** rng.uniform(-4, -2):.6g}",
            f"optim.weight_decay={rng.uniform(0, 1e-3):.6g}",
            f"loss.w_modality={rng.uniform(0, 2):.4g}",
            f"voting.weights.fusion={rng.uniform(0, 1):.4g}",
        ]
        if dropout:
            sets.append(f"model.dropout={rng.uniform(0, 0.5):.4g}")
        out.append(sets)
    return out


def _configs(k: int, *, threads: int, device: str, dropout: bool, seed: int = 0) -> list:
    return [load_config(None, s) for s in member_sets(k, threads=threads, device=device, dropout=dropout, seed=seed)]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.population_micro")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dropout", action="store_true")
    p.add_argument("--skip-sequential", action="store_true")
    args = p.parse_args()
    cfgs = _configs(args.k, threads=args.threads, device=args.device, dropout=args.dropout)
    data = load_data(cfgs[0].data)
    warm = {"optim.max_epochs": 1, "optim.pretrain_epochs": 0, "self_training.rounds": 0}
    train_population([with_overrides(c, warm) for c in cfgs[:2]], data)  # warm-up: imports, allocator, vmap
    run(with_overrides(cfgs[0], warm), data)
    (t_fused, c_fused), fused = _timed(lambda: train_population(cfgs, data))
    print(f"fused      K={args.k}: wall {t_fused:7.2f} s  cpu {c_fused:7.2f} s  epochs {[r.epochs for r in fused]}")
    if args.skip_sequential:
        return
    (t_seq, c_seq), single = _timed(lambda: [run(c, data) for c in cfgs])
    print(f"sequential K={args.k}: wall {t_seq:7.2f} s  cpu {c_seq:7.2f} s  epochs {[r.epochs for r in single]}")
    print(f"ratio sequential/fused: wall {t_seq / t_fused:.2f}x  cpu {c_seq / c_fused:.2f}x")
    pairs = zip(single, fused, strict=True)
    gap = max(abs(a.metrics["val/weighted_f1"] - b.metrics["val/weighted_f1"]) for a, b in pairs)
    print(f"max |d val/weighted_f1| member vs its single run: {gap:.2e}")


def _timed(fn):
    """((wall s, process CPU s), result): CPU time is the fairer figure on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - wall, time.process_time() - cpu), out


if __name__ == "__main__":
    main()
