"""Search spaces: shipped files, define-by-run under every sampler, conditionals, grid, bad files."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from ray.tune.search.optuna import OptunaSearch

from mer_core.configs import ExperimentConfig, with_overrides
from mer_core.errors import ConfigError
from mer_core.models.fusion import FUSIONS
from sweeps.space import AskTellGridSampler, SearchSpace, load_space, make_sampler
from sweeps.space.params import Param

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "search_spaces").glob("*.yaml"))

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _space(tmp_path: Path, body: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def _in_range(p: Param, value: Any) -> bool:
    if p.kind == "categorical":
        return value in p.choices
    ok = p.low <= value <= p.high
    if p.kind == "int":
        ok = ok and isinstance(value, int) and (value - p.low) % (p.step or 1) == 0
    elif p.step:
        ok = ok and math.isclose((value - p.low) / p.step, round((value - p.low) / p.step), abs_tol=1e-6)
    return ok


def _run(space: SearchSpace, sampler: optuna.samplers.BaseSampler, n: int) -> list[dict[str, Any]]:
    """Optimise a dummy objective; return each trial's full sample (suggested + fixed)."""
    samples: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        fixed = space.define_by_run(trial) or {}
        sample = {**trial.params, **fixed}
        samples.append(sample)
        return sum(float(v) for v in sample.values() if isinstance(v, (int, float)))

    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=n)
    return samples


def _check_sample(space: SearchSpace, sample: dict[str, Any]) -> None:
    by_name = {p.name: p for p in space.params}
    for p in space.params:
        assert (p.name in sample) == p.active(sample), p.name
    for name, value in sample.items():
        p = by_name[name]
        assert value == p.value if p.kind == "fixed" else _in_range(p, value), (name, value)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_space_loads_describes_and_round_trips(path: Path, tmp_path: Path) -> None:
    space = load_space(path)
    assert space.params and len(space.describe()) == len(space.params)
    dumped = _space(tmp_path, yaml.safe_dump(space.to_dict(), sort_keys=False), "dumped.yaml")
    assert load_space(dumped) == space


def test_shipped_spaces_have_the_expected_params() -> None:
    full = load_space(ROOT / "search_spaces/mrccl_full.yaml")
    parts = [load_space(ROOT / f"search_spaces/{n}.yaml") for n in ("mrccl_core", "nee", "self_training", "voting")]
    assert set(full.names) == {n for s in parts for n in s.names}
    quick = load_space(ROOT / "search_spaces/quick.yaml")
    modality_keyed = ("nee.timesteps.", "voting.weights.")
    assert not [n for n in quick.names if n.startswith(modality_keyed)]


def test_quick_fusion_choices_are_registered() -> None:
    quick = load_space(ROOT / "search_spaces/quick.yaml")
    choices = next(p.choices for p in quick.params if p.name == "model.fusion")
    assert set(choices) <= set(FUSIONS.names())


