"""The datasheet beside the recorded curves: what was run, how long it took, on which machine.

Rewritten (atomically) after every chunk, from the chunk files themselves, so it always describes
what the data folder holds.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import numpy as np

from benchmarks.curves.tasks import CHUNK, EPOCHS, N_CONFIGS, SAMPLE_SEED, SET, SPACE, TASKS

DATASHEET = "DATASHEET.md"


def machine() -> str:
    """CPU model and count, Python and torch versions."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False, timeout=10).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), model)
    except (OSError, subprocess.SubprocessError):
        pass
    return (
        f"{model}, {os.cpu_count()} logical CPUs (shared with other jobs), Python {platform.python_version()}, "
        f"torch {torch.__version__}, 1 torch thread"
    )


def write_datasheet(folder: Path) -> Path:
    """Describe the chunks under `folder` in `folder/DATASHEET.md`; returns its path."""
    lines = [
        "# Recorded learning curves of MR-CCL on uci-mfeat: datasheet",
        "",
        "Recorded by `python -m benchmarks.curves.record` (resumable: rerun it to continue; finished chunks are "
        "kept). Read by `python -m benchmarks search_replay`.",
        "",
        f"- Configurations: the first {N_CONFIGS} points of a scrambled Sobol sample (Optuna QMCSampler, "
        f"seed {SAMPLE_SEED}; the conditional `model.fusion_rank` from its seeded random fallback) of "
        f"`{SPACE.relative_to(SPACE.parents[1])}`; the same configurations on every task.",
        "- Training: `mer_core/configs/mrccl.yaml` with "
        + ", ".join(f"`{k}={v}`" for k, v in SET.items())
        + f", `seed=0`: {EPOCHS} fine-tuning epochs, no early stopping, no scheduler; one run per configuration "
        "and task, through the recipe's single executor (what a sweep's trial runs).",
        "- Per epoch: `val_f1` (val/weighted_f1 of the voted heads, the sweep metric), `val_loss`, `val_acc`, "
        "`train_loss`, and `test_f1` (the same model's weighted F1 on the held-out test split after that epoch). "
        "NaN after a diverged epoch.",
        f"- Storage: `<task>/chunk-NNNN.npz` (compressed), {CHUNK} configurations per chunk: `config_index`, "
        "`seconds`, `status`, `curve:<name>` (configs x epochs, float32), `param:<dotted name>` (NaN or '' where "
        "a conditional parameter is inactive).",
        f"- Machine: {machine()}.",
        "",
        "| task | views | labelled share | configurations recorded | wall time (sum of its runs) | "
        "configs/hour | note |",
        "|---|---|---|---|---|---|---|",
    ]
    total_n, total_s = 0, 0.0
    for task in TASKS.values():
        n, seconds = 0, 0.0
        for path in sorted((folder / task.name).glob("chunk-*[0-9].npz")):
            with np.load(path) as z:
                n += len(z["config_index"])
                seconds += float(z["seconds"].sum())
        total_n, total_s = total_n + n, total_s + seconds
        rate = f"{n / seconds * 3600:.0f}" if seconds else "-"
        lines.append(
            f"| {task.name} | {', '.join(task.views)} | {task.labelled_fraction:g} | {n} | {seconds / 3600:.2f} h "
            f"| {rate} | {task.note} |"
        )
    lines += [
        "",
        f"In all: {total_n} runs, {total_s / 3600:.2f} h of wall time (the runs one after another, niced, on a "
        "machine shared with other jobs: the rate says more about the load than about the model).",
        "",
    ]
    path = folder / DATASHEET
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return path
