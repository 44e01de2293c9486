"""NEE: beta schedules, per-modality ᾱ tables and the noised copies of the inputs."""

from __future__ import annotations

import math

import pytest
import torch

from mer_core.configs.schema import NEEConfig
from mer_core.errors import ConfigError
from mer_core.nee import SCHEDULES, NoiseSchedules, add_noise, alphas_cumprod, beta_schedule

KINDS = sorted(SCHEDULES)
NOISES = ["gaussian", "impulse", "gaussian_dropout"]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("steps", [1, 2, 25, 100, 300])
def test_schedule_shapes_and_ranges(kind: str, steps: int) -> None:
    betas = beta_schedule(kind, steps, 0.001, 0.1)
    ab = alphas_cumprod(kind, steps, 0.001, 0.1)
    assert betas.shape == ab.shape == (steps,)
    assert betas.dtype == ab.dtype == torch.float32
    assert bool(((betas > 0) & (betas < 1)).all())
    assert bool(((ab > 0) & (ab <= 1)).all())
    assert bool((ab[1:] < ab[:-1]).all()), "ᾱ_t must decrease strictly"


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "sigmoid"])
def test_bounded_schedules_stay_within_beta_range(kind: str) -> None:
    betas = beta_schedule(kind, 50, 0.001, 0.1).double()
    assert bool((betas[1:] >= betas[:-1]).all())
    assert betas.min() >= 0.001 - 1e-7 and betas.max() <= 0.1 + 1e-7


def test_schedule_formulas() -> None:
    lin = beta_schedule("linear", 5, 0.1, 0.5, dtype=torch.float64)
    torch.testing.assert_close(lin, torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5], dtype=torch.float64))
    sl = beta_schedule("scaled_linear", 3, 0.01, 0.09, dtype=torch.float64)
    torch.testing.assert_close(sl, torch.tensor([0.01, 0.04, 0.09], dtype=torch.float64))
    sig = beta_schedule("sigmoid", 3, 0.001, 0.1, dtype=torch.float64)
    expect = torch.sigmoid(torch.tensor([-6.0, 0.0, 6.0], dtype=torch.float64)) * 0.099 + 0.001
    torch.testing.assert_close(sig, expect)
    ab = alphas_cumprod("linear", 5, 0.1, 0.5, dtype=torch.float64)
    torch.testing.assert_close(ab, torch.cumprod(1 - lin, 0))


def test_cosine_matches_nichol_dhariwal_and_ignores_beta_range() -> None:
    steps = 40

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    expect = [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)]
    got = beta_schedule("squaredcos_cap_v2", steps, 0.001, 0.1, dtype=torch.float64)
    torch.testing.assert_close(got, torch.tensor(expect, dtype=torch.float64))
    assert got.max() <= 0.999
    torch.testing.assert_close(got, beta_schedule("squaredcos_cap_v2", steps, 0.2, 0.3, dtype=torch.float64))


def test_bad_schedule_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"nee\.schedule.*linear"):
        beta_schedule("cosine", 10)
    with pytest.raises(ConfigError, match=r"nee\.timesteps"):
        beta_schedule("linear", 0)


def test_noise_schedules_per_modality_with_default() -> None:
    cfg = NEEConfig(timesteps={"audio": 180, "text": 40}, default_timesteps=77, schedule="linear")
    sched = NoiseSchedules.from_config(cfg, ("audio", "text", "eeg"))
    assert [sched.timesteps(m) for m in ("audio", "text", "eeg")] == [180, 40, 77]
    torch.testing.assert_close(sched["eeg"], alphas_cumprod("linear", 77, cfg.beta_start, cfg.beta_end))
    with pytest.raises(KeyError, match="video"):
        sched["video"]
    assert sched.to("cpu")["audio"].shape == (180,)


def _inputs(shape_tail: tuple[int, ...], seed: int = 1) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    return {"a": torch.randn((8, *shape_tail), generator=g), "zz": torch.randn((8, 5), generator=g)}


