"""The missing-modality protocol: seeded drops, train/test rates, imputation in the model, the F1-vs-rate grid."""

from __future__ import annotations

import itertools
import typing

import numpy as np
import pandas as pd
import pytest
import torch

from mer_core.cli_util import guarded_main
from mer_core.configs import ExperimentConfig, MissingConfig, load_config, with_overrides
from mer_core.configs.fields import FrozenDict
from mer_core.data import load_data
from mer_core.data.featureset import Split
from mer_core.errors import ConfigError
from mer_core.missing import IMPUTERS, build_imputer, drop_pairs, fold_mask, uniform_draws, val_mask_at_rate
from mer_core.train import run
from mer_core.train.cli import main
from mer_core.train.device_data import DeviceData
from mer_core.train.missing_eval import evaluate_missing_grid, fold_data, metric_name, parse_rates
from tests.missing_helpers import MODS, small_model, small_source

TINY = {
    "data.folds": 1,
    "model.hidden_dim": 16,
    "model.ff_dim": 32,
    "model.head_hidden": [16],
    "optim.max_epochs": 3,
    "optim.patience": 3,
    "optim.pretrain_epochs": 1,
    "self_training.rounds": 0,
    "runtime.threads": 1,
}


@pytest.fixture
def tiny(tiny_data_cfg):
    cfg = with_overrides(ExperimentConfig(data=tiny_data_cfg), TINY)
    return cfg, load_data(cfg.data)


def _full_mask(n: int = 2000, m: int = 3) -> np.ndarray:
    return np.ones((n, m), dtype=bool)


# --- the protocol ------------------------------------------------------------------------------------


def test_zero_rate_changes_nothing_and_a_rate_drops_about_that_share() -> None:
    mask, draws = _full_mask(), uniform_draws(0, 2000, 3)
    assert np.array_equal(drop_pairs(mask, np.zeros(3), draws), mask)
    kept = drop_pairs(mask, np.full(3, 0.3), draws)
    # 0.3 dropped per pair, minus the 0.3^3 = 2.7% of rows that lose all and get one back.
    assert abs((~kept).mean() - (0.3 - 0.3**3 / 3)) < 0.02


@pytest.mark.parametrize("rate", [0.5, 0.9, 1.0])
def test_every_sample_keeps_at_least_one_of_its_modalities(rate: float) -> None:
    gen = np.random.default_rng(1)
    mask = gen.random((500, 4)) > 0.3  # (N, M) some pairs already missing
    mask[:5] = False  # samples with nothing in the data stay empty
    kept = drop_pairs(mask, np.full(4, rate), uniform_draws(3, 500, 4))
    assert not (kept & ~mask).any()  # a pair missing in the data is never revived
    assert (kept.any(axis=1) == mask.any(axis=1)).all()
    if rate == 1.0:
        assert (kept.sum(axis=1)[mask.any(axis=1)] == 1).all()


def test_the_kept_modality_is_the_one_with_the_largest_draw() -> None:
    draws = np.array([[0.1, 0.4, 0.2], [0.3, 0.05, 0.25]])
    kept = drop_pairs(np.ones((2, 3), bool), np.full(3, 0.5), draws)
    assert kept.tolist() == [[False, True, False], [True, False, False]]


def test_higher_rates_drop_supersets_and_the_seed_fixes_the_draws() -> None:
    mask = _full_mask(800, 3)
    draws = uniform_draws(7, *mask.shape)
    masks = [drop_pairs(mask, np.full(3, r), draws) for r in (0.0, 0.2, 0.5, 0.7, 1.0)]
    for low, high in itertools.pairwise(masks):
        assert not (high & ~low).any()  # kept at the higher rate => kept at the lower one
    assert np.array_equal(uniform_draws(7, 10, 3), uniform_draws(7, 10, 3))
    assert not np.array_equal(uniform_draws(7, 10, 3), uniform_draws(8, 10, 3))


