"""Every config field has a kind in fused mode, and a refused value is refused, never ignored."""

from __future__ import annotations

import pytest

from mer_core.configs import ExperimentConfig, flatten, with_overrides
from mer_core.errors import ConfigError
from mer_core.train.fused import group_by_shape, train_population
from mer_core.train.fused.fields import FIELDS, check_fusable, dataclass_fields, kind_of, refused_values

KINDS = {"member", "schedule", "shape", "refused"}


def test_every_field_of_the_experiment_config_is_classified():
    """A field added to ExperimentConfig fails here until fields.FIELDS says what fused mode does with it."""
    unclassified = []
    for name in dataclass_fields(ExperimentConfig):
        try:
            rule = kind_of(name)
        except KeyError:
            unclassified.append(name)
            continue
        assert rule.kind in KINDS, name
    assert not unclassified, f"classify these in mer_core/train/fused/fields.py FIELDS: {unclassified}"


def test_the_table_names_only_real_fields_and_sections_only_where_documented():
    real = set(dataclass_fields(ExperimentConfig))
    for name in FIELDS:
        covered = [f for f in real if f == name or f.startswith(f"{name}.")]
        assert covered, f"FIELDS names {name!r}, which ExperimentConfig does not have"
        if name not in real:
            assert name == "data", f"{name}: only `data` is classified as a whole section"
    # Map-valued fields (modality- or class-keyed) follow their map's entry.
    assert kind_of("nee.timesteps.audio").kind == "member"
    assert kind_of("voting.weights.fusion").kind == "member"
    assert kind_of("data.synthetic.dims.audio").kind == "schedule"


def test_the_default_config_is_fusable_and_every_refused_value_names_its_field():
    check_fusable(ExperimentConfig())
    flat = flatten(ExperimentConfig())
    assert set(refused_values()) == {"missing.impute", "runtime.compile"}
    for name, rule in refused_values().items():
        assert flat[name] in rule.allowed, name


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"missing.impute": "mean"}, "missing.impute"),
        ({"missing.impute": "retrieval"}, "missing.impute"),
        ({"runtime.compile": True}, "runtime.compile"),
    ],
)
def test_a_refused_value_is_a_one_line_config_error(tiny_data_cfg, overrides, field):
    cfg = with_overrides(ExperimentConfig(data=tiny_data_cfg), overrides)
    for call in (lambda: group_by_shape([cfg]), lambda: train_population([cfg], None)):  # type: ignore[arg-type]
        with pytest.raises(ConfigError) as err:
            call()
        assert err.value.field == field and "\n" not in str(err.value)
        assert "execution.mode: fused" in str(err.value)


def test_shape_fields_split_populations_and_member_fields_do_not(tiny_data_cfg):
    base = with_overrides(ExperimentConfig(data=tiny_data_cfg), {"seed": 0})  # validated like every config
    cfgs = [
        base,
        with_overrides(base, {"missing.eval_rates": [0.5], "nee.beta_end": 0.3, "optim.patience": 2}),  # members
        with_overrides(base, {"missing.train_rate": 0.3}),  # another fold mask
        with_overrides(base, {"loss.neg_alpha": 0.2}),  # read as a Python value by the shared module
        with_overrides(base, {"model.fusion": "label_guided"}),  # another module
    ]
    assert group_by_shape(cfgs) == [[0, 1], [2], [3], [4]]


def test_a_refused_field_sampled_by_a_search_space_is_refused():
    with pytest.raises(ConfigError) as err:
        check_fusable(ExperimentConfig(), sampled=["optim.lr", "missing.impute"])
    assert err.value.field == "missing.impute" and "sampled by the search space" in str(err.value)
    check_fusable(ExperimentConfig(), sampled=["optim.lr", "nee.enabled"])
