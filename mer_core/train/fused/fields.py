"""What fused mode does with every config field, and grouping of configs into populations.

Each field of `ExperimentConfig` has exactly one kind here (tests/test_fused_fields.py enumerates
the dataclass fields and fails on any field this table does not classify):

- `member`: each member keeps its own value inside one fused model (optimiser scalars, loss
  weights, dropout rates, NEE, self-training, voting, the seed, the test-time missing rates, and
  `data.fold_seed`: each member trains and validates on its own folds of the one loaded dataset);
- `schedule`: one value per population, because it fixes the step sequence every member shares
  (the data, batch sizes, epoch counts, optimiser type, runtime). Members that differ are refused
  by `group_by_shape`; a sweep splits them into separate populations first (`schedule_key`);
- `shape`: members that differ need another module or another fold mask, so they train in
  separate populations (`group_by_shape` splits them): hidden sizes, fusion operator, heads,
  loss settings the shared module reads as Python values, the missing-modality protocol;
- `refused`: fused mode cannot honour a value other than the allowed ones, so a config that sets
  one is refused with a one-line ConfigError naming the field (exit 2), never silently ignored.

A section entry (`data`) classifies every field below it; all other entries are single fields,
so a field added later fails the test until someone decides its kind.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mer_core.configs import flatten
from mer_core.configs.schema import ExperimentConfig
from mer_core.errors import ConfigError
from mer_core.missing.protocol import drops_any

__all__ = [
    "FIELDS",
    "Rule",
    "check_fusable",
    "dataclass_fields",
    "group_by_shape",
    "kind_of",
    "refused_values",
    "schedule_key",
    "template_key",
]

Kind = Literal["member", "schedule", "shape", "refused"]


@dataclass(frozen=True)
class Rule:
    kind: Kind
    allowed: tuple[Any, ...] = ()  # refused: the values fused mode runs
    why: str = ""  # refused: what the user is told


_M, _S, _G = Rule("member"), Rule("schedule"), Rule("shape")

FIELDS: dict[str, Rule] = {
    "seed": _M,
    "data": _S,  # loaded once per sweep; every field below it fixes the rows every member reads
    # `data.seed` draws the one dataset (schedule, under `data`); `data.fold_seed` only a member's folds
    # (its own index sets of equal size; the split seeds of an ablation)
    "data.fold_seed": _M,
    # model: the module's structure, except the dropout rates (per member through marker rates)
    "model.hidden_dim": _G,
    "model.layers": _G,
    "model.nhead": _G,
    "model.ff_dim": _G,
    "model.dropout": _M,
    "model.attention_shortcut": _G,
    "model.invariant_slope": _G,
    "model.fusion": _G,
    "model.fusion_rank": _G,
    "model.fusion_input": _G,
    "model.head": _G,
    "model.head_hidden": _G,
    "model.head_batchnorm": _G,
    "model.head_dropout": _M,
    # loss: weights are per-member tensors; what the shared TrainNet reads as Python values is shape
    "loss.w_cls": _M,
    "loss.w_modality": _M,
    "loss.w_noise": _M,
    "loss.pretrain_w_modality": _M,
    "loss.pretrain_w_noise": _M,
    "loss.temperature_init": _M,
    "loss.learnable_temperature": _M,
    "loss.contrastive_target": _G,
    "loss.label_smoothing": _G,
    "loss.cls_heads": _G,
    "loss.neg_alpha": _G,
    "loss.neg_beta": _G,
    "loss.neg_temperature": _G,
    # NEE: noise is drawn per member, outside vmap, from the member's own generator
    "nee.enabled": _M,
    "nee.schedule": _M,
    "nee.beta_start": _M,
    "nee.beta_end": _M,
    "nee.timesteps": _M,
    "nee.default_timesteps": _M,
    "nee.noise": _M,
    "nee.occur_freq": _M,
    "nee.dropout_p": _M,
    "self_training.rounds": _M,
    "self_training.dominant_threshold": _M,
    "self_training.minority_threshold": _M,
    "self_training.class_thresholds": _M,
    "self_training.dominant_share": _M,
    "self_training.oversample": _M,
    "self_training.oversample_to": _M,
    "self_training.max_pseudo": _M,
    "self_training.reinit": _M,
    "voting.weights": _M,
    "voting.default_weight": _M,
    "voting.space": _M,
    "optim.optimizer": _S,
    "optim.lr": _M,
    "optim.weight_decay": _M,
    "optim.batch_size": _S,
    "optim.max_epochs": _S,
    "optim.patience": _M,
    "optim.pretrain_epochs": _S,
    "optim.pretrain_batch_size": _S,
    "optim.grad_clip": _M,
    # missing: one fold mask per population; test-time rates are scored per member after training
    "missing.train_rate": _G,
    "missing.train_rates": _G,
    "missing.test_rate": _G,
    "missing.test_rates": _G,
    "missing.seed": _G,
    "missing.eval_rates": _M,
    "missing.impute": Rule(
        "refused",
        ("zero",),
        "an imputer re-encodes stored states with each member's own model and fills them inside the "
        "forward pass (retrieval searches with FAISS on the CPU), which a vmapped step cannot do per member",
    ),
    "missing.retrieval.k": _G,
    "missing.retrieval.aggregation": _G,
    "missing.retrieval.temperature": _G,
    "runtime.device": _S,
    "runtime.precision": _S,
    "runtime.compile": Rule("refused", (False,), "fused populations run uncompiled"),
    "runtime.capture": _S,  # one graph per step of the whole population (executor.py)
    "runtime.threads": _S,
}


def dataclass_fields(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Dotted names of every leaf field of a config dataclass (nested dataclasses expanded)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        name, hint = f"{prefix}{f.name}", hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            out += dataclass_fields(hint, f"{name}.")
        else:
            out.append(name)
    return out


def kind_of(field: str) -> Rule:
    """The rule of a dotted field (a map entry such as `nee.timesteps.audio` follows its map)."""
    parts = field.split(".")
    for n in range(len(parts), 0, -1):
        rule = FIELDS.get(".".join(parts[:n]))
        if rule is not None:
            return rule
    raise KeyError(f"{field}: not classified in mer_core.train.fused.fields.FIELDS")


def refused_values() -> dict[str, Rule]:
    """Field -> rule of every field fused mode refuses at values other than `rule.allowed`."""
    return {name: rule for name, rule in FIELDS.items() if rule.kind == "refused"}


def check_fusable(cfg: ExperimentConfig, *, sampled: Iterable[str] = ()) -> None:
    """ConfigError (exit 2) naming the first refused field that `cfg` sets to a value fused mode cannot
    honour, or that a search space samples (`sampled`: its dotted field names)."""
    flat, sampled = flatten(cfg), set(sampled)
    for name, rule in refused_values().items():
        value = flat.get(name)
        if name in sampled or value not in rule.allowed:
            allowed = ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in rule.allowed)
            given = "sampled by the search space" if name in sampled else value
            raise ConfigError(name, f"{allowed} ({rule.why})", given, "not available with execution.mode: fused")


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def _key(cfg: ExperimentConfig, kinds: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple((k, _hashable(v)) for k, v in sorted(flatten(cfg).items()) if kind_of(k).kind in kinds)


def schedule_key(cfg: ExperimentConfig) -> tuple[Any, ...]:
    """The values one population must share (equal keys may train together)."""
    return _key(cfg, ("schedule",))


def template_key(cfg: ExperimentConfig) -> tuple[Any, ...]:
    """The values that decide the fused module's structure; equal keys can share one population.

    `data.fold_seed` is per member, except under a missing protocol that drops pairs: the fold mask then
    depends on the fold's validation rows, and members share one mask. Dropout rates are per
    member, except for two structural facts: whether the heads hold a
    Dropout module at all (an `fc` head only inserts one for `head_dropout > 0`), and, with
    `attention_shortcut: false`, the rate inside `nn.MultiheadAttention` (read as a float there).
    """
    key = list(_key(cfg, ("shape", "refused")))
    key.append(("model.head_dropout > 0", cfg.model.head_dropout > 0))
    if drops_any(cfg.missing):  # the fold mask drops test-time pairs on the fold's validation rows
        key.append(("data.fold_seed", cfg.data.split_seed))
    if not cfg.model.attention_shortcut and cfg.model.layers > 0:
        key.append(("model.dropout", cfg.model.dropout))
    return tuple(key)


def _check_schedule(cfgs: Sequence[ExperimentConfig]) -> None:
    flats = [flatten(c) for c in cfgs]
    names = sorted({k for f in flats for k in f if kind_of(k).kind == "schedule"})
    differing = {}
    for name in names:
        values = {repr(_hashable(f.get(name, "<unset>"))) for f in flats}
        if len(values) > 1:
            differing[name] = sorted(values)
    if differing:
        raise ConfigError(
            ", ".join(differing),
            "one value for every member of a fused population (data, batch sizes, epoch counts, optimizer "
            "and runtime must agree; members may differ in seed, optim.lr/weight_decay/patience/grad_clip, "
            "loss weights, dropout, nee.*, self_training.*, voting.*)",
            {k: ", ".join(v) for k, v in differing.items()},
            problem="differs between members",
        )


def group_by_shape(cfgs: Sequence[ExperimentConfig]) -> list[list[int]]:
    """Split configs into groups that can each train as one fused population.

    Args:
        cfgs: the members' validated configs.

    Returns:
        Lists of indices into `cfgs`, grouped by `template_key`, groups in order of their
        first member, indices ascending.

    Raises:
        ConfigError: a config sets a value fused mode refuses (`check_fusable`), or a schedule
            field differs between members; the message names every such field with the values.
    """
    if not cfgs:
        return []
    for cfg in cfgs:
        check_fusable(cfg)
    _check_schedule(cfgs)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, cfg in enumerate(cfgs):
        groups.setdefault(template_key(cfg), []).append(i)
    return list(groups.values())
