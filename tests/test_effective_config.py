"""The effective config: what a run leaves to the machine (device, threads, fold seed) written out."""

from __future__ import annotations

import pytest
import torch

from mer_core.configs import build_config, dump_config, load_config
from mer_core.errors import ConfigError
from mer_core.train.effective import effective_config, pin_threads_and_folds


def test_auto_null_and_null_become_the_device_threads_and_fold_seed_of_the_run():
    cfg = build_config({"data": {"seed": 4}})
    assert (cfg.runtime.device, cfg.runtime.threads, cfg.data.fold_seed) == ("auto", None, None)
    out = effective_config(cfg, threads=3, device=torch.device("cpu"))
    assert (out.runtime.device, out.runtime.threads, out.data.fold_seed, out.data.seed) == ("cpu", 3, 4, 4)
    assert (cfg.runtime.device, cfg.runtime.threads, cfg.data.fold_seed) == ("auto", None, None)  # a new config
    assert effective_config(cfg).runtime.threads == torch.get_num_threads()  # no count given: this process's
    assert out.data.split_seed == cfg.data.split_seed  # the same folds


def test_what_a_config_says_is_kept():
    cfg = build_config({"data": {"seed": 4, "fold_seed": 9}, "runtime": {"device": "cpu", "threads": 2}})
    assert effective_config(cfg, threads=7) == cfg


def test_the_driver_pins_threads_and_folds_and_leaves_the_device_to_the_worker():
    out = pin_threads_and_folds(build_config({}), threads=1)
    assert (out.runtime.device, out.runtime.threads, out.data.fold_seed) == ("auto", 1, 0)


def test_an_effective_config_round_trips_through_yaml(tmp_path):
    out = effective_config(build_config({"data": {"seed": 2}}), threads=1, device=torch.device("cpu"))
    (tmp_path / "c.yaml").write_text(dump_config(out))
    assert load_config(tmp_path / "c.yaml") == out


def test_the_fold_seed_draws_the_folds_and_data_seed_the_rest():
    cfg = build_config({"data": {"seed": 3, "fold_seed": 5}})
    assert cfg.data.split_seed == 5 and build_config({"data": {"seed": 3}}).data.split_seed == 3
    with pytest.raises(ConfigError) as err:
        build_config({"data": {"fold_seed": -1}})
    assert err.value.field == "data.fold_seed"


def test_two_fold_seeds_split_the_same_rows_differently():
    """The dataset, its hidden labels and its test split follow data.seed alone; the folds fold_seed."""
    import numpy as np

    from mer_core.data import load_data
    from mer_core.data.splits import make_splits

    small = {"n_labelled": 300, "n_unlabelled": 40, "dims": {"a": 4, "b": 3}, "signal": {"a": 1.0}}
    data = {"seed": 1, "test_fraction": 0.2, "labelled_fraction": 0.5, "folds": 3, "synthetic": small}
    one, two = (build_config({"data": {**data, "fold_seed": s}}).data for s in (1, 2))
    a, b = load_data(one), load_data(two)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.test.labels, b.test.labels)
    assert np.array_equal(a.features["a"], b.features["a"])
    folds = [make_splits(a, folds=3, val_fraction=0.2, seed=d.split_seed)[0].val for d in (one, two)]
    assert not np.array_equal(*folds)
