"""`python -m mer_core.train CONFIG --set ... --save DIR` end to end, on small synthetic data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mer_core.configs import load_config
from mer_core.data import load_data
from mer_core.models import build_model
from mer_core.train import TrialResult
from mer_core.train.cli import save_run
from mer_core.train.effective import effective_config
from tests.sweep_helpers import ROOT, SMALL_DATA, SMALL_SET

CONFIG = ROOT / "mer_core/configs/mrccl.yaml"
EPOCH_LINE = re.compile(r"^\[(\w+) fold (\d+) epoch +(\d+)\] train/loss [\d.]+ +val/weighted_f1 ([\d.]+)")


def _sets() -> list[str]:
    """SMALL_DATA / SMALL_SET as `--set` strings (maps as YAML flow mappings, as a user types them)."""
    values = {f"data.{k}": v for k, v in SMALL_DATA.items() if k != "synthetic"}
    values |= {f"data.synthetic.{k}": v for k, v in SMALL_DATA["synthetic"].items()}
    values |= {**SMALL_SET, "optim.max_epochs": 3, "optim.patience": 3}
    out = []
    for key, value in values.items():
        text = yaml.safe_dump(value, default_flow_style=True).strip() if isinstance(value, dict) else str(value)
        out.append(f"{key}={text.removesuffix('...').strip()}")
    return out


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "mer_core.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real training run through the CLI (shared by the tests below)."""
    work = tmp_path_factory.mktemp("train")
    sets = [a for s in _sets() for a in ("--set", s)]
    proc = _train([str(CONFIG), *sets, "--save", "saved"], cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "saved", proc, load_config(CONFIG, _sets())


@pytest.mark.slow
def test_progress_on_stderr_and_metrics_table_on_stdout(trained):
    _, proc, cfg = trained
    epochs = [m for m in map(EPOCH_LINE.match, proc.stderr.splitlines()) if m]
    stages = [m.group(1) for m in epochs]
    assert stages.count("finetune") >= 1, proc.stderr[-2000:]
    assert cfg.self_training.rounds == 0 or "self_training_1" in stages
    assert all(int(m.group(3)) <= cfg.optim.max_epochs for m in epochs)
    assert "Traceback" not in proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "status: ok"
    table = dict(line.split()[:2] for line in out[1:] if line.startswith("  val/"))
    assert {"val/weighted_f1", "val/accuracy", "val/f1_fusion"} <= set(table)
    assert 0.0 <= float(table["val/weighted_f1"]) <= 1.0


@pytest.mark.slow
def test_saved_model_loads_into_a_fresh_model(trained):
    saved, _, cfg = trained
    state = torch.load(saved / "model.pt", weights_only=True)
    data = load_data(cfg.data)
    model = build_model(cfg.model, data.dims, len(data.class_names))
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state, strict=True)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, state[name])


@pytest.mark.slow
def test_saved_config_metrics_and_logits(trained):
    saved, proc, cfg = trained
    assert load_config(saved / "config.yaml") == effective_config(cfg)  # device and fold seed written out

    metrics = json.loads((saved / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    printed = next(line.split()[1] for line in proc.stdout.splitlines() if line.strip().startswith("val/weighted_f1"))
    assert f"{metrics['val/weighted_f1']:.4f}" == printed

    data = load_data(cfg.data)
    with np.load(saved / "val_logits.npz") as npz:
        labels, index = npz["labels"], npz["index"]
        n_val = len(labels)
        assert n_val > 0 and index.shape == (n_val,)
        np.testing.assert_array_equal(labels, data.labels[index])  # each row is the sample it says it is
        for head in (*data.modalities, "fusion"):
            logits = npz[f"logits/{head}"]
            assert logits.shape == (n_val, len(data.class_names)) and np.isfinite(logits).all()


def test_bad_input_exits_2_and_saves_nothing(tmp_path):
    proc = _train([str(CONFIG), "--set", "model.fusion=nope", "--save", "saved"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.fusion"), proc.stderr
    assert not (tmp_path / "saved").exists()


def test_cuda_without_a_gpu_is_refused_before_anything_is_printed(tmp_path, monkeypatch, capsys):
    from mer_core.cli_util import guarded_main
    from mer_core.train.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status = guarded_main(main, ["--set", "runtime.device=cuda", "--save", str(tmp_path / "saved")])
    lines = capsys.readouterr().err.splitlines()
    assert status == 2 and len(lines) == 1, lines  # was: the data line first, then the error
    assert lines[0].startswith("error: runtime.device: unavailable") and not (tmp_path / "saved").exists()


def test_compiled_model_state_saves_loadable_keys(tmp_path):
    """runtime.compile=true trains a torch.compile wrapper, whose state dict keys carry `_orig_mod.`."""
    cfg = load_config(CONFIG, [*_sets(), "runtime.compile=true"])
    dims, classes = {"audio": 24, "text": 32, "video": 16}, ("a", "b", "c")
    model = build_model(cfg.model, dims, len(classes))
    compiled_state = torch.compile(model).state_dict()  # wrapping compiles nothing until the first call
    assert all(k.startswith("_orig_mod.") for k in compiled_state)
    result = TrialResult("ok", {}, [], (*dims, "fusion"), classes, model_state=dict(compiled_state))
    save_run(result, cfg, tmp_path)
    fresh = build_model(cfg.model, dims, len(classes))
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True), strict=True)