def test_fold_mask_uses_train_rates_off_validation_and_test_rates_on_it() -> None:
    mask = _full_mask(3000, 3)
    val = np.arange(0, 3000, 3)
    train = np.setdiff1d(np.arange(3000), val)
    cfg = MissingConfig(train_rate=0.1, train_rates=FrozenDict({"c": 0.6, "nope": 0.9}), test_rate=0.4)
    out = fold_mask(mask, val, cfg, MODS)
    dropped_train, dropped_val = (~out[train]).mean(axis=0), (~out[val]).mean(axis=0)
    assert np.allclose(dropped_train, [0.1, 0.1, 0.6], atol=0.04)
    assert np.allclose(dropped_val, [0.4 - 0.4**3 / 3] * 3, atol=0.04)
    assert fold_mask(mask, val, MissingConfig(), MODS) is mask  # defaults: nothing changes


def test_val_mask_at_rate_equals_the_test_rate_protocol() -> None:
    gen = np.random.default_rng(2)
    mask = gen.random((600, 3)) > 0.1
    val = np.sort(gen.choice(600, 200, replace=False))
    base = fold_mask(mask, val, MissingConfig(train_rate=0.3, seed=5), MODS)
    got = val_mask_at_rate(base, mask, val, 0.5, seed=5)
    want = fold_mask(mask, val, MissingConfig(train_rate=0.3, test_rate=0.5, seed=5), MODS)
    assert np.array_equal(got, want)