@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tail", [(6,), (3, 6)])
def test_add_noise_shapes_and_determinism(noise: str, kind: str, tail: tuple[int, ...]) -> None:
    cfg = NEEConfig(noise=noise, schedule=kind, timesteps={"a": 30}, default_timesteps=12)
    sched = NoiseSchedules.from_config(cfg, ("a", "zz"))
    x = _inputs(tail)
    before = {m: v.clone() for m, v in x.items()}
    out1 = add_noise(x, sched, cfg, generator=_gen(5))
    out2 = add_noise(x, sched, cfg, generator=_gen(5))
    out3 = add_noise(x, sched, cfg, generator=_gen(6))
    for m in x:
        assert out1[m].shape == x[m].shape and out1[m].dtype == x[m].dtype
        assert torch.isfinite(out1[m]).all()
        torch.testing.assert_close(out1[m], out2[m], rtol=0, atol=0)
        torch.testing.assert_close(x[m], before[m], rtol=0, atol=0)  # inputs untouched
    assert any(not torch.equal(out1[m], out3[m]) for m in x)


def test_gaussian_formula_and_draw_order() -> None:
    cfg = NEEConfig(schedule="linear", timesteps={"a": 50, "b": 20})
    sched = NoiseSchedules.from_config(cfg, ("a", "b"))
    x = {"a": torch.randn(4, 3, generator=_gen(0)), "b": torch.randn(4, 2, 7, generator=_gen(1))}
    got = add_noise(x, sched, cfg, generator=_gen(9))
    # The documented order: one uniform per modality for t, then ε for every modality's block, end to end.
    g = _gen(9)
    u = torch.rand((1, 2), generator=g)
    eps = torch.randn(4 * 3 + 4 * 14, generator=g)
    for j, (m, v, block) in enumerate((("a", x["a"], slice(0, 12)), ("b", x["b"], slice(12, 68)))):
        t = int(u[0, j] * sched.timesteps(m))
        ab = sched[m][t]
        torch.testing.assert_close(got[m], ab.sqrt() * v + (1 - ab).sqrt() * eps[block].reshape(v.shape))
        assert got[m].is_contiguous()


def test_timesteps_are_uniform_over_each_modalitys_schedule() -> None:
    # Two modalities with different T: every step of each is drawn, and none beyond its own table.
    cfg = NEEConfig(schedule="linear", timesteps={"a": 7, "b": 3})
    sched = NoiseSchedules.from_config(cfg, ("a", "b"))
    x = {"a": torch.ones(4000, 1), "b": torch.ones(4000, 1)}
    y = add_noise(
        x,
        sched,
        NEEConfig(schedule="linear", timesteps={"a": 7, "b": 3}, noise="impulse", occur_freq=0.0),
        generator=_gen(4),
        per_sample=True,
    )
    for m, steps in (("a", 7), ("b", 3)):
        seen = y[m].squeeze(1) ** 2  # ᾱ_t: impulse noise with frequency 0 leaves sqrt(ᾱ_t)·1
        expected = sched[m]
        hits = torch.isclose(seen[:, None], expected[None, :]).float()  # (4000, T)
        assert bool((hits.sum(1) >= 1).all())  # every draw is one of its own table's steps
        counts = hits.sum(0)
        assert int((counts > 0).sum()) == steps and float(counts.min()) > 4000 / steps * 0.8


def test_schedules_in_another_order_than_the_inputs() -> None:
    cfg = NEEConfig(schedule="linear", timesteps={"a": 50, "b": 20})
    x = {"b": torch.randn(4, 2), "a": torch.randn(4, 3)}
    ab = add_noise(x, NoiseSchedules.from_config(cfg, ("a", "b")), cfg, generator=_gen(1))
    ba = add_noise(x, NoiseSchedules.from_config(cfg, ("b", "a")), cfg, generator=_gen(1))
    for m in x:
        torch.testing.assert_close(ab[m], ba[m], rtol=0, atol=0)  # tables follow the inputs' order


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("per_sample", [False, True])
def test_gaussian_is_variance_preserving(kind: str, per_sample: bool) -> None:
    cfg = NEEConfig(schedule=kind, timesteps={"a": 100})
    sched = NoiseSchedules.from_config(cfg, ("a",))
    x = {"a": torch.randn(4096, 32, generator=_gen(2))}
    for seed in range(3):
        y = add_noise(x, sched, cfg, generator=_gen(seed), per_sample=per_sample)["a"]
        assert abs(float(y.mean())) < 0.02
        assert abs(float(y.var()) - 1.0) < 0.05