@pytest.mark.parametrize("algorithm", ["tpe", "qmc", "random", "cmaes"])
@pytest.mark.parametrize("name", ["quick", "mrccl_full"])
def test_define_by_run_under_each_sampler_stays_in_range(algorithm: str, name: str) -> None:
    space = load_space(ROOT / f"search_spaces/{name}.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's Sobol balance note; not under test here
        samples = _run(space, make_sampler(algorithm, 0, space=space, n_startup_trials=3), 8)
    for sample in samples:
        _check_sample(space, sample)
    if name == "mrccl_full":
        assert all(s["nee.enabled"] is True and s["loss.w_cls"] == 1.0 for s in samples)


def test_conditionals_appear_only_when_their_condition_holds() -> None:
    space = load_space(ROOT / "search_spaces/quick.yaml")
    samples = _run(space, optuna.samplers.RandomSampler(seed=1), 30)
    for sample in samples:
        assert ("model.fusion_rank" in sample) == (sample["model.fusion"] == "tensor_lowrank")
    assert any("model.fusion_rank" in s for s in samples) and not all("model.fusion_rank" in s for s in samples)


def test_nested_and_multi_value_conditions(tmp_path: Path) -> None:
    space = load_space(
        _space(
            tmp_path,
            """
params:
  model.head_dropout: {type: float, low: 0.0, high: 0.5, when: {model.head: linear}}
  model.head: {type: categorical, choices: [fc, linear], when: {model.fusion: [gated, attention]}}
  model.fusion: {type: categorical, choices: [concat, gated, attention]}
  nee.occur_freq: {fixed: 0.5, when: {model.fusion: concat}}
""",
        )
    )
    assert space.names.index("model.fusion") < space.names.index("model.head") < space.names.index("model.head_dropout")
    samples = _run(space, optuna.samplers.RandomSampler(seed=0), 40)
    for s in samples:
        _check_sample(space, s)
        assert ("model.head" in s) == (s["model.fusion"] in ("gated", "attention"))
        assert ("model.head_dropout" in s) == (s.get("model.head") == "linear")
        assert ("nee.occur_freq" in s) == (s["model.fusion"] == "concat")
    assert any("model.head_dropout" in s for s in samples)


GRID = """
params:
  optim.batch_size: {type: categorical, choices: [16, 32]}
  model.hidden_dim: {type: int, low: 64, high: 192, step: 64}
  model.dropout: {type: float, low: 0.0, high: 0.2, step: 0.1}
  nee.enabled: {fixed: false}
"""


def test_grid_visits_every_point_once(tmp_path: Path) -> None:
    space = load_space(_space(tmp_path, GRID))
    expected = {"optim.batch_size": [16, 32], "model.hidden_dim": [64, 128, 192], "model.dropout": [0.0, 0.1, 0.2]}
    assert space.grid() == expected
    assert space.grid_size() == 18
    samples = _run(space, make_sampler("grid", 0, space=space), 18)
    points = {(s["optim.batch_size"], s["model.hidden_dim"], s["model.dropout"]) for s in samples}
    assert len(points) == 18 and all(s["nee.enabled"] is False for s in samples)


def test_grid_sampler_survives_ask_tell_past_the_last_point(tmp_path: Path) -> None:
    space = load_space(_space(tmp_path, "params:\n  model.layers: {type: categorical, choices: [1, 2]}\n"))
    sampler = make_sampler("grid", 0, space=space)
    assert isinstance(sampler, AskTellGridSampler)
    study = optuna.create_study(sampler=sampler)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    for _ in range(3):  # Ray's OptunaSearch uses ask/tell, where GridSampler's Study.stop would raise
        trial = study.ask()
        space.define_by_run(trial)
        study.tell(trial, 1.0)
    assert {t.params["model.layers"] for t in study.trials} == {1, 2}


@pytest.mark.parametrize("name", ["quick", "mrccl_core"])
def test_grid_refuses_non_grid_spaces(name: str) -> None:
    space = load_space(ROOT / f"search_spaces/{name}.yaml")
    with pytest.raises(ConfigError, match=r"search.algorithm.*not grid-able"):
        space.grid()
    with pytest.raises(ConfigError, match=r"search.algorithm"):
        make_sampler("grid", 0, space=space)


def test_make_sampler_configuration_and_errors(tmp_path: Path) -> None:
    space = load_space(ROOT / "search_spaces/quick.yaml")
    tpe = make_sampler("tpe", 3, space=space, n_startup_trials=4)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert tpe._n_startup_trials == 4 and tpe._constant_liar and tpe._group and tpe._multivariate
    assert isinstance(make_sampler("qmc", 3, space=space), optuna.samplers.QMCSampler)
    assert isinstance(make_sampler("random", 3, space=space), optuna.samplers.RandomSampler)
    with pytest.raises(ConfigError, match=r"search.algorithm.*bayes"):
        make_sampler("bayes", 0, space=space)
    categorical = load_space(_space(tmp_path, "params:\n  model.fusion: {type: categorical, choices: [concat, sum]}\n"))
    with pytest.raises(ConfigError, match=r"search.algorithm"):
        make_sampler("cmaes", 0, space=categorical)


@pytest.mark.parametrize("algorithm", ["tpe", "qmc", "random"])
def test_same_seed_same_samples(algorithm: str) -> None:
    space = load_space(ROOT / "search_spaces/mrccl_core.yaml")

    def run(seed: int) -> list[dict[str, Any]]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _run(space, make_sampler(algorithm, seed, space=space, n_startup_trials=2), 5)

    assert run(7) == run(7)
    assert run(7) != run(8)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_sample_config_overrides_build_valid_configs(path: Path) -> None:
    space = load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        fixed = space.define_by_run(trial) or {}
        overrides = space.sample_config_overrides(trial.params)
        assert space.sample_config_overrides({**trial.params, **fixed}) == overrides  # Ray's view: both
        cfg = with_overrides(ExperimentConfig(), overrides)
        for dotted, value in overrides.items():
            node: Any = cfg
            for part in dotted.split("."):
                node = node[part] if isinstance(node, dict) else getattr(node, part)
            assert node == value
        study.tell(trial, 0.0)


def test_sample_config_overrides_rejects_unknown_and_missing() -> None:
    space = load_space(ROOT / "search_spaces/quick.yaml")
    sample = {
        "optim.lr": 1e-3,
        "optim.weight_decay": 0.0,
        "model.hidden_dim": 32,
        "model.dropout": 0.1,
        "loss.w_modality": 1.0,
        "model.fusion": "tensor_lowrank",
    }
    with pytest.raises(ValueError, match=r"model.fusion_rank"):
        space.sample_config_overrides(sample)
    with pytest.raises(ValueError, match=r"optim.lrr"):
        space.sample_config_overrides({**sample, "model.fusion_rank": 4, "optim.lrr": 1})
    assert "model.fusion_rank" not in space.sample_config_overrides({**sample, "model.fusion": "concat"})


def test_ray_optuna_search_accepts_define_by_run() -> None:
    space = load_space(ROOT / "search_spaces/mrccl_full.yaml")
    searcher = OptunaSearch(
        space=space.define_by_run, metric="val/weighted_f1", mode="max", sampler=make_sampler("tpe", 0, space=space)
    )
    config = searcher.suggest("t0")
    assert config["nee.enabled"] is True and "optim.lr" in config  # dotted keys stay flat; fixed merged
    with_overrides(ExperimentConfig(), space.sample_config_overrides(config))
    searcher.on_trial_complete("t0", {"val/weighted_f1": 0.5})


def test_include_merges_later_wins_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _space(tmp_path, "params:\n  optim.lr: {type: float, low: 0.001, high: 0.1}\n", "sub/a.yaml")
    _space(tmp_path, "include: a.yaml\nparams:\n  model.layers: {type: int, low: 1, high: 2}\n", "sub/b.yaml")
    top = _space(tmp_path, "include: [sub/b.yaml]\nparams:\n  optim.lr: {fixed: 0.01}\n")
    space = load_space(top)
    assert space.names == ("optim.lr", "model.layers") and space.params[0].value == 0.01
