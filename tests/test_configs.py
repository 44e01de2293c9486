"""Config validation, dotted overrides and the YAML round trip."""

from __future__ import annotations

import pickle

import pytest
import yaml

from mer_core.configs import (
    ExperimentConfig,
    build_config,
    dump_config,
    flatten,
    load_config,
    save_config,
    with_overrides,
)
from mer_core.errors import ConfigError, UserInputError

BAD_OVERRIDES = [
    ("model.hidden_dim=-3", "model.hidden_dim", ">= 1", "-3"),
    ("model.hidden_dim=abc", "model.hidden_dim", "int", "'abc'"),
    ("model.hidden_dim=1.5", "model.hidden_dim", "int", "1.5"),
    ("model.foo=1", "model.foo", "hidden_dim", "'foo'"),
    ("nosuch.section=1", "nosuch", "model", "'nosuch'"),
    ("nee.schedule=cosine", "nee.schedule", "scaled_linear", "'cosine'"),
    ("nee.beta_end=0.0001", "nee.beta_end", "> beta_start", "0.0001"),
    ("optim.lr=0", "optim.lr", "> 0.0", "0"),
    ("optim.optimizer=lamb", "optim.optimizer", "adamw", "'lamb'"),
    ("voting.weights.fusion=-1", "voting.weights.fusion", ">= 0.0", "-1"),
    ("voting.space=vote", "voting.space", "logit, prob", "'vote'"),
    ("model.head_hidden=[256, 0]", "model.head_hidden[1]", ">= 1", "0"),
    ("data.folds=0", "data.folds", ">= 1", "0"),
    ("data.val_fraction=1.5", "data.val_fraction", "< 1.0", "1.5"),
    ("data.source=csv", "data.source", "synthetic-mer, features, uci-mfeat", "'csv'"),
    ("data.source=features", "data.features.root", "feature directory", "None"),
    ("nee.enabled=maybe", "nee.enabled", "bool", "'maybe'"),
    ("self_training.minority_threshold=1.2", "self_training.minority_threshold", "<= 1.0", "1.2"),
    ("runtime.device=tpu", "runtime.device", "auto, cpu, cuda", "'tpu'"),
    ("seed=-1", "seed", ">= 0", "-1"),
    # Fields without an upper bound took inf (and "nan" strings): a run that diverges, or a CPU count of inf
    ("optim.weight_decay=.inf", "optim.weight_decay", "a finite number", "inf"),
    ("loss.w_cls=inf", "loss.w_cls", "a finite number", "inf"),
    ("nee.default_timesteps=.inf", "nee.default_timesteps", "int", "inf"),
    ("missing.retrieval.temperature=nan", "missing.retrieval.temperature", "a finite number", "nan"),
    # A repeated class shifted the label index of every later class (a class then never had samples)
    ("data.features.classes=[a, b, b]", "data.features.classes[2]", "distinct class names", "'b'"),
    ("data.features.classes=[a, ' ']", "data.features.classes[1]", "non-empty class name", "' '"),
    ("data.synthetic.classes=[x, y, x]", "data.synthetic.classes[2]", "distinct class names", "'x'"),
]


@pytest.mark.parametrize(("override", "field", "allowed", "given"), BAD_OVERRIDES)
def test_bad_values_name_field_allowed_and_given(override, field, allowed, given):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    message = str(err.value)
    assert message.startswith(f"{field}:"), message
    assert allowed in message and f"given: {given}" in message
    assert "\n" not in message


