"""A trial whose learning rate makes training blow up ends as a failed trial with a reason, not a crash.

The config caps `optim.lr` at 10 (1e6 is refused as bad input: tests/test_cli_errors.py), so the
absurd rate here is the cap itself with decoupled weight decay: AdamW multiplies every weight by
(1 - lr * weight_decay) = -9 per step, the weights overflow within an epoch and the loss turns NaN.
"""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from mer_core.configs import load_config
from mer_core.data import load_data
from mer_core.errors import ConfigError
from mer_core.train import run
from tests.sweep_helpers import SMALL_SET, children_of, run_sweep_here, write_sweep

EXPLODING = {"optim.optimizer": "adamw", "optim.weight_decay": 1.0}  # with lr 10: weights x(-9) per step
SANE_LR, ABSURD_LR = 1.0e-3, 10.0
FAST = [
    "data.folds=1",
    "data.synthetic.n_labelled=240",
    "data.synthetic.n_unlabelled=300",
    "data.synthetic.dims={audio: 24, text: 32, video: 16}",
    "optim.max_epochs=3",
    "optim.pretrain_epochs=0",
    "model.ff_dim=64",
    "model.hidden_dim=32",
    "self_training.oversample_to=80",
    "runtime.threads=1",
]


def test_absurd_lr_returns_diverged_with_a_reason():
    sets = [*FAST, *(f"{k}={v}" for k, v in EXPLODING.items()), f"optim.lr={ABSURD_LR}"]
    cfg = load_config(None, sets)
    result = run(cfg, load_data(cfg.data))  # must not raise
    assert result.status == "diverged"
    assert "non-finite loss" in result.failure_reason and "fold 0" in result.failure_reason
    assert not result.ok


def test_lr_beyond_the_cap_is_bad_input_not_a_trial():
    with pytest.raises(ConfigError, match=r"optim\.lr: out of range.*given: 1000000\.0"):
        load_config(None, ["optim.lr=1e6"])


@pytest.mark.slow
def test_a_diverging_trial_is_failed_with_reason_and_the_sweep_completes(tmp_path, mlflow_uri):
    """Grid over {sane, absurd} lr: exactly one trial of each, whatever order Ray runs them in."""
    (tmp_path / "space.yaml").write_text(
        f"params:\n  optim.lr: {{type: categorical, choices: [{SANE_LR}, {ABSURD_LR}]}}\n"
    )
    spec = write_sweep(
        tmp_path,
        "diverge",
        set={**SMALL_SET, **EXPLODING, "optim.max_epochs": 2, "optim.pretrain_epochs": 0},
        search_space="space.yaml",
        search={"algorithm": "grid", "num_samples": 2, "seed": 0},
        scheduler={"kind": "none"},
    )
    uri = mlflow_uri
    proc = run_sweep_here([str(spec), "--tracking-uri", uri], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trials 2/2 ended: 1 done, 0 pruned, 1 failed" in proc.stderr, proc.stderr[-3000:]

    parent, children = children_of(MlflowClient(uri), "diverge")
    by_lr = {float(c.data.params["optim.lr"]): c for c in children}
    assert sorted(by_lr) == [SANE_LR, ABSURD_LR]
    bad, good = by_lr[ABSURD_LR], by_lr[SANE_LR]
    assert bad.info.status == "FAILED"
    assert bad.data.tags["mersweep.status"] == "diverged"
    assert "non-finite loss" in bad.data.tags["mersweep.failure_reason"]
    assert good.info.status == "FINISHED" and good.data.tags["mersweep.status"] == "ok"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mersweep.best_run_id"] == good.info.run_id
