"""Sweep spec: validation messages, path resolution, overrides, round trip, experiment configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mer_core.errors import ConfigError, UserInputError
from sweeps.spec import METRICS, SweepSpec, load_sweep

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "search_spaces/quick.yaml"
MRCCL = ROOT / "mer_core/configs/mrccl.yaml"
GRID_SPACE = "params:\n  optim.batch_size: {type: categorical, choices: [16, 32]}\n  model.layers: {fixed: 2}\n"

ABLATION = f"""
name: abl
kind: ablation
base: {MRCCL}
data: {{source: uci-mfeat, folds: 1}}
ablation:
  reference: full
  variants: {{full: {{}}, no_nee: {{nee.enabled: false}}, short: {{nee: {{timesteps: {{audio: 20}}}}}}}}
  seeds: [0, 1]
"""


def _write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _search(extra: str = "", *, name: str = "t1", space: Path | str = QUICK) -> str:
    head = f"name: {name}\n" if name else ""
    return f"{head}search_space: {space}\n{extra}"


def test_minimal_search_spec_takes_defaults(tmp_path: Path) -> None:
    spec = load_sweep(_write(tmp_path, _search()))
    assert spec.kind == "search" and spec.base is None and spec.metric == METRICS[0] and spec.mode == "max"
    assert spec.search.algorithm == "tpe" and spec.ablation is None
    assert (spec.scheduler.kind, spec.scheduler.grace_period) == ("median", 3)  # the default early stopping
    assert spec.experiment_name() == "t1" and spec.search_space_path() == str(QUICK)
    assert spec.load_search_space() is not None


def test_shipped_quickstart_loads_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = load_sweep(ROOT / "sweeps/quickstart.yaml")
    cfg = spec.base_config()
    assert cfg.data.source == "uci-mfeat" and Path(spec.search_space_path()) == QUICK


def test_base_data_and_set_merge(tmp_path: Path) -> None:
    _write(tmp_path, "optim: {lr: 0.005, patience: 3}\ndata: {val_fraction: 0.3, folds: 3}\n", "base.yaml")
    text = _search("base: base.yaml\ndata: {source: uci-mfeat, folds: 1}\nset: {optim: {patience: 7}, seed: 3}\n")
    spec = load_sweep(_write(tmp_path, text))
    cfg = spec.base_config()
    assert cfg.optim.lr == 0.005 and cfg.optim.patience == 7 and cfg.seed == 3  # nested set merges
    assert cfg.data.source == "uci-mfeat" and cfg.data.folds == 1 and cfg.data.val_fraction == 0.3
    assert spec.set == {"optim.patience": 7, "seed": 3}
    assert spec.experiment_overrides() == {"data.source": "uci-mfeat", "data.folds": 1, "optim.patience": 7, "seed": 3}


def test_an_empty_set_section_means_no_overrides(tmp_path: Path) -> None:
    spec = load_sweep(_write(tmp_path, _search("set:\n")))  # left empty, as a user comments its entries out
    assert spec.set == {} and spec.experiment_overrides() == {}
    assert load_sweep(_write(tmp_path, _search("set:\n"), "b.yaml"), sets=["seed=3"]).set == {"seed": 3}


def test_paths_resolve_against_sweep_dir_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "optim: {lr: 0.002}\n", "sweeps/base.yaml")
    _write(tmp_path, "optim: {lr: 0.003}\n", "base.yaml")
    _write(tmp_path, "optim: {lr: 0.004}\n", "other.yaml")
    monkeypatch.chdir(tmp_path)
    spec = load_sweep(_write(tmp_path, _search("base: base.yaml\n"), "sweeps/s.yaml"))
    assert spec.base == str(tmp_path / "sweeps/base.yaml") and spec.base_config().optim.lr == 0.002
    spec = load_sweep(_write(tmp_path, _search("base: other.yaml\n"), "sweeps/s.yaml"))
    assert spec.base_config().optim.lr == 0.004


def test_set_strings_override_spec_and_experiment(tmp_path: Path) -> None:
    path = _write(tmp_path, _search("search: {num_samples: 20}\n"))
    spec = load_sweep(
        path,
        sets=["sweep.search.num_samples=4", "sweep.set.optim.lr=1e-4", "model.layers=2", "sweep.tracking.experiment=x"],
    )
    assert spec.search.num_samples == 4 and spec.tracking.experiment == "x" and spec.experiment_name() == "x"
    assert set(spec.set) == {"optim.lr", "model.layers"}
    assert spec.base_config().model.layers == 2 and spec.base_config().optim.lr == 1e-4
    assert load_sweep(path, sets=["sweep.search.num_samples=4"], num_samples=9).search.num_samples == 9
    abl = load_sweep(_write(tmp_path, ABLATION, "abl.yaml"), sets=["sweep.ablation.variants.extra.model.layers=3"])
    assert abl.variant_config("extra").model.layers == 3


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    spec = load_sweep(
        _write(tmp_path, ABLATION),
        sets=["sweep.ablation.retune.num_samples=2", f"sweep.ablation.retune.search_space={QUICK}"],
    )
    text = spec.to_yaml()
    assert yaml.safe_load(text) == spec.to_dict()
    again = load_sweep(_write(tmp_path, text, "elsewhere/dumped.yaml"))
    assert again == spec and isinstance(again, SweepSpec)


def test_ablation_variants_build(tmp_path: Path) -> None:
    spec = load_sweep(_write(tmp_path, ABLATION))
    assert spec.variant_config("no_nee").nee.enabled is False
    short = spec.variant_config("short")
    assert short.nee.timesteps == {"audio": 20, "text": 100, "video": 100}  # merged into the base map
    assert spec.variant_config("full") == spec.base_config()
    with pytest.raises(ConfigError, match=r"ablation.variants.*nope"):
        spec.variant_config("nope")


def test_grid_spec_accepts_a_grid_space(tmp_path: Path) -> None:
    _write(tmp_path, GRID_SPACE, "grid.yaml")
    spec = load_sweep(_write(tmp_path, _search("search: {algorithm: grid, num_samples: 2}\n", space="grid.yaml")))
    assert spec.search.algorithm == "grid"


BAD = {
    "missing name": (_search(name=""), "name: required"),
    "bad name": (_search(name="'a b'"), "name: bad name"),
    "unknown key": (_search("nmae: x\n"), "nmae: unknown key"),
    "bad kind": (_search("kind: sweep\n"), "kind:"),
    "bad algorithm": (_search("search: {algorithm: bayes}\n"), "search.algorithm"),
    "zero samples": (_search("search: {num_samples: 0}\n"), "search.num_samples"),
    "negative seed": (_search("search: {seed: -1}\n"), "search.seed"),
    "max_t < grace": (_search("scheduler: {grace_period: 5, max_t: 2}\n"), "scheduler.max_t"),
    "bad scheduler": (_search("scheduler: {kind: pbt2}\n"), "scheduler.kind"),
    "reduction factor": (_search("scheduler: {reduction_factor: 1}\n"), "scheduler.reduction_factor"),
    "metric no split": (_search("metric: weighted_f1\n"), "metric: expected <split>/<name>"),
    "unknown metric": (_search("metric: val/f2\n"), "metric: unknown metric"),
    "select on test": (_search("metric: test/weighted_f1\n"), "metric: the held-out test split is never selected on"),
    "unknown report metric": (_search("report_metric: test/f2\n"), "report_metric: unknown metric"),
    "report test without split": (_search("report_metric: test/accuracy\n"), "report_metric: the data has no test"),
    "test fraction too big": (_search("data: {test_fraction: 0.6}\n"), "data.test_fraction: out of range"),
    "bad mode": (_search("mode: maximize\n"), "mode:"),
    "negative cpu": (_search("resources: {cpu: -1}\n"), "resources.cpu"),
    "gpu not number": (_search("resources: {gpu: one}\n"), "resources.gpu"),
    "zero concurrency": (_search("resources: {max_concurrent: 0}\n"), "resources.max_concurrent"),
    "bad execution": (_search("execution: {mode: vmap}\n"), "execution.mode"),
    "zero population": (_search("execution: {population: 0}\n"), "execution.population"),
    "zero budget": (_search("time_budget_s: 0\n"), "time_budget_s"),
    "tracking type": (_search("tracking: {uri: [a]}\n"), "tracking.uri"),
    "search needs space": ("name: t\n", "search_space: required"),
    "missing space file": (_search(space="nope.yaml"), "search_space: file not found"),
    "bad space": (_search(space="bad_space.yaml"), "params.optim.lrr"),
    "missing base": (_search("base: nope.yaml\n"), "base: file not found"),
    "bad base": (_search("base: bad_base.yaml\n"), "model.hidden_dim: out of range (in base"),
    "set unknown": (_search("set: {optim.lrr: 1}\n"), "set.optim.lrr"),
    "set out of range": (_search("set: {optim.lr: -1}\n"), "set.optim.lr: out of range"),
    "set not mapping": (_search("set: [1]\n"), "set:"),
    "data bad source": (_search("data: {source: mnist}\n"), "data.source"),
    "data bad folds": (_search("data: {folds: 0}\n"), "data.folds"),
    "grid not gridable": (_search("search: {algorithm: grid}\n"), "search.algorithm"),
    "grid too many": (_search("search: {algorithm: grid, num_samples: 5}\n", space="grid.yaml"), "search.num_samples"),
    "search with ablation": (_search("ablation: {variants: {a: {}}, reference: a}\n"), "ablation: not allowed"),
    "ablation needs section": (f"name: a\nkind: ablation\nbase: {MRCCL}\n", "ablation: required"),
    "ablation with space": (ABLATION + f"search_space: {QUICK}\n", "search_space: not used by kind=ablation"),
    "no variants": (ABLATION.replace("variants: {full", "old: {full") + "  variants: {}\n", "ablation.old"),
    "empty variants": (
        "\n".join(ln if "variants:" not in ln else "  variants: {}" for ln in ABLATION.splitlines()),
        "ablation.variants: empty",
    ),
    "bad reference": (ABLATION.replace("reference: full", "reference: base"), "ablation.reference"),
    "no seeds": (ABLATION.replace("seeds: [0, 1]", "seeds: []"), "ablation.seeds: empty"),
    "negative seed (abl)": (ABLATION.replace("seeds: [0, 1]", "seeds: [0, -1]"), "ablation.seeds[1]"),
    "duplicate seeds": (ABLATION.replace("seeds: [0, 1]", "seeds: [1, 1]"), "ablation.seeds: duplicate"),
    "variant bad field": (
        ABLATION.replace("nee.enabled: false", "nee.enabld: false"),
        "ablation.variants.no_nee.nee.enabld",
    ),
    "variant bad value": (ABLATION.replace("audio: 20", "audio: 0"), "ablation.variants.short.nee.timesteps.audio"),
    "variant bad name": (ABLATION.replace("no_nee:", "'no nee':"), "ablation.variants.no nee"),
    # runs/<name>/: '..' was the working folder itself, '.' the runs/ folder of every sweep
    "name only dots": (f"name: '..'\nsearch_space: {QUICK}\n", "name: bad name"),
    "name one dot": (f"name: '.'\nsearch_space: {QUICK}\n", "not only dots"),
    "variant only dots": (ABLATION.replace("no_nee:", "'..':"), "ablation.variants..."),
    "retune needs space": (ABLATION + "  retune: {num_samples: 3}\n", "ablation.retune.search_space: required"),
}


def test_report_metric_defaults_to_the_held_out_counterpart(tmp_path: Path) -> None:
    held_out = load_sweep(
        _write(tmp_path, _search("data: {source: uci-mfeat, test_fraction: 0.2}\nmetric: val/accuracy\n"))
    )
    assert held_out.metric == "val/accuracy" and held_out.report_metric == "test/accuracy"
    chosen = _search("data: {source: uci-mfeat, test_fraction: 0.2}\nreport_metric: val/weighted_f1\n")
    assert load_sweep(_write(tmp_path, chosen)).report_metric == "val/weighted_f1"  # configurable
    assert load_sweep(_write(tmp_path, _search())).report_metric == "val/weighted_f1"  # no test split
    assert load_sweep(_write(tmp_path, held_out.to_yaml(), "again.yaml")).report_metric == "test/accuracy"


@pytest.mark.parametrize("name", ["ablation_quick", "ablation_mrccl", "ablation_robustness", "quickstart"])
def test_shipped_studies_score_on_at_least_400_held_out_digits(name: str) -> None:
    from mer_core.data import load_data

    spec = load_sweep(ROOT / "sweeps" / f"{name}.yaml")
    assert spec.report_metric == "test/weighted_f1"
    data = load_data(spec.base_config().data)
    assert data.n_test >= 400 and data.test is not None and (data.test.labels >= 0).all()


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_spec_is_one_line_config_error_naming_the_field(case: str, tmp_path: Path) -> None:
    text, expected = BAD[case]
    _write(tmp_path, GRID_SPACE, "grid.yaml")
    _write(tmp_path, "params:\n  optim.lrr: {type: float, low: 0.1, high: 0.2}\n", "bad_space.yaml")
    _write(tmp_path, "model: {hidden_dim: 0}\n", "bad_base.yaml")
    with pytest.raises(ConfigError) as info:
        load_sweep(_write(tmp_path, text))
    message = str(info.value)
    assert expected in message and "\n" not in message, message


def test_a_space_may_not_sample_fields_of_the_data_that_loads_once(tmp_path: Path) -> None:
    folds = "params:\n  data.folds: {type: int, low: 2, high: 3}\n"
    space = _write(tmp_path, folds + "  data.labelled_fraction: {type: float, low: 0.1, high: 0.9}\n", "space.yaml")
    with pytest.raises(ConfigError, match=r"^params\.data\.labelled_fraction: not a per-trial field .*data\.folds"):
        load_sweep(_write(tmp_path, _search(space=space)))  # every trial would use the base's data all the same
    load_sweep(_write(tmp_path, _search(space=_write(tmp_path, folds, "folds.yaml"))))  # split fields are per trial


def test_bad_sweep_override_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"search.num_smaples: unknown key"):
        load_sweep(_write(tmp_path, _search()), sets=["sweep.search.num_smaples=4"])
    with pytest.raises(ConfigError, match=r"set.model.layerz"):
        load_sweep(_write(tmp_path, _search()), sets=["model.layerz=4"])


def test_yaml_errors_name_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"sweep.yaml: invalid YAML at line \d"):
        load_sweep(_write(tmp_path, "name: t\nsearch: {num_samples: [\n"))
    with pytest.raises(UserInputError, match=r"not found"):
        load_sweep(tmp_path / "missing.yaml")