def test_unknown_key_in_yaml_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  hidden_dimm: 3\n")
    with pytest.raises(ConfigError, match=r"^model\.hidden_dimm: unknown key"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("model: [1, 2\n", "invalid YAML at line"), ("- 1\n- 2\n", "expected a mapping"), ("model: 3\n", "model")],
)
def test_bad_yaml_files_are_one_line_user_errors(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserInputError) as err:
        load_config(path)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_a_key_given_twice_is_an_error_not_a_silent_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: 0.1}\nmodel: {hidden_dim: 64}\noptim: {lr: 0.2}\n")  # safe_load kept the last
    with pytest.raises(UserInputError, match=r"c\.yaml: invalid YAML at line 3, column 1: key 'optim' appears twice"):
        load_config(path)
    path.write_text("base: &b {lr: 0.1}\noptim: {<<: *b, weight_decay: 0.0}\n")  # a merge key is no repeat
    with pytest.raises(ConfigError, match=r"^base: unknown key"):
        load_config(path)


def test_a_yaml_file_that_is_not_utf8_is_a_one_line_user_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("model: {fusion: caf\xe9}\n".encode("latin-1"))  # was a UnicodeDecodeError: exit 1
    with pytest.raises(UserInputError, match=r"c\.yaml: not UTF-8 text \(byte 0xe9 at offset 19\)$"):
        load_config(path)


def test_missing_file_and_malformed_set():
    with pytest.raises(UserInputError, match="not found"):
        load_config("/nonexistent/config.yaml")
    with pytest.raises(UserInputError, match="KEY=VALUE"):
        load_config(None, ["model.hidden_dim"])


def test_defaults_are_the_reference_recipe_and_shipped_yaml_matches():
    cfg = ExperimentConfig()
    assert (cfg.optim.lr, cfg.optim.batch_size, cfg.model.hidden_dim, cfg.model.nhead) == (1e-3, 32, 128, 8)
    assert dict(cfg.voting.weights) == {"audio": 0.7, "video": 0.4, "text": 0.3, "fusion": 0.7}
    assert (cfg.self_training.dominant_threshold, cfg.self_training.minority_threshold) == (0.99, 0.85)
    assert (cfg.nee.beta_start, cfg.nee.beta_end, cfg.nee.schedule) == (0.001, 0.1, "scaled_linear")
    assert (cfg.loss.w_cls, cfg.loss.w_modality, cfg.loss.w_noise) == (1.0, 1.0, 0.0)
    assert load_config("mer_core/configs/mrccl.yaml") == cfg


def test_round_trip_is_identity(tmp_path):
    cfg = load_config(
        None,
        [
            "model.hidden_dim=256",
            "voting.weights.audio=0.2",
            "model.head_hidden=[64]",
            "data.synthetic.dims={eeg: 8, gaze: 3}",
            "optim.grad_clip=null",
        ],
    )
    assert build_config(yaml.safe_load(dump_config(cfg))) == cfg
    path = save_config(cfg, tmp_path / "out.yaml", header="hello")
    assert path.read_text().startswith("# hello")
    assert load_config(path) == cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_configs_are_immutable_and_overrides_make_new_ones():
    cfg = ExperimentConfig()
    with pytest.raises(AttributeError):
        cfg.model.hidden_dim = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.voting.weights["audio"] = 0.0
    new = with_overrides(cfg, {"model.hidden_dim": 64, "nee.timesteps.audio": 180})
    assert (new.model.hidden_dim, new.nee.timesteps["audio"], new.nee.timesteps["text"]) == (64, 180, 100)
    assert cfg.model.hidden_dim == 128


def test_modality_defining_maps_replace_their_default_others_merge():
    cfg = load_config(None, ["data.synthetic.dims={eeg: 4}", "voting.weights={audio: 0.1}"])
    assert dict(cfg.data.synthetic.dims) == {"eeg": 4}
    assert dict(cfg.voting.weights) == {"audio": 0.1, "video": 0.4, "text": 0.3, "fusion": 0.7}


def test_numbers_written_without_a_dot_are_accepted_for_floats():
    assert load_config(None, ["optim.lr=1e-4"]).optim.lr == 1e-4


def test_flatten_gives_dotted_params():
    flat = flatten(ExperimentConfig())
    assert flat["model.hidden_dim"] == 128 and flat["voting.weights.fusion"] == 0.7