# --- config ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "field", "allowed"),
    [
        ("missing.train_rate=1.5", "missing.train_rate", "<= 1.0"),
        ("missing.test_rates={a: -0.1}", "missing.test_rates.a", ">= 0.0"),
        ("missing.eval_rates=[0, 2]", "missing.eval_rates[1]", "<= 1.0"),
        ("missing.impute=knn", "missing.impute", "zero, mean, retrieval"),
        ("missing.retrieval.k=0", "missing.retrieval.k", ">= 1"),
        ("missing.retrieval.aggregation=max", "missing.retrieval.aggregation", "mean, weighted"),
    ],
)
def test_bad_missing_fields_name_field_and_allowed_values(override: str, field: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(f"{field}:") and allowed in str(err.value)


def test_every_impute_choice_is_a_registered_imputer() -> None:
    hints = typing.get_type_hints(MissingConfig)
    assert set(typing.get_args(hints["impute"])) == set(IMPUTERS.names())


def test_grid_rates_parse_or_fail_with_one_line() -> None:
    assert parse_rates("0,0.2,0.5,0.7") == (0.0, 0.2, 0.5, 0.7)
    for bad in ("", "0,x", "0.2,1.5", "-0.1"):
        with pytest.raises(ConfigError, match=r"^--missing-grid: .*in \[0, 1\].*given"):
            parse_rates(bad)


# --- the model with an imputer -----------------------------------------------------------------------


@pytest.mark.parametrize("impute", ["mean", "retrieval"])
def test_imputed_states_fill_only_missing_pairs_and_count_as_present_for_fusion(impute: str) -> None:
    source, dims = small_source()
    model = small_model(dims)
    imputer = build_imputer(MissingConfig(impute=impute), source, np.arange(30))
    imputer.refresh(model)
    assert model.imputer is imputer
    x, mask = source.take(torch.arange(30, 40))
    mask[0] = torch.tensor([True, False, False])
    specific = {m: model.specific[m](x[m]) for m in MODS}  # each (B, H)
    filled, fuse_mask = imputer(specific, mask)
    assert fuse_mask.all()  # every modality is stored somewhere, so every pair is filled
    for j, m in enumerate(MODS):
        assert filled[m].shape == specific[m].shape
        torch.testing.assert_close(filled[m][mask[:, j]], specific[m][mask[:, j]])
        if (~mask[:, j]).any():
            assert not torch.allclose(filled[m][~mask[:, j]], specific[m][~mask[:, j]])
    if impute == "mean":
        stored = imputer.means
        torch.testing.assert_close(filled["b"][0], stored[1])


def test_zero_imputation_attaches_nothing_and_refresh_keeps_train_mode() -> None:
    source, dims = small_source()
    model = small_model(dims).train()
    build_imputer(MissingConfig(impute="zero"), source, np.arange(30)).refresh(model)
    assert model.imputer is None
    build_imputer(MissingConfig(impute="retrieval"), source, np.arange(30)).refresh(model)
    assert model.training and model.imputer is not None


def test_with_an_imputer_missing_input_values_still_do_not_matter() -> None:
    source, dims = small_source()
    model = small_model(dims)
    build_imputer(MissingConfig(impute="retrieval"), source, np.arange(30)).refresh(model)
    x, mask = source.take(torch.arange(30, 40))
    expected = model(x, mask).logits
    junk = {m: torch.where(mask[:, j : j + 1], x[m], 1e6) for j, m in enumerate(MODS)}
    for head, logits in model(junk, mask).logits.items():
        torch.testing.assert_close(logits, expected[head])
    model.imputer = None
    assert not torch.allclose(model(x, mask).logits["fusion"], expected["fusion"])


# --- the trainer -------------------------------------------------------------------------------------


def test_fold_data_applies_the_protocol_and_shares_features(tiny) -> None:
    cfg, data = tiny
    dev = DeviceData.from_featureset(data, torch.device("cpu"))
    split = Split(train=data.labelled_idx[:80], val=data.labelled_idx[80:])
    assert fold_data(dev, data, split, cfg.missing) is dev
    changed = fold_data(dev, data, split, MissingConfig(train_rate=0.5, test_rate=0.2))
    assert changed.features is dev.features
    want = fold_mask(data.mask, split.val, MissingConfig(train_rate=0.5, test_rate=0.2), data.modalities)
    assert np.array_equal(changed.mask.numpy(), want)


@pytest.mark.parametrize("impute", ["zero", "mean", "retrieval"])
def test_run_reports_f1_per_eval_rate_and_the_test_rate_row_matches(tiny, impute: str) -> None:
    cfg, data = tiny
    cfg = with_overrides(
        cfg,
        {
            "missing.train_rate": 0.3,
            "missing.test_rate": 0.5,
            "missing.eval_rates": [0, 0.5, 1],
            "missing.impute": impute,
        },
    )
    result = run(cfg, data)
    assert result.status == "ok"
    for rate in (0, 0.5, 1):
        assert 0.0 <= result.metrics[metric_name(rate)] <= 1.0
        assert 0.0 <= result.metrics[metric_name(rate, "accuracy")] <= 1.0
        assert 0.0 <= result.metrics[metric_name(rate, "f1_fusion")] <= 1.0
    # Scoring at the configured test rate repeats the best epoch's validation exactly.
    assert result.metrics[metric_name(0.5)] == pytest.approx(result.metrics["val/weighted_f1"], abs=1e-12)


def test_train_and_test_rates_change_training_and_validation(tiny) -> None:
    cfg, data = tiny
    base = run(cfg, data)
    trained_with_drops = run(with_overrides(cfg, {"missing.train_rate": 0.6}), data)
    tested_with_drops = run(with_overrides(cfg, {"missing.test_rate": 0.6}), data)
    fusion = [r.val_logits()["fusion"] for r in (base, trained_with_drops, tested_with_drops)]
    assert not np.array_equal(fusion[0], fusion[1]) and not np.array_equal(fusion[0], fusion[2])
    again = run(with_overrides(cfg, {"missing.train_rate": 0.6}), data)
    np.testing.assert_array_equal(again.val_logits()["fusion"], fusion[1])


def test_evaluate_missing_grid_returns_one_row_per_rate(tiny) -> None:
    cfg, data = tiny
    table = evaluate_missing_grid(cfg, data, rates=(0, 0.2, 0.7))
    assert isinstance(table, pd.DataFrame)
    assert list(table.index) == [0.0, 0.2, 0.7]
    assert {"weighted_f1", "accuracy", "f1_fusion", "weighted_f1_std"} <= set(table.columns)
    assert table[["weighted_f1", "accuracy", "f1_fusion"]].stack().between(0, 1).all()


def test_cli_prints_the_grid_and_rejects_bad_rates(tiny_data_cfg, tmp_path, capsys) -> None:
    from mer_core.configs import save_config

    path = save_config(with_overrides(ExperimentConfig(data=tiny_data_cfg), TINY), tmp_path / "tiny.yaml")
    assert guarded_main(main, [str(path), "--quiet", "--missing-grid", "0,0.5"]) == 0
    out = capsys.readouterr().out
    assert "missing rate" in out and "weighted_f1" in out
    assert guarded_main(main, [str(path), "--quiet", "--missing-grid", "0,abc"]) == 2
    assert "--missing-grid" in capsys.readouterr().err
