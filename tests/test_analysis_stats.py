"""analysis.stats and sweeps.ablation.verdicts: intervals against scipy and simulated truth, verdicts that
cannot contradict their interval, power and seeds needed, P(improvement), pairing, variance sources."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from analysis.stats import (
    Comparison,
    bootstrap_ci,
    compare_variants,
    mean_interval,
    paired_differences,
    probability_of_improvement,
)
from analysis.variance import variance_components
from mer_core.errors import ConfigError
from sweeps.ablation.sequential import SequentialDesign, nominal_levels, obf_spending
from sweeps.ablation.verdicts import judge, min_detectable, paired_interval, power, seeds_needed

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


# --- paired_differences / intervals --------------------------------------------------------------


def test_paired_differences() -> None:
    np.testing.assert_allclose(paired_differences([0.7, 0.8], [0.5, 0.9]), [0.2, -0.1])
    with pytest.raises(ValueError, match="differ in length"):
        paired_differences([0.7, 0.8], [0.5])
    with pytest.raises(ValueError):
        paired_differences([], [])


def test_paired_interval_is_scipys_t_interval_and_t_test() -> None:
    mean, low, high, p = paired_interval(DIFFS, 0.05)
    ref = sps.ttest_1samp(DIFFS, 0.0)
    ci = ref.confidence_interval(0.95)
    assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-12) and mean == pytest.approx(DIFFS.mean())
    assert mean_interval(FIXED) == pytest.approx(tuple(sps.ttest_1samp(FIXED, 0.0).confidence_interval(0.95)))


def test_paired_interval_degenerate_cases() -> None:
    assert paired_interval([0.03], 0.05) == (0.03, -math.inf, math.inf, 1.0)
    assert paired_interval([0.0, 0.0, 0.0], 0.05) == (0.0, 0.0, 0.0, 1.0)
    assert paired_interval([0.02, 0.02], 0.05) == (0.02, 0.02, 0.02, 0.0)
    with pytest.raises(ValueError):
        paired_interval([0.1, math.nan], 0.05)


def test_t_interval_holds_its_coverage_at_five_seeds_where_the_percentile_bootstrap_does_not() -> None:
    rng = np.random.default_rng(5)
    samples = rng.normal(0.01, 0.02, size=(1000, 5))
    t_cover = [lo <= 0.01 <= hi for _, lo, hi, _ in (paired_interval(s, 0.05) for s in samples)]
    boot_cover = [lo <= 0.01 <= hi for lo, hi in (bootstrap_ci(s, n_boot=1_000, seed=i) for i, s in enumerate(samples))]
    assert 0.93 <= np.mean(t_cover) <= 0.97
    assert np.mean(boot_cover) < 0.90  # why the percentile bootstrap no longer decides anything


# --- the sequential design ------------------------------------------------------------------------


def test_one_look_is_the_bonferroni_level() -> None:
    assert SequentialDesign(looks=(5,), alpha=0.05, comparisons=4).level(5) == pytest.approx(0.0125)
    assert nominal_levels((7,), 0.05) == pytest.approx((0.05,))


def test_spending_levels_are_increasing_and_spend_alpha_in_total() -> None:
    looks = (3, 4, 5, 6, 7, 8, 9, 10)
    levels = nominal_levels(looks, 0.0125)
    assert all(a < b for a, b in itertools.pairwise(levels))
    assert levels[-1] < 0.0125 and levels[-1] > 0.7 * 0.0125  # the last look keeps most of the level
    assert obf_spending(1.0, 0.0125) == pytest.approx(0.0125)
    # The error really spent, by simulation of the z-statistics (Brownian motion at the looks).
    rng = np.random.default_rng(0)
    sums = np.cumsum(rng.standard_normal((400_000, looks[-1])), axis=1)[:, [n - 1 for n in looks]]  # (R, K)
    z = np.abs(sums) / np.sqrt(np.array(looks))
    crossed = np.any(z >= sps.norm.isf(np.array(levels) / 2), axis=1)
    assert crossed.mean() == pytest.approx(0.0125, abs=0.0015)


def test_a_seed_count_between_looks_uses_the_last_look_reached() -> None:
    design = SequentialDesign(looks=(3, 5, 7), alpha=0.05, comparisons=2)
    levels = nominal_levels((3, 5, 7), 0.025)
    assert [design.level(n) for n in (2, 3, 4, 5, 6, 7)] == pytest.approx(
        [levels[0], levels[0], levels[0], levels[1], levels[1], levels[2]]
    )
    with pytest.raises(ValueError):
        SequentialDesign(looks=(5, 3))


# --- verdicts, power, seeds needed ----------------------------------------------------------------


def test_power_matches_simulation_and_mde_inverts_it() -> None:
    rng = np.random.default_rng(1)
    sd, n, level, effect = 0.02, 8, 0.0125, 0.025
    d = rng.normal(effect, sd, size=(20_000, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    simulated = np.mean(np.abs(t) > sps.t.isf(level / 2, n - 1))
    assert power(effect, sd, n, level) == pytest.approx(simulated, abs=0.01)
    mde = min_detectable(sd, n, level)
    assert power(mde, sd, n, level) == pytest.approx(0.8, abs=1e-6)


def test_seeds_needed_is_the_first_count_with_80_percent_power() -> None:
    n = seeds_needed(0.02, 0.01, 0.0125)
    assert power(0.01, 0.02, n, 0.0125) >= 0.8 > power(0.01, 0.02, n - 1, 0.0125)
    assert seeds_needed(0.02, 0.02, 0.0125) < n  # a larger effect needs fewer seeds


def test_verdicts_follow_the_interval_and_never_contradict_it() -> None:
    design = SequentialDesign(looks=(5,), alpha=0.05, comparisons=3)
    rng = np.random.default_rng(3)
    for _ in range(300):
        d = rng.normal(rng.choice([0.0, 0.01, 0.03]), 0.01, size=5)
        v = judge(d, design, min_effect=0.01, assess_power=False)
        excludes = v.ci_low > 0 or v.ci_high < 0
        assert (v.decision == "different") == excludes == (v.p_corrected < 0.05)
        inside = v.ci_low > -0.01 and v.ci_high < 0.01
        assert (v.decision == "equivalent") == (inside and not excludes)
    same = judge([0.001, -0.001, 0.0005, 0.0, -0.0005], design, min_effect=0.01)
    assert same.decision == "equivalent" and same.words(min_effect=0.01) == "equivalent within ±0.01"
    open_ = judge([0.01, -0.02, 0.03, 0.0, -0.01], design, min_effect=0.01)
    assert open_.decision == "undecided" and open_.more_seeds == open_.seeds_needed - 5 > 0
    assert open_.words() == f"undecided: about {open_.more_seeds} more seeds needed"
    assert judge([0.05, 0.06, 0.055, 0.052, 0.058], design).words(higher_is_better=False) == "different: worse"


def test_no_verdict_before_the_first_look() -> None:
    design = SequentialDesign(looks=(4, 8), alpha=0.05)
    assert judge([0.05, 0.06, 0.055], design).decision == "undecided"


# --- P(improvement) -------------------------------------------------------------------------------


def test_probability_of_improvement_hand_example_and_direction() -> None:
    # candidate runs 3, 5 vs reference runs 4, 5: pairs (3>4 no, 3>5 no, 5>4 yes, 5=5 half) = 1.5 / 4
    p, low, high = probability_of_improvement([3.0, 5.0], [4.0, 5.0], n_boot=500)
    assert p == pytest.approx(0.375) and 0.0 <= low <= p <= high <= 1.0
    p_min, _, _ = probability_of_improvement([3.0, 5.0], [4.0, 5.0], higher_is_better=False, n_boot=10)
    assert p_min == pytest.approx(0.625)  # 3<4, 3<5 yes, 5<4 no, 5=5 half: 2.5 / 4
    assert probability_of_improvement(FIXED + 1, FIXED, n_boot=100)[0] == 1.0


# --- compare_variants -----------------------------------------------------------------------------


def _simulated_ablation(n_seeds: int = 10) -> dict[str, dict[int, float]]:
    # Per-seed effects are shared by all variants (same split and init), as in a real ablation.
    rng = np.random.default_rng(7)
    seed_effect = rng.normal(0.0, 0.02, size=n_seeds)
    full = {s: 0.70 + seed_effect[s] + rng.normal(0, 0.004) for s in range(n_seeds)}
    return {
        "full": full,
        "no_nee": {s: v - 0.05 + rng.normal(0, 0.004) for s, v in full.items()},
        "no_voting": {s: v + rng.normal(0, 0.0005) for s, v in full.items()},
    }


def test_compare_variants_finds_the_true_effects() -> None:
    rows = compare_variants(_simulated_ablation(), reference="full", min_effect=0.01, n_boot=1_000)
    assert [r.variant for r in rows] == ["full", "no_nee", "no_voting"]
    ref, worse, same = rows
    assert ref.verdict == "reference" and ref.diff_mean == 0.0 and math.isnan(ref.p_value)
    assert worse.verdict == "different: worse" and worse.p_adj < 0.05
    assert worse.diff_ci_high < 0 and worse.diff_mean == pytest.approx(-0.05, abs=0.01)
    assert worse.p_improve == pytest.approx(0.0, abs=0.1)
    assert same.verdict == "equivalent within ±0.01" and -0.01 < same.diff_ci_low <= same.diff_ci_high < 0.01
    assert worse.level == pytest.approx(0.025)  # Bonferroni over the two variants, one look
    assert worse.p_adj == pytest.approx(min(1.0, 2 * worse.p_value))
    assert all(r.n == 10 and r.n_seeds == 10 for r in rows)
    assert worse.mde > 0 and worse.seeds_needed is not None


def test_compare_variants_lower_is_better_flips_the_word() -> None:
    rows = compare_variants(_simulated_ablation(), reference="full", n_boot=200, higher_is_better=False)
    assert rows[1].verdict == "different: better"
    assert rows[2].verdict.startswith("undecided")  # no min_effect: no equivalence verdict


def test_compare_variants_pairs_by_seed_intersection() -> None:
    scores = {
        "variant": {1: 0.60, 2: 0.55, 3: 0.70, 9: 0.10},
        "full": {0: 0.99, 1: 0.62, 2: 0.58, 3: 0.71},
        "orphan": {42: 0.5, 43: 0.6},
    }
    rows = compare_variants(scores, reference="full", n_boot=100)
    assert [r.variant for r in rows] == ["full", "variant", "orphan"]
    variant = rows[1]
    assert (variant.n, variant.n_seeds) == (3, 4)
    assert variant.diff_mean == pytest.approx(np.mean([-0.02, -0.03, -0.01]))
    assert variant.mean == pytest.approx(np.mean([0.60, 0.55, 0.70, 0.10]))
    assert variant.p_value == pytest.approx(sps.ttest_1samp([-0.02, -0.03, -0.01], 0.0).pvalue)
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
        [row.mean, row.ci_low, row.ci_high, row.diff_mean, row.diff_ci_low, row.diff_ci_high, row.p_value, row.p_adj,
         row.p_improve, row.p_improve_low, row.p_improve_high]
    )  # fmt: skip


def test_compare_variants_is_deterministic_and_order_independent() -> None:
    scores = _simulated_ablation()
    a = compare_variants(scores, reference="full", n_boot=300, seed=4)
    b = compare_variants(scores, reference="full", n_boot=300, seed=4)
    flipped = compare_variants(dict(reversed(scores.items())), reference="full", n_boot=300, seed=4)
    assert _same_rows(a, b)
    names = [r.variant for r in a]
    assert [r.variant for r in flipped] == ["full", "no_voting", "no_nee"]
    assert _same_rows(a, sorted(flipped, key=lambda r: names.index(r.variant)))


def test_compare_variants_rejects_bad_input() -> None:
    scores = _simulated_ablation()
    with pytest.raises(ConfigError, match=r"reference.*full \| no_nee \| no_voting.*'nope'"):
        compare_variants(scores, reference="nope")
    with pytest.raises(ConfigError, match="min_effect"):
        compare_variants(scores, reference="full", min_effect=-0.1)
    with pytest.raises(ValueError, match=r"'no_nee'.*\[3\]"):
        compare_variants({**scores, "no_nee": {**scores["no_nee"], 3: math.nan}}, reference="full")
    with pytest.raises(ValueError, match="no scores"):
        compare_variants({"full": {}, "x": {0: 0.5}}, reference="full")


# --- variance sources -----------------------------------------------------------------------------


def test_variance_components_recover_planted_init_and_split_spread() -> None:
    rng = np.random.default_rng(11)
    k, init_sd, split_sd, noise_sd = 12, 0.02, 0.01, 0.005
    a, b = rng.normal(0, init_sd, k), rng.normal(0, split_sd, k)
    cells = {(i, j): 0.7 + a[i] + b[j] + rng.normal(0, noise_sd) for i in range(k) for j in range(k)}
    vc = variance_components(cells)
    assert vc is not None
    assert math.sqrt(vc.init) == pytest.approx(init_sd, rel=0.5)
    assert math.sqrt(vc.split) == pytest.approx(split_sd, rel=0.5)
    assert math.sqrt(vc.residual) == pytest.approx(noise_sd, rel=0.2)
    assert vc.shares()["init"] > vc.shares()["split"] > vc.shares()["residual"]
    assert "init" in vc.to_text("m") and "split" in vc.to_text("m")


def test_variance_components_drop_incomplete_rows_and_clip_negative_estimates() -> None:
    cells = {(i, j): float(j) * 0.01 for i in range(3) for j in range(3)}  # split only, no init spread
    del cells[(2, 1)]
    vc = variance_components(cells)
    assert vc is not None and vc.init_seeds == (0, 1) and vc.init == 0.0 and vc.split > 0
    assert variance_components({(0, 0): 0.5, (0, 1): 0.6}) is None


# --- the table read back from a sweep's runs --------------------------------------------------------


def _run(i: int, variant: str, phase: str, seed: int, split: int, value: float):
    from analysis.runs import TrialRun

    params = {"ablation.variant": variant, "ablation.seed": str(seed), "ablation.phase": phase}
    params.update({"seed": str(seed), "data.fold_seed": str(split)})
    return TrialRun(f"r{i}", f"t{i}", f"t{i}", "ok", params, {"val/weighted_f1": value}, {})


def test_the_table_judges_with_the_logged_design_and_reports_the_variance_sources() -> None:
    from analysis.compare import ablation_table, to_markdown, to_text
    from analysis.runs import SweepRuns

    ablation = {
        "reference": "full",
        "variants": {"full": {}, "worse": {"nee.enabled": False}},
        "seeds": {"initial": 3, "max": 5},
        "min_effect": 0.01,
        "variance_seeds": 2,
    }
    spec = {"kind": "ablation", "metric": "val/weighted_f1", "mode": "max", "ablation": ablation}
    runs = [_run(s, "full", "eval", s, s, 0.7 + 0.01 * s) for s in range(5)]
    runs += [_run(10 + s, "worse", "eval", s, s, 0.6 + 0.01 * s + 0.001 * (s % 2)) for s in range(5)]
    cells = {(0, 0): 0.70, (0, 1): 0.72, (1, 0): 0.75, (1, 1): 0.771}
    runs += [_run(20 + k, "full", "variance", i, j, v) for k, ((i, j), v) in enumerate(cells.items())]
    sweep = SweepRuns("uri", "exp", "0", "parent", "abl", spec, tuple(runs))
    table = ablation_table(sweep, n_boot=200)
    assert table.design.looks == (3, 4, 5) and table.min_effect == 0.01
    ref, worse = table.rows
    assert (
        ref.n_seeds == 5
        and worse.decision == "different"
        and worse.level == pytest.approx(nominal_levels((3, 4, 5), 0.05)[-1])
    )
    assert table.variance is not None and table.variance.init_seeds == (0, 1)
    assert table.variance.init > table.variance.split  # init moved the score by 0.05, the split by 0.02
    assert "variance sources" in table.variance.to_text(table.metric)
    assert "different: worse" in to_text(table) and "| worse |" in to_markdown(table)


PARAM_STRINGS = ["0.001", "1e-3", "32", "-4", ".inf", "True", "false", "None", "null", "gated", "[1, 2]", "{a: 1}"]


@pytest.mark.parametrize("raw", [*PARAM_STRINGS, "'x", "a: b: c"])
def test_a_param_reads_back_as_yaml_reads_it_and_lists_are_never_shared(raw):
    import yaml

    from analysis.runs import parse_param

    try:
        expected = yaml.safe_load(raw)
    except yaml.YAMLError:
        expected = raw  # not YAML: the string itself
    got = parse_param(raw)
    assert got == expected and type(got) is type(expected)
    if isinstance(got, (list, dict)):
        got.clear()  # memoised, but a caller's change never reaches the next caller
        assert parse_param(raw) == expected
