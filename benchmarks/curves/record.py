"""`python -m benchmarks.curves.record`: record whole learning curves of sampled configurations, resumably.

For every task (`benchmarks.curves.tasks.TASKS`) and every configuration of the fixed sample, one
training run of the real recipe (`mer_core.train.recipe.train_members`, the single executor a
sweep's trial uses) to its last epoch, with per-epoch validation metrics (what a sweep's scheduler
sees) and the held-out test split's weighted F1 after every epoch (what the configuration would be
worth if a sweep stopped it there; the recipe itself scores the test split once, at the end).

Work is cut into chunks of `CHUNK` configurations of one task, each its own compressed `.npz`
(`data/<task>/chunk-NNNN.npz`), written to a temporary name and renamed, so a chunk file is either
whole or absent. A restart skips the chunks that exist. Chunks run round-robin over the tasks, so a
recording stopped early still covers every task alike.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.curves.datasheet import write_datasheet
from benchmarks.curves.tasks import BASE, CHUNK, DATA_DIR, EPOCHS, N_CONFIGS, SAMPLE_SEED, SET, TASKS, sample_configs

log = logging.getLogger("mersweep.curves")

CURVES = ("val_f1", "val_loss", "val_acc", "test_f1", "train_loss")  # per-epoch arrays in every chunk
SOURCE = {
    "val_f1": "val/weighted_f1",
    "val_loss": "val/loss",
    "val_acc": "val/accuracy",
    "test_f1": "test/weighted_f1",
    "train_loss": "train/loss",
}


def chunk_path(folder: Path, task: str, chunk: int) -> Path:
    return folder / task / f"chunk-{chunk:04d}.npz"


def finished(path: Path, rows: int) -> bool:
    """Whether `path` holds a whole chunk of `rows` configurations (a shorter run's last chunk is redone)."""
    if not path.exists():
        return False
    with np.load(path) as z:
        return len(z["config_index"]) >= rows


def _executor_with_test(cfg: Any, data: Any) -> Any:
    """The single executor, plus: after every validation prediction, the same model predicts the test rows.

    The recipe predicts validation rows (`dev=None`) once per fine-tuning epoch, right before it
    reports that epoch; pre-training and self-training (which also predict with `dev=None`) are off
    here, so every such call is an epoch's evaluation.
    """
    from mer_core.train.device_data import resolve_device
    from mer_core.train.recipe import HeldOut
    from mer_core.train.single import SingleExecutor

    device = resolve_device(cfg.runtime)
    held_out = HeldOut.of(data, cfg.missing, device)
    if held_out is None:
        raise ValueError("the curve benchmark needs a held-out test split (data.test_fraction > 0)")

    class CurveExecutor(SingleExecutor):
        test_logits: dict[int, dict[str, np.ndarray]]  # member index -> head -> (T, C), set by each evaluation

        def predict(self, members, rows, *, dev=None):  # type: ignore[no-untyped-def]
            out = super().predict(members, rows, dev=dev)
            if dev is None:
                tested = super().predict(members, [held_out.rows] * len(members), dev=held_out.dev)
                self.test_logits = {m.index: logits for m, logits in zip(members, tested, strict=True)}
            return out

    return CurveExecutor.for_config(cfg, device), held_out


def record_one(base: Mapping[str, Any], overrides: Mapping[str, Any], data: Any) -> tuple[dict[str, np.ndarray], str]:
    """One configuration to its last epoch: (name -> (EPOCHS,) float32 curve, NaN after a divergence; status)."""
    from mer_core.configs import build_config
    from mer_core.train.recipe import train_members, voting_setup
    from mer_core.train.scores import score_logits

    cfg = build_config(base, {**SET, **overrides})
    executor, held_out = _executor_with_test(cfg, data)
    curves = {k: np.full(EPOCHS, np.nan, np.float32) for k in CURVES}
    # The weights the recipe votes the validation heads with, so val_f1 and test_f1 score the same ensemble.
    weights = voting_setup(cfg.voting, (*data.modalities, "fusion"), cls_heads=cfg.loss.cls_heads)

    def report(index: int, metrics: Mapping[str, Any]) -> None:
        epoch = int(metrics["epoch"]) - 1
        test = score_logits(
            executor.test_logits[index],
            held_out.labels,
            weights,
            space=cfg.voting.space,
            class_names=data.class_names,
            split="test",
        )
        for k, name in SOURCE.items():
            value = test.get(name) if name.startswith("test/") else metrics.get(name)
            if value is not None:
                curves[k][epoch] = value

    (result,) = train_members([cfg], data, executor, report=report)
    return curves, result.status


def _chunk_arrays(configs: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, np.ndarray]:
    """One column per space parameter (NaN / empty string where a conditional one is inactive)."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        values = [c.get(name) for c in configs]
        if all(v is None or isinstance(v, (int, float)) for v in values):
            out[f"param:{name}"] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        else:
            out[f"param:{name}"] = np.array(["" if v is None else str(v) for v in values])
    return out


def record_chunk(folder: Path, task: str, chunk: int, configs: Sequence[Mapping[str, Any]], names: Sequence[str]):
    """Train chunk `chunk` of `task` and write it atomically; returns its seconds."""
    from mer_core.configs import build_config, read_yaml
    from mer_core.data.loading import load_data

    base = read_yaml(BASE)
    base = {**base, "data": TASKS[task].data()}
    data = load_data(build_config(base, dict(SET)).data)
    started = time.perf_counter()
    lo = chunk * CHUNK
    rows = list(range(lo, min(lo + CHUNK, len(configs))))
    curves = {k: np.zeros((len(rows), EPOCHS), np.float32) for k in CURVES}
    seconds = np.zeros(len(rows), np.float64)
    status = []
    for j, i in enumerate(rows):
        t0 = time.perf_counter()
        one, st = record_one(base, configs[i], data)
        seconds[j] = time.perf_counter() - t0
        status.append(st)
        for k in CURVES:
            curves[k][j] = one[k]
    path = chunk_path(folder, task, chunk)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        config_index=np.array(rows, np.int64),
        seconds=seconds,
        status=np.array(status),
        **{f"curve:{k}": v for k, v in curves.items()},
        **_chunk_arrays([configs[i] for i in rows], names),
    )
    os.replace(tmp, path)
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.curves.record", description=__doc__.splitlines()[0])
    p.add_argument("--configs", type=int, default=N_CONFIGS, help=f"configurations per task (default {N_CONFIGS})")
    p.add_argument("--tasks", nargs="*", default=list(TASKS), help=f"tasks (default all: {', '.join(TASKS)})")
    p.add_argument("--out", type=Path, default=DATA_DIR, help=f"data folder (default {DATA_DIR})")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown or args.configs < 1:
        field, allowed, given = (
            ("--tasks", ", ".join(TASKS), unknown[0]) if unknown else ("--configs", "an integer >= 1", args.configs)
        )
        print(f"error: {field} must be {allowed}; got {given!r}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    import torch

    from benchmarks.curves.tasks import SPACE
    from sweeps.space import load_space

    torch.set_num_threads(args.threads)
    configs = sample_configs(args.configs, seed=SAMPLE_SEED)
    names = load_space(SPACE).names
    n_chunks = -(-args.configs // CHUNK)
    for chunk in range(n_chunks):
        for task in args.tasks:
            rows = min(CHUNK, args.configs - chunk * CHUNK)
            if finished(chunk_path(args.out, task, chunk), rows):
                continue
            took = record_chunk(args.out, task, chunk, configs, names)
            log.info("%s chunk %d/%d: %d configs in %.0f s", task, chunk + 1, n_chunks, rows, took)
            write_datasheet(args.out)
    write_datasheet(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
