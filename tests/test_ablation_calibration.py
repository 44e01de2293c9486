"""Evidence that the ablation's verdicts can be trusted: simulated studies through the real procedure
(`sweeps.ablation.calibration` runs the looks, the per-look levels and the decision rule the searcher
uses), seeded and fast (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from sweeps.ablation.calibration import calibrate, interval_coverage, simulate_studies
from sweeps.ablation.sequential import SequentialDesign
from sweeps.ablation.verdicts import DIFFERENT, EQUIVALENT, min_detectable


@pytest.fixture(scope="module")
def calibration():
    return calibrate(studies=3000, variants=4, initial=3, max_seeds=10, seed=0)


def test_identical_arms_are_called_different_in_at_most_5_percent_of_studies(calibration):
    # Four variants, looks at 3..10 seeds, Bonferroni across variants and alpha spending across looks.
    assert calibration.studies >= 2000 and calibration.variants >= 4 and len(calibration.looks) == 8
    assert calibration.false_positive <= 0.05
    assert calibration.aa_equivalent > 0.5  # and most identical arms end as "equivalent", not "undecided"


def test_the_claimed_detectable_difference_is_detected_in_80_percent_of_studies(calibration):
    assert calibration.power >= 0.80


def test_the_paired_difference_interval_covers_the_truth_93_to_97_percent_at_five_seeds(calibration):
    assert 0.93 <= calibration.coverage_n5 <= 0.97
    assert 0.93 <= interval_coverage(5, studies=3000, effect=-0.02, seed=9) <= 0.97


def test_a_planted_difference_is_found_in_its_direction_and_a_null_one_ends_equivalent():
    design = SequentialDesign(looks=(3, 4, 5, 6, 7, 8), alpha=0.05, comparisons=2)
    effect = min_detectable(1.0, 8, design.final_level)
    out = simulate_studies([-effect, 0.0], design, studies=2000, noise_sd=0.05, min_effect=0.5, seed=4)
    assert np.mean(out.decisions[:, 0] == DIFFERENT) > 0.99 and np.all(
        out.diff_mean[out.decisions[:, 0] == DIFFERENT, 0] < 0
    )
    assert np.mean(out.decisions[:, 1] == EQUIVALENT) > 0.99
    assert out.seeds[:, 1].mean() < 5  # decided at the early looks: seeds are spent where they are needed
