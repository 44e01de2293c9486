"""Simulated ablations that check the verdicts keep their promises (pure numpy, seeded, fast).

A simulated study is what an adaptive ablation does, with scores drawn from a known model
instead of trained: `score[variant, seed] = seed_effect[seed] + effect[variant] + noise`, the seed
effect shared by every variant (what pairing removes). At each look of the design every variant
still undecided is judged over the first n seeds with `sweeps.ablation.verdicts` (the interval,
the same decision rule and the same per-look level the searcher uses); a decided variant stops
getting seeds, the reference runs while any variant is open.

`simulate` returns the rates the issue asks for:
- A/A (every effect 0): the family-wise rate of any "different" over all variants and looks;
- a planted effect: how often the variant carrying it is called different, in its true direction;
- coverage of the fixed-design interval (one look) of the true difference.

    python -m sweeps.ablation.calibration      # prints the numbers quoted in the README
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sweeps.ablation.sequential import SequentialDesign
from sweeps.ablation.verdicts import DIFFERENT, EQUIVALENT, UNDECIDED, decide, min_detectable, t_interval


@dataclass(frozen=True)
class StudyOutcome:
    """Decisions of many simulated studies: `decisions[study, variant]`, seeds each variant ran."""

    decisions: np.ndarray  # (S, V) str
    seeds: np.ndarray  # (S, V) paired seeds a variant had when it was decided or the maximum was hit
    diff_mean: np.ndarray  # (S, V) mean paired difference at that point

    def rate(self, decision: str, variants: slice | list[int] | None = None) -> float:
        """Share of studies in which any of `variants` (default all) got `decision`."""
        sel = self.decisions if variants is None else self.decisions[:, variants]
        return float(np.mean(np.any(sel == decision, axis=1)))


def simulate_studies(
    effects: np.ndarray | list[float],
    design: SequentialDesign,
    *,
    studies: int,
    noise_sd: float,
    seed_sd: float = 0.0,
    min_effect: float | None = None,
    seed: int = 0,
) -> StudyOutcome:
    """Run `studies` adaptive ablations with true effects `effects[v]` (variant minus reference).

    Args:
        effects: (V,) true mean difference of each variant to the reference.
        design: Looks and family-wise alpha (its `comparisons` should equal V).
        studies: Number of simulated studies.
        noise_sd: Per-score noise sd (a paired difference has sd noise_sd * sqrt(2)).
        seed_sd: Sd of the seed effect every variant of a seed shares (cancels in the pairing).
        min_effect: The equivalence band (None: no equivalence verdict, variants run to the maximum).
        seed: Seed of the generator; same seed, same outcome.
    """
    eff = np.asarray(effects, dtype=np.float64)  # (V,)
    rng = np.random.default_rng(seed)
    n_max = design.max_seeds
    shared = rng.normal(0.0, seed_sd, size=(studies, 1, n_max))  # (S, 1, N) seed effect
    ref = shared[:, 0, :] + rng.normal(0.0, noise_sd, size=(studies, n_max))  # (S, N)
    arms = shared + eff[None, :, None] + rng.normal(0.0, noise_sd, size=(studies, eff.size, n_max))  # (S, V, N)
    diffs = arms - ref[:, None, :]  # (S, V, N) paired by seed
    decisions = np.full((studies, eff.size), UNDECIDED, dtype=object)  # (S, V)
    seeds = np.zeros((studies, eff.size), dtype=int)  # (S, V)
    means = np.zeros((studies, eff.size))  # (S, V)
    open_ = np.ones((studies, eff.size), dtype=bool)  # (S, V) still getting seeds
    for n in design.looks:
        head = diffs[:, :, :n]  # (S, V, n) the seeds seen at this look
        mean = head.mean(axis=2)  # (S, V)
        sd = head.std(axis=2, ddof=1) if n > 1 else np.full_like(mean, math.inf)  # (S, V)
        low, high = t_interval(mean, sd, n, design.level(n)) if n > 1 else (-sd, sd)
        now = decide(low, high, reached=True, min_effect=min_effect)  # (S, V)
        decisions = np.where(open_, now, decisions)
        seeds = np.where(open_, n, seeds)
        means = np.where(open_, mean, means)
        open_ &= now == UNDECIDED
    return StudyOutcome(decisions.astype(str), seeds, means)


def interval_coverage(n: int, *, studies: int, alpha: float = 0.05, effect: float = 0.01, seed: int = 0) -> float:
    """Share of fixed-design (one look, one variant) intervals over n seeds covering the true difference."""
    rng = np.random.default_rng(seed)
    design = SequentialDesign(looks=(n,), alpha=alpha)
    diffs = effect + rng.normal(0.0, 0.02, size=(studies, n))  # (S, n)
    low, high = t_interval(diffs.mean(axis=1), diffs.std(axis=1, ddof=1), n, design.level(n))  # (S,) each
    return float(np.mean((low <= effect) & (effect <= high)))


@dataclass(frozen=True)
class Calibration:
    """The numbers the README quotes (and the tests check)."""

    studies: int
    variants: int
    looks: tuple[int, ...]
    false_positive: float  # A/A: share of studies with any "different"
    aa_equivalent: float  # A/A: share of variant verdicts "equivalent" (the study's useful answer)
    planted_effect: float  # in units of the paired-difference sd
    power: float  # share of studies calling the planted variant different in its true direction
    mean_seeds_aa: float  # average paired seeds a variant ran under A/A
    coverage_n5: float


def calibrate(
    *, studies: int = 4000, variants: int = 4, initial: int = 3, max_seeds: int = 10, seed: int = 0
) -> Calibration:
    """A/A false positives, power at the claimed detectable effect, and coverage at n = 5.

    The planted effect is the MDE the procedure claims for `max_seeds` paired seeds at its last
    look's level (`min_detectable`), with the equivalence band set to the same size, the setting
    in which a user asks "is there a difference of at least min_effect".
    """
    looks = tuple(range(initial, max_seeds + 1))
    design = SequentialDesign(looks=looks, alpha=0.05, comparisons=variants)
    noise_sd = 1.0 / math.sqrt(2.0)  # paired differences with sd 1: effects read in sd units
    effect = min_detectable(1.0, max_seeds, design.final_level)
    common = {"studies": studies, "noise_sd": noise_sd, "seed_sd": 1.0, "min_effect": effect}
    aa = simulate_studies([0.0] * variants, design, seed=seed, **common)
    planted = simulate_studies([effect] + [0.0] * (variants - 1), design, seed=seed + 1, **common)
    hit = (planted.decisions[:, 0] == DIFFERENT) & (planted.diff_mean[:, 0] > 0)
    return Calibration(
        studies=studies,
        variants=variants,
        looks=looks,
        false_positive=aa.rate(DIFFERENT),
        aa_equivalent=float(np.mean(aa.decisions == EQUIVALENT)),
        planted_effect=effect,
        power=float(np.mean(hit)),
        mean_seeds_aa=float(aa.seeds.mean()),
        coverage_n5=interval_coverage(5, studies=studies, seed=seed + 2),
    )


def main() -> None:
    c = calibrate()
    print(
        f"{c.studies} simulated studies, {c.variants} variants vs a reference, looks at {list(c.looks)} paired seeds\n"
        f"A/A: P(any variant 'different') = {c.false_positive:.3f} (target <= 0.05); "
        f"{c.aa_equivalent:.1%} of variants 'equivalent', {c.mean_seeds_aa:.1f} seeds per variant on average\n"
        f"planted difference {c.planted_effect:.3f} sd (the claimed 80%-power MDE at {c.looks[-1]} seeds): "
        f"detected in {c.power:.3f} of studies (target >= 0.80)\n"
        f"fixed design, n = 5: the 95% interval covers the true difference in {c.coverage_n5:.3f} of studies"
    )


if __name__ == "__main__":
    main()
