"""The bad-input table of tests/test_cli_errors.py: each case a CLI run that must exit 2.

A case names the program, its arguments, the files it finds in its working folder (a sweep
YAML built by `write_sweep`, a features folder with one defect) and what its one error line must
name. The runner lives in test_cli_errors.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mer_core.configs.fields import FrozenDict
from mer_core.configs.schema import SyntheticConfig
from mer_core.data import write_features
from mer_core.data.synthetic import generate_synthetic
from tests.sweep_helpers import SMALL_DATA, SMALL_SET


@dataclass(frozen=True)
class Case:
    """One bad input: files to write in the working folder, the arguments, what stderr names.

    Texts (args, names, files and the sweep) may hold `{port}` (a local port nobody listens on)
    and `{feats}` (the features folder of `features`), filled in when the case runs.
    """

    args: list[str]
    names: tuple[str, ...]  # fragments the one-line message must contain: the culprit and the value given
    files: dict[str, str] = field(default_factory=dict)  # relative path -> text, written before the run
    sweep: dict | None = None  # write_sweep(overrides) as "bad.yaml" (None: no sweep file)
    train: bool = False  # python -m mer_core.train instead of run_sweep.py
    features: str | None = None  # build a MERTools feature folder next to the working folder, broken this way


# --- the features folder: a valid MERTools layout (audio 4-d, text 3-d; classes a, b, c), then one defect ---
FEATURE_DIMS = {"audio": 4, "text": 3}
FEATURE_CLASSES = ("a", "b", "c")
FEATURES_DATA = {
    "source": "features",
    "folds": 1,
    "features": {"root": "{feats}", "modalities": {"audio": "audio", "text": "text"}},
}
VICTIM = "syn0000001"  # the sample whose audio file a defect replaces


def _data_with(**features) -> dict:
    return {**FEATURES_DATA, "features": {**FEATURES_DATA["features"], **features}}


def _save_audio(root: Path, array: np.ndarray) -> None:
    np.save(root / "audio" / f"{VICTIM}.npy", array.astype(np.float32))


DEFECTS: dict[str, Callable[[Path], None]] = {
    "none": lambda root: None,  # the defect is in the sweep (classes, modalities), not the folder
    "dims differ": lambda root: _save_audio(root, np.zeros(7)),
    "2-d features": lambda root: _save_audio(root, np.zeros((2, 4))),
    "nan": lambda root: _save_audio(root, np.array([0.0, np.nan, 0.0, 0.0])),
    "no label file": lambda root: (root / "train-label.csv").unlink(),
}


def make_features(root: Path, defect: str) -> Path:
    """A small feature folder written by `write_features`, then broken by DEFECTS[defect]."""
    syn = SyntheticConfig(n_labelled=24, n_unlabelled=6, dims=FrozenDict(FEATURE_DIMS), classes=FEATURE_CLASSES)
    write_features(generate_synthetic(syn, seed=0), root)
    DEFECTS[defect](root)
    return root


BAD_SPACE = "params:\n  model.no_such_field: {type: float, low: 0.0, high: 1.0}\n"
LR_SPACE = "params:\n  optim.lr: {type: float, low: 1.0e-4, %s}\n"
FEATURES_CONFIG = "data:\n  source: features\n  features: {root: '{feats}', modalities: {audio: audio, text: text}}\n"

CASES = {
    # The sweep file itself
    "yaml-syntax": Case(
        ["bad.yaml"], ("invalid YAML", "line 2"), files={"bad.yaml": "name: [unclosed\nkind: search\n"}
    ),
    "yaml-not-a-mapping": Case(["bad.yaml"], ("bad.yaml", "got list"), files={"bad.yaml": "- name\n- kind\n"}),
    "missing-sweep-file": Case(["no_such_sweep.yaml"], ("sweep file not found", "no_such_sweep.yaml")),
    "no-sweep-argument": Case([], ("required", "sweep")),
    # Unknown keys: sweep, nested sweep section, experiment (`set`, base YAML), search space
    "unknown-sweep-key": Case(["bad.yaml"], ("searh", "unknown key"), sweep={"searh": {"num_samples": 3}}),
    "unknown-nested-sweep-key": Case(
        ["bad.yaml"], ("search.algoritm", "unknown key"), sweep={"search": {"algoritm": "tpe"}}
    ),
    "unknown-experiment-key-in-set": Case(
        ["bad.yaml"], ("model.hiden_dim", "hiden_dim"), sweep={"set": {"model.hiden_dim": 64}}
    ),
    "unknown-key-in-base-config": Case(
        ["bad.yaml"],
        ("modle", "base.yaml"),
        files={"base.yaml": "modle: {hidden_dim: 64}\n"},
        sweep={"base": "base.yaml"},
    ),
    "unknown-space-key": Case(
        ["bad.yaml"],
        ("params.optim.lr.hihg", "hihg"),
        files={"space.yaml": LR_SPACE % "hihg: 1.0e-2"},
        sweep={"search_space": "space.yaml"},
    ),
    # Wrong types
    "wrong-type": Case(["bad.yaml"], ("search.num_samples", "'many'"), sweep={"search": {"num_samples": "many"}}),
    "wrong-type-resources": Case(["bad.yaml"], ("resources.cpu", "'lots'"), sweep={"resources": {"cpu": "lots"}}),
    "space-wrong-type": Case(
        ["bad.yaml"],
        ("params.optim.lr.high", "'big'"),
        files={"space.yaml": LR_SPACE % "high: big"},
        sweep={"search_space": "space.yaml"},
    ),
    # Out of range (an absurd learning rate is refused before any trial runs)
    "out-of-range": Case(
        ["bad.yaml"], ("resources.max_concurrent", "given: 0"), sweep={"resources": {"max_concurrent": 0}}
    ),
    "absurd-lr-in-set": Case(["bad.yaml"], ("optim.lr", "1000000.0"), sweep={"set": {"optim.lr": 1.0e6}}),
    "absurd-lr-in-space": Case(
        ["bad.yaml"],
        ("params.optim.lr.high", "1000000.0"),
        files={"space.yaml": LR_SPACE % "high: 1.0e6"},
        sweep={"search_space": "space.yaml"},
    ),
    "max-t-below-grace": Case(
        ["bad.yaml"],
        ("scheduler.max_t", "given: 2"),
        sweep={"scheduler": {"kind": "asha", "grace_period": 5, "max_t": 2}},
    ),
    "grace-beyond-the-longest-trial": Case(
        ["bad.yaml", "--set", "optim.max_epochs=1"],
        ("scheduler.grace_period", "given: 9"),
        sweep={"scheduler": {"kind": "hyperband", "grace_period": 9}},
    ),
    # Names outside a closed list
    "unknown-metric": Case(["bad.yaml"], ("metric", "'val/auc'"), sweep={"metric": "val/auc"}),
    "select-on-test": Case(["bad.yaml"], ("metric", "'test/weighted_f1'"), sweep={"metric": "test/weighted_f1"}),
    "test-fraction-out-of-range": Case(
        ["bad.yaml"], ("data.test_fraction", "0.9"), sweep={"data": {**SMALL_DATA, "test_fraction": 0.9}}
    ),
    "unknown-algorithm": Case(["bad.yaml"], ("search.algorithm", "'bayes'"), sweep={"search": {"algorithm": "bayes"}}),
    "unknown-data-source": Case(["bad.yaml"], ("data.source", "'imagenet'"), sweep={"data": {"source": "imagenet"}}),
    # Search space
    "space-names-missing-field": Case(
        ["bad.yaml"], ("model.no_such_field",), files={"space.yaml": BAD_SPACE}, sweep={"search_space": "space.yaml"}
    ),
    "empty-space": Case(
        ["bad.yaml"], ("params", "{}"), files={"space.yaml": "params: {}\n"}, sweep={"search_space": "space.yaml"}
    ),
    "missing-space-file": Case(["bad.yaml"], ("search_space", "nope.yaml"), sweep={"search_space": "nope.yaml"}),
    # Data
    "missing-data-folder": Case(
        ["bad.yaml"],
        ("data.features.root", "/nonexistent/no_such_features"),
        sweep={"data": _data_with(root="/nonexistent/no_such_features")},
    ),
    "feature-dims-differ": Case(
        ["bad.yaml"],
        ("inconsistent feature dims", f"{VICTIM}.npy has 7"),
        sweep={"data": FEATURES_DATA},
        features="dims differ",
    ),
    "feature-not-a-vector": Case(
        ["bad.yaml"], (f"{VICTIM}.npy", "shape (2, 4)"), sweep={"data": FEATURES_DATA}, features="2-d features"
    ),
    "nan-features": Case(["bad.yaml"], (f"{VICTIM}.npy", "NaN"), sweep={"data": FEATURES_DATA}, features="nan"),
    "label-not-in-class-list": Case(
        ["bad.yaml"],
        ("data.features.classes", "label 'c'"),
        sweep={"data": _data_with(classes=["a", "b"])},
        features="none",
    ),
    "missing-modality-folder": Case(
        ["bad.yaml"],
        ("modality 'video'", "clip-UTT"),
        sweep={"data": _data_with(modalities={"audio": "audio", "video": "clip-UTT"})},
        features="none",
    ),
    "missing-label-file": Case(
        ["bad.yaml"],
        ("data.features.labels", "train-label.csv"),
        sweep={"data": FEATURES_DATA},
        features="no label file",
    ),
    # Known to fail only once the data is loaded: still exit 2 before any trial (was: every trial failed, exit 0)
    "folds-beyond-the-data": Case(
        ["bad.yaml"],
        ("too few for data.folds=10",),
        sweep={"data": {**SMALL_DATA, "folds": 10, "synthetic": {**SMALL_DATA["synthetic"], "n_labelled": 24}}},
    ),
    "space-choice-not-registered": Case(
        ["bad.yaml"],
        ("params.model.fusion.choices[1]", "unknown fusion", "'nope'"),
        files={"space.yaml": "params:\n  model.fusion: {type: categorical, choices: [concat, nope]}\n"},
        sweep={"search_space": "space.yaml"},
    ),
    "set-names-a-modality-the-data-lacks": Case(
        ["bad.yaml"],
        ("set.nee.timesteps.speech", "audio, text, video", "'speech'"),
        sweep={"set": {**SMALL_SET, "nee.timesteps.speech": 5}},
    ),
    "variant-unknown-fusion": Case(
        ["bad.yaml"],
        ("ablation.variants.odd.model.fusion", "unknown fusion", "'nope'"),
        sweep={
            "kind": "ablation",
            "search_space": None,
            "ablation": {"reference": "full", "variants": {"full": {}, "odd": {"model.fusion": "nope"}}, "seeds": [0]},
        },
    ),
    # Tracking and runs/
    "unreachable-tracking-uri": Case(
        ["bad.yaml", "--tracking-uri", "http://127.0.0.1:{port}"], ("tracking.uri", "127.0.0.1:{port}"), sweep={}
    ),
    "unreachable-uri-in-sweep": Case(
        ["bad.yaml"], ("tracking.uri", "127.0.0.1:{port}"), sweep={"tracking": {"uri": "http://127.0.0.1:{port}"}}
    ),
    "unknown-tracking-scheme": Case(
        ["bad.yaml", "--tracking-uri", "foo://host/x"], ("tracking.uri", "postgresql", "foo://host/x"), sweep={}
    ),
    "unreachable-database-uri": Case(
        ["bad.yaml", "--tracking-uri", "postgresql+psycopg2://mlflow:s3cret@127.0.0.1:{port}/mlflow"],
        ("tracking.uri", "unreachable", "***@127.0.0.1:{port}"),
        sweep={},
    ),
    # The Optuna study: its storage (search.storage) and an earlier study to start from (search.warm_start)
    "bad-storage-url": Case(
        ["bad.yaml"], ("search.storage", "'not a url'", "sqlite:///"), sweep={"search": {"storage": "not a url"}}
    ),
    "storage-folder-missing": Case(
        ["bad.yaml"], ("search.storage", "no_such_dir"), sweep={"search": {"storage": "sqlite:///no_such_dir/o.db"}}
    ),
    "unreachable-storage": Case(
        ["bad.yaml"],
        ("search.storage", "cannot read it", "***@127.0.0.1:{port}"),
        sweep={"search": {"storage": "postgresql+psycopg2://optuna:s3cret@127.0.0.1:{port}/optuna"}},
    ),
    "warm-start-missing-folder": Case(
        ["bad.yaml"],
        ("search.warm_start", "no such folder", "'runs/earlier'"),
        sweep={"search": {"warm_start": "runs/earlier"}},
    ),
    "warm-start-not-a-sweep-folder": Case(
        ["bad.yaml"],
        ("search.warm_start", "no optuna.db", "'runs/earlier'"),
        files={"runs/earlier/notes.txt": "x\n"},
        sweep={"search": {"warm_start": "runs/earlier"}},
    ),
    "warm-start-unknown-study": Case(
        ["bad.yaml"],
        ("search.warm_start", "no such study", "'nope'"),
        sweep={"search": {"warm_start": {"storage": "sqlite:///earlier.db", "study": "nope"}}},
    ),
    "warm-start-without-study": Case(
        ["bad.yaml"], ("search.warm_start", "storage"), sweep={"search": {"warm_start": {"storage": "sqlite:///e.db"}}}
    ),
    # Ray: an address where no cluster answers fails in seconds (Ray itself retries for minutes)
    "unreachable-ray-address": Case(
        ["bad.yaml", "--address", "127.0.0.1:{port}"], ("--address", "127.0.0.1:{port}", "ray start --head"), sweep={}
    ),
    "malformed-ray-address": Case(["bad.yaml", "--address", "headnode"], ("--address", "'headnode'", "auto"), sweep={}),
    "runs-dir-is-a-file": Case(["bad.yaml", "--runs-dir", "rf"], ("--runs-dir", "'rf'"), files={"rf": "x\n"}, sweep={}),
    "gpus-beyond-the-local-cluster": Case(
        ["bad.yaml"],
        ("resources.gpu", "given: 1000.0"),
        sweep={"resources": {"cpu": 1, "gpu": 1000, "max_concurrent": 1}},
    ),
    "resume-of-no-sweep": Case(["bad.yaml", "--resume"], ("--resume", "mersweep_state.json"), sweep={}),
    "results-exist-without-resume": Case(
        ["bad.yaml"], ("name", "--resume"), files={"runs/bad/marker.txt": "x\n"}, sweep={}
    ),
    # Command-line flags and --set
    "bad-set-syntax": Case(["bad.yaml", "--set", "model.hidden_dim"], ("--set", "'model.hidden_dim'"), sweep={}),
    "set-unknown-field": Case(["bad.yaml", "--set", "model.hidden_dims=64"], ("model.hidden_dims",), sweep={}),
    "set-out-of-range": Case(["bad.yaml", "--set", "optim.lr=-1"], ("optim.lr", "-1"), sweep={}),
    "set-unknown-registry-name": Case(["bad.yaml", "--set", "model.head=nope"], ("model.head", "'nope'"), sweep={}),
    "set-unknown-sweep-field": Case(["bad.yaml", "--set", "sweep.serch.seed=1"], ("serch",), sweep={}),
    "num-samples-zero": Case(["bad.yaml", "--num-samples", "0"], ("--num-samples", "given: 0"), sweep={}),
    "num-samples-not-a-number": Case(["bad.yaml", "--num-samples", "many"], ("--num-samples", "'many'"), sweep={}),
    "unknown-cli-flag": Case(["bad.yaml", "--bogus"], ("--bogus",), sweep={}),
    # python -m mer_core.train
    "train-missing-config": Case(["no_such_config.yaml", "--save", "out"], ("no_such_config.yaml",), train=True),
    "train-yaml-syntax": Case(
        ["c.yaml", "--save", "out"], ("c.yaml", "invalid YAML"), files={"c.yaml": "optim: {lr: 0.1\n"}, train=True
    ),
    "train-wrong-type": Case(
        ["--set", "model.hidden_dim=wide", "--save", "out"], ("model.hidden_dim", "'wide'"), train=True
    ),
    "train-bad-set-syntax": Case(["--set", "optim.lr", "--save", "out"], ("--set", "'optim.lr'"), train=True),
    "train-unknown-flag": Case(["--epochs", "3"], ("--epochs",), train=True),
    "train-class-threshold-of-no-class": Case(
        ["--set", "self_training.class_thresholds.joyful=0.9", "--save", "out"],
        ("self_training.class_thresholds.joyful", "'joyful'"),
        train=True,
    ),
    "train-nan-features": Case(
        ["c.yaml", "--save", "out"],
        (f"{VICTIM}.npy", "NaN"),
        files={"c.yaml": FEATURES_CONFIG},
        train=True,
        features="nan",
    ),
}
