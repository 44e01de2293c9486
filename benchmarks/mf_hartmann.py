"""MF-Hartmann6: the published multi-fidelity Hartmann function in six dimensions (a minimisation).

Definition (Kandasamy et al. 2017, "Multi-fidelity Bayesian Optimisation with Continuous
Approximations", ICML, arXiv:1703.06240, appendix; the same function as `MFHartmann(dim=6)` in
the mfhpo-benchmark-api package of Watanabe et al. 2023, "Python Wrapper for Simulating
Multi-Fidelity Optimization on HPO Benchmarks without Any Wait"):

    f(x, z) = - sum_i (alpha_i - b (1 - z)) exp(- sum_j A_ij (x_j - P_ij)^2),   x in [0, 1]^6

with the Hartmann6 constants alpha, A, P below, fidelity z in (0, 1] (1 = full fidelity),
bias b = 0.1, and observations that carry Gaussian noise of variance 0.05. At z = 1 it is the
Hartmann6 function, whose global minimum is -3.32237 at X_STAR. Lower fidelities scale every
basin down by the same bias, so a configuration's early value is its final one, a little worse,
seen through the same noise.

Here the fidelity is a trial's epoch: after epoch t of `epochs` a trial observes f(x, t / epochs)
plus noise, like a learning curve; the noise is seeded by the benchmark seed and the point, so a
configuration's curve is the same wherever and whenever it is evaluated.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["BIAS", "DIM", "F_STAR", "NOISE_STD", "X_STAR", "curve", "mf_hartmann6"]

DIM = 6
BIAS = 0.1
NOISE_STD = float(np.sqrt(0.05))
ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
A = np.array(
    [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ]
)
P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)
X_STAR = np.array([0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573])
F_STAR = -3.32237


def mf_hartmann6(x: np.ndarray, z: float | np.ndarray = 1.0) -> np.ndarray:
    """Noise-free f(x, z) for points `x` (..., 6) at fidelities `z` (broadcast against x[..., 0])."""
    x = np.asarray(x, dtype=np.float64)
    bumps = np.exp(-np.sum(A * (x[..., None, :] - P) ** 2, axis=-1))  # (..., 4)
    alphas = ALPHA - BIAS * (1.0 - np.asarray(z, dtype=np.float64))[..., None]  # (..., 4)
    return -np.sum(alphas * bumps, axis=-1)


def curve(x: np.ndarray, *, epochs: int, seed: int) -> np.ndarray:
    """The noisy observations after epochs 1..`epochs` of the configuration `x` (6,), as a learning curve."""
    x = np.asarray(x, dtype=np.float64)
    digest = hashlib.blake2b(x.tobytes() + seed.to_bytes(8, "little"), digest_size=8).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "little"))
    z = np.arange(1, epochs + 1) / epochs
    return mf_hartmann6(np.broadcast_to(x, (epochs, DIM)), z) + NOISE_STD * rng.standard_normal(epochs)
