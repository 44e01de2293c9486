"""The recipe's plan: which loss terms each stage holds, and the named seeds of a fold."""

from __future__ import annotations

import pytest

from mer_core.configs import ExperimentConfig, with_overrides
from mer_core.train.plan import FoldSeeds, noise_seed, round_stage, stage_terms


def _cfg(**overrides) -> ExperimentConfig:
    return with_overrides(ExperimentConfig(), {k.replace("__", "."): v for k, v in overrides.items()})


def test_pretraining_always_holds_the_modality_term_and_never_classification():
    terms = stage_terms(_cfg(loss__pretrain_w_modality=0.0, loss__pretrain_w_noise=2.0), "pretrain")
    assert terms.present == {"modality", "noise"}
    assert terms.weights == {"cls": 0.0, "modality": 0.0, "noise": 2.0, "negative": 0.0}
    assert stage_terms(_cfg(nee__enabled=False), "pretrain").present == {"modality"}  # no noise without NEE


def test_finetuning_holds_a_term_only_when_it_is_weighed():
    base = stage_terms(_cfg(loss__w_noise=0.25), "finetune")
    assert base.present == {"cls", "modality", "noise"}
    assert base.weights == {"cls": 1.0, "modality": 1.0, "noise": 0.25, "negative": 0.0}
    assert stage_terms(_cfg(loss__w_modality=0.0), "finetune").present == {"cls"}
    assert stage_terms(_cfg(loss__w_noise=0.25, nee__enabled=False), "finetune").present == {"cls", "modality"}
    negative = stage_terms(_cfg(loss__neg_beta=0.05), "finetune")
    assert negative.uses("negative") and negative.weights["negative"] == 1.0
    with pytest.raises(ValueError, match="stage kind"):
        stage_terms(_cfg(), "predict")  # type: ignore[arg-type]


def test_fold_seeds_are_the_recorded_streams():
    """These numbers are part of every stored result: same seed, same init, noise and batches."""
    seeds = FoldSeeds.of(3, fold=2)
    assert seeds.init == 3 * 1009 + 2
    assert seeds.noise == seeds.init + 1 == noise_seed(seeds.init)
    assert seeds.batches == seeds.init + 2
    assert seeds.round(2) == seeds.init + 20
    assert len({FoldSeeds.of(s, k).init for s in range(20) for k in range(20)}) == 400
    assert round_stage(1) == "self_training_1"