def test_per_sample_draws_differ_between_rows() -> None:
    cfg = NEEConfig(schedule="linear", timesteps={"a": 300})
    sched = NoiseSchedules.from_config(cfg, ("a",))
    x = {"a": torch.ones(64, 2000)}
    y = add_noise(x, sched, cfg, generator=_gen(0), per_sample=True)["a"]
    # The row mean estimates sqrt(ᾱ_t); with one t per row these differ across rows.
    assert float(y.mean(dim=1).std()) > 0.05
    y1 = add_noise(x, sched, cfg, generator=_gen(0))["a"]
    assert float(y1.mean(dim=1).std()) < 0.05


@pytest.mark.parametrize("freq", [0.0, 0.3, 0.7, 1.0])
def test_impulse_is_sign_noise_with_occurrence_rate(freq: float) -> None:
    cfg = NEEConfig(noise="impulse", schedule="linear", occur_freq=freq, timesteps={"a": 10})
    sched = NoiseSchedules.from_config(cfg, ("a",))
    x = {"a": torch.zeros(256, 256)}
    y = add_noise(x, sched, cfg, generator=_gen(3))["a"]
    scale = y.abs().max()
    if freq == 0.0:
        assert scale == 0
        return
    levels = set((y / scale).unique().tolist())
    assert levels <= {-1.0, 0.0, 1.0}
    nonzero = (y != 0).float().mean().item()
    assert abs(nonzero - freq) < 0.02
    assert abs((y > 0).float().mean().item() - freq / 2) < 0.02


def test_gaussian_dropout_needs_no_schedule() -> None:
    x = {"a": torch.full((2048, 64), 2.0)}
    same = add_noise(x, None, NEEConfig(noise="gaussian_dropout", dropout_p=0.0), generator=_gen(0))
    torch.testing.assert_close(same["a"], x["a"])
    cfg = NEEConfig(noise="gaussian_dropout", dropout_p=0.5)
    ratio = add_noise(x, None, cfg, generator=_gen(0))["a"] / 2.0
    assert abs(float(ratio.mean()) - 1.0) < 0.02
    assert abs(float(ratio.var()) - 1.0) < 0.05  # p / (1 - p) = 1


def test_scheduled_noise_without_schedules_fails_clearly() -> None:
    with pytest.raises(ValueError, match="schedules"):
        add_noise({"a": torch.zeros(2, 3)}, None, NEEConfig(), generator=_gen(0))


@pytest.mark.parametrize("noise", ["gaussian", "impulse", "gaussian_dropout"])
def test_one_draw_for_every_modality(noise: str) -> None:
    # Item 2 of the GPU-trainer issue: the noise of all modalities comes from a fixed number of draws,
    # not two per modality, so a step's kernel count does not grow with the modalities.
    from torch.profiler import ProfilerActivity, profile

    names = [f"m{i}" for i in range(6)]
    cfg = NEEConfig(noise=noise, timesteps={m: 10 + i for i, m in enumerate(names)})
    sched = NoiseSchedules.from_config(cfg, names)
    x = {m: torch.randn(8, 3 + i) for i, m in enumerate(names)}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        add_noise(x, sched, cfg, generator=_gen(0))
    draws = [e.key for e in prof.key_averages() for _ in range(e.count) if e.key in ("aten::rand", "aten::randn")]
    assert len(draws) == (1 if noise == "gaussian_dropout" else 2), draws
