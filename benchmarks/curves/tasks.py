"""What the recorded curve benchmark trains: its tasks, its configurations and their fixed settings.

A *task* is a dataset view: uci-mfeat (real digits that ship with the install) with a subset of its
six views and a share of its labels kept. Every task trains the same configurations, sampled once
from `search_spaces/quick.yaml` (the space the live real-data benchmark and the quickstart search),
so a configuration's curves on different tasks sit side by side.

Every configuration trains to its end: `optim.patience` equals `optim.max_epochs`, no scheduler
stops it, so the table holds whole curves and a replay can stop them wherever its rule says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SPACE = ROOT / "search_spaces/quick.yaml"
BASE = ROOT / "mer_core/configs/mrccl.yaml"
DATA_DIR = Path(__file__).resolve().parent / "data"
EPOCHS = 12  # fine-tuning epochs per configuration (sized so 3 tasks x 500 configs fit in ~2 h of one core)
SAMPLE_SEED = 2026  # seed of the configuration sample (scrambled Sobol over the space)
N_CONFIGS = 500  # configurations per task
CHUNK = 20  # configurations per chunk file: the unit a restart skips or redoes

# As the live real-data benchmark (`search_efficiency`): no contrastive pre-training, no
# self-training rounds, a small feed-forward; every epoch a fine-tuning epoch of the same work.
SET: Mapping[str, Any] = {
    "optim.batch_size": 64,
    "model.ff_dim": 128,
    "optim.max_epochs": EPOCHS,
    "optim.patience": EPOCHS,  # no early stopping inside a trial: the curve runs to its end
    "optim.pretrain_epochs": 0,
    "self_training.rounds": 0,
}


@dataclass(frozen=True)
class Task:
    """One recorded task: a name and the `data` section of its configs."""

    name: str
    views: tuple[str, ...]
    labelled_fraction: float
    note: str

    def data(self) -> dict[str, Any]:
        """The config's `data` section: 20% held out for test, half of the labelled rest for validation."""
        return {
            "source": "uci-mfeat",
            "seed": 0,
            "folds": 1,
            "test_fraction": 0.2,
            "labelled_fraction": self.labelled_fraction,
            "val_fraction": 0.5,
            "max_unlabelled": 0,
            "uci": {"views": list(self.views)},
        }


TASKS: Mapping[str, Task] = {
    t.name: t
    for t in (
        Task("mfeat-fzm-50", ("fou", "zer", "mor"), 0.5, "the live benchmark's views; 400 train, 400 val digits"),
        Task("mfeat-km-20", ("kar", "mor"), 0.2, "few labels: 160 train, 160 val digits"),
        Task("mfeat-pz-30", ("pix", "zer"), 0.3, "the widest view (240 pixel averages); 240 train, 240 val digits"),
    )
}


def sample_configs(n: int = N_CONFIGS, *, seed: int = SAMPLE_SEED) -> list[dict[str, Any]]:
    """`n` configurations of `SPACE` (dotted name -> value), scrambled Sobol from `seed`, in order.

    The first k of a larger sample are the k of a smaller one, so a longer recording extends a shorter one.
    """
    import optuna

    from sweeps.space import load_space, make_sampler

    space = load_space(SPACE)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=make_sampler("qmc", seed, space=space), direction="maximize")
    configs = []
    for _ in range(n):
        trial = study.ask()
        space.define_by_run(trial)
        configs.append(space.sample_config_overrides(trial.params))
        study.tell(trial, 0.0)
    return configs
