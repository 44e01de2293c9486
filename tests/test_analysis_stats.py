"""analysis.stats: bootstrap CIs against scipy and simulated truth, paired tests, Holm, verdicts, pairing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from analysis.stats import (
    Comparison,
    bootstrap_ci,
    compare_variants,
    holm,
    paired_differences,
    paired_test,
    verdict,
)
from mer_core.errors import ConfigError

FIXED = np.array([0.61, 0.64, 0.58, 0.66, 0.63, 0.59, 0.70, 0.62, 0.65, 0.60, 0.57, 0.68])
DIFFS = np.array([0.012, -0.004, 0.021, 0.008, 0.015, -0.002, 0.011, 0.019, 0.006])


# --- bootstrap_ci ---------------------------------------------------------------------------------


@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_bootstrap_matches_scipy_percentile(confidence: float) -> None:
    low, high = bootstrap_ci(FIXED, confidence=confidence, n_boot=10_000, seed=3)
    ref = sps.bootstrap(
        (FIXED,),
        np.mean,
        n_resamples=10_000,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(11),
    ).confidence_interval
    tol = 0.01 * np.ptp(FIXED)
    assert low == pytest.approx(ref.low, abs=tol)
    assert high == pytest.approx(ref.high, abs=tol)
    assert low < FIXED.mean() < high


def test_bootstrap_other_statistic_is_vectorised() -> None:
    low, high = bootstrap_ci(FIXED, statistic=np.median, n_boot=2_000, seed=0)
    assert low < np.median(FIXED) < high
    assert (low, high) != bootstrap_ci(FIXED, n_boot=2_000, seed=0)  # the statistic was really used


def test_bootstrap_coverage_on_simulated_normal_samples() -> None:
    # Known truth: 400 samples of n=10 from N(0.7, 0.02); the percentile CI should cover 0.7 about
    # 91-95% of the time (it is slightly narrow at n=10).
    rng = np.random.default_rng(2024)
    samples = rng.normal(0.7, 0.02, size=(400, 10))
    covered = [lo <= 0.7 <= hi for lo, hi in (bootstrap_ci(s, n_boot=2_000, seed=i) for i, s in enumerate(samples))]
    assert 0.88 <= np.mean(covered) <= 0.99


def test_bootstrap_is_deterministic_per_seed() -> None:
    assert bootstrap_ci(FIXED, seed=5) == bootstrap_ci(FIXED, seed=5)
    assert bootstrap_ci(FIXED, seed=5) != bootstrap_ci(FIXED, seed=6)


def test_bootstrap_degenerate_samples() -> None:
    assert bootstrap_ci([0.42]) == (0.42, 0.42)
    assert bootstrap_ci([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3))


@pytest.mark.parametrize("bad", [[], [0.1, math.nan], [0.1, math.inf], [[0.1, 0.2]]])
def test_bootstrap_rejects_bad_values(bad: list) -> None:
    with pytest.raises(ValueError):
        bootstrap_ci(bad)


def test_bootstrap_rejects_bad_options() -> None:
    with pytest.raises(ConfigError, match=r"confidence.*\(0, 1\).*1\.5"):
        bootstrap_ci(FIXED, confidence=1.5)
    with pytest.raises(ConfigError, match="n_boot"):
        bootstrap_ci(FIXED, n_boot=0)


# --- paired_differences / paired_test -------------------------------------------------------------


def test_paired_differences() -> None:
    np.testing.assert_allclose(paired_differences([0.7, 0.8], [0.5, 0.9]), [0.2, -0.1])
    with pytest.raises(ValueError, match="differ in length"):
        paired_differences([0.7, 0.8], [0.5])
    with pytest.raises(ValueError):
        paired_differences([], [])


def test_paired_test_matches_scipy() -> None:
    assert paired_test(DIFFS) == pytest.approx(sps.wilcoxon(DIFFS).pvalue, rel=1e-12)
    assert paired_test(DIFFS, method="t") == pytest.approx(sps.ttest_1samp(DIFFS, 0.0).pvalue, rel=1e-12)
    # n = 9 without ties or zeros: the exact null distribution, not the normal approximation.
    assert paired_test(DIFFS) == pytest.approx(sps.wilcoxon(DIFFS, method="exact").pvalue, rel=1e-12)


def test_paired_test_degenerate_cases() -> None:
    for method in ("wilcoxon", "t"):
        assert paired_test(np.zeros(6), method=method) == 1.0
    assert paired_test([0.03], method="t") == 1.0
    assert paired_test([0.03, 0.03, 0.03], method="t") == 0.0
    assert paired_test([0.03] * 5) == pytest.approx(2 / 2**5)  # five seeds cannot reach 0.05


def test_paired_test_rejects_unknown_method() -> None:
    with pytest.raises(ConfigError, match=r"test.*wilcoxon \| t.*'sign'"):
        paired_test(DIFFS, method="sign")


# --- holm -----------------------------------------------------------------------------------------


def test_holm_hand_example() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06.
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


def test_holm_second_hand_example_with_cap() -> None:
    # sorted 0.002, 0.02, 0.3, 0.6, 0.7 times 5..1 = 0.01, 0.08, 0.9, 1.2, 0.7 -> max, cap at 1.
    np.testing.assert_allclose(holm([0.3, 0.002, 0.7, 0.02, 0.6]), [0.9, 0.01, 1.0, 0.08, 1.0])


def test_holm_properties() -> None:
    p = np.random.default_rng(0).uniform(0, 0.2, size=30)
    adj = holm(p)
    assert np.all(adj >= p) and np.all(adj <= 1.0)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)
    assert holm([0.04]).tolist() == [0.04]
    assert holm([]).size == 0
    with pytest.raises(ValueError):
        holm([0.1, 1.2])


# --- verdict --------------------------------------------------------------------------------------


def test_verdict_words() -> None:
    assert verdict(-0.05, -0.01, 0.01) == "worse than reference"
    assert verdict(0.01, 0.05, 0.01) == "better than reference"
    assert verdict(0.01, 0.05, 0.01, higher_is_better=False) == "worse than reference"
    assert verdict(-0.01, 0.05, 0.001) == "no detectable difference"  # CI covers 0
    assert verdict(0.01, 0.05, 0.2) == "no detectable difference"  # test not significant
    assert verdict(0.01, 0.05, 0.05) == "no detectable difference"
    with pytest.raises(ValueError):
        verdict(math.nan, 0.1, 0.01)


# --- compare_variants -----------------------------------------------------------------------------


def _simulated_ablation(n_seeds: int = 10) -> dict[str, dict[int, float]]:
    # Per-seed effects are shared by all variants (same split and init), as in a real ablation.
    rng = np.random.default_rng(7)
    seed_effect = rng.normal(0.0, 0.02, size=n_seeds)
    full = {s: 0.70 + seed_effect[s] + rng.normal(0, 0.004) for s in range(n_seeds)}
    return {
        "full": full,
        "no_nee": {s: v - 0.05 + rng.normal(0, 0.004) for s, v in full.items()},
        "no_voting": {s: v + rng.normal(0, 0.004) for s, v in full.items()},
    }


def test_compare_variants_finds_the_true_effects() -> None:
    rows = compare_variants(_simulated_ablation(), reference="full", n_boot=4_000)
    assert [r.variant for r in rows] == ["full", "no_nee", "no_voting"]
    ref, worse, same = rows
    assert ref.verdict == "reference" and ref.diff_mean == 0.0 and math.isnan(ref.p_value)
    assert worse.verdict == "worse than reference"
    assert worse.diff_ci_high < 0 and worse.diff_mean == pytest.approx(-0.05, abs=0.01)
    assert same.verdict == "no detectable difference"
    assert same.diff_ci_low <= 0 <= same.diff_ci_high or same.p_adj >= 0.05
    # Holm across the two non-reference variants.
    np.testing.assert_allclose([worse.p_adj, same.p_adj], holm([worse.p_value, same.p_value]))
    assert all(r.n == 10 and r.n_seeds == 10 for r in rows)


def test_compare_variants_lower_is_better_flips_the_word() -> None:
    rows = compare_variants(_simulated_ablation(), reference="full", n_boot=2_000, higher_is_better=False)
    assert rows[1].verdict == "better than reference"


def test_compare_variants_pairs_by_seed_intersection() -> None:
    scores = {
        "variant": {1: 0.60, 2: 0.55, 3: 0.70, 9: 0.10},
        "full": {0: 0.99, 1: 0.62, 2: 0.58, 3: 0.71},
        "orphan": {42: 0.5, 43: 0.6},
    }
    rows = compare_variants(scores, reference="full", n_boot=1_000, test="t")
    assert [r.variant for r in rows] == ["full", "variant", "orphan"]
    variant = rows[1]
    assert (variant.n, variant.n_seeds) == (3, 4)
    assert variant.diff_mean == pytest.approx(np.mean([-0.02, -0.03, -0.01]))
    assert variant.mean == pytest.approx(np.mean([0.60, 0.55, 0.70, 0.10]))
    assert variant.p_value == pytest.approx(sps.ttest_1samp([-0.02, -0.03, -0.01], 0.0).pvalue)
    assert variant.p_adj == pytest.approx(variant.p_value)  # the orphan is not part of the Holm family
    orphan = rows[2]
    assert orphan.verdict == "no paired seeds" and orphan.n == 0
    assert math.isnan(orphan.diff_mean) and math.isnan(orphan.p_adj)
    assert orphan.mean == pytest.approx(0.55)


def _same_rows(a: list[Comparison], b: list[Comparison]) -> bool:
    # NaN-aware equality (the reference row's p-values are NaN).
    return all(
        [x.variant, x.verdict, x.n, x.n_seeds] == [y.variant, y.verdict, y.n, y.n_seeds]
        and np.array_equal(_floats(x), _floats(y), equal_nan=True)
        for x, y in zip(a, b, strict=True)
    )


def _floats(row: Comparison) -> np.ndarray:
    return np.array(
        [row.mean, row.ci_low, row.ci_high, row.diff_mean, row.diff_ci_low, row.diff_ci_high, row.p_value, row.p_adj]
    )


def test_compare_variants_is_deterministic_and_order_independent() -> None:
    scores = _simulated_ablation()
    a = compare_variants(scores, reference="full", n_boot=1_000, seed=4)
    b = compare_variants(scores, reference="full", n_boot=1_000, seed=4)
    flipped = compare_variants(dict(reversed(scores.items())), reference="full", n_boot=1_000, seed=4)
    assert _same_rows(a, b)
    names = [r.variant for r in a]
    assert [r.variant for r in flipped] == ["full", "no_voting", "no_nee"]
    assert _same_rows(a, sorted(flipped, key=lambda r: names.index(r.variant)))


def test_compare_variants_rejects_bad_input() -> None:
    scores = _simulated_ablation()
    with pytest.raises(ConfigError, match=r"reference.*full \| no_nee \| no_voting.*'nope'"):
        compare_variants(scores, reference="nope")
    with pytest.raises(ConfigError, match="test"):
        compare_variants(scores, reference="full", test="anova")
    with pytest.raises(ValueError, match=r"'no_nee'.*\[3\]"):
        compare_variants({**scores, "no_nee": {**scores["no_nee"], 3: math.nan}}, reference="full")
    with pytest.raises(ValueError, match="no scores"):
        compare_variants({"full": {}, "x": {0: 0.5}}, reference="full")
