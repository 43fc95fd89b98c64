"""The predicted forgetting of least-squares and reduced-rank fits against a Monte-Carlo
simulation of the same fits (lorasweep.analysis.estimation)."""

import numpy as np
import pytest
import torch

from lorasweep.analysis.estimation import predicted_forgetting, top_energy, trace_m
from lorasweep.tables.oracles import least_squares, reduced_rank

D, N, K_SOURCE, LEAK, SIGMA = 24, 320, 4, 0.1, 0.3
TASK_S = np.array([2.0, 1.0])
RANKS = (2, 6, None)
NOISE_TOLERANCE = {2: 0.15, 6: 0.08, None: 0.05}
"""About twice the Monte-Carlo standard error of each mean; full FT's is tight enough to tell
n − d − 2 from n."""


def _orthonormal(gen, d, m, avoid=None):
    a = torch.randn(d, m, generator=gen, dtype=torch.float64)
    if avoid is not None:
        a = a - avoid @ (avoid.T @ a)
    return torch.linalg.qr(a).Q


@pytest.fixture(scope="module")
def simulated():
    """rank → (forgetting, noise part) per draw: fresh source directions, ΔW*, X and ε each
    draw, as lorasweep.tasks.synthetic draws them."""
    gen = torch.Generator().manual_seed(21)
    out = {rank: ([], []) for rank in RANKS}
    for _ in range(40):
        vk = _orthonormal(gen, D, K_SOURCE)
        projector = vk @ vk.T
        source_cov = projector + LEAK * (torch.eye(D, dtype=torch.float64) - projector)
        u, v = _orthonormal(gen, D, 2), _orthonormal(gen, D, 2, avoid=vk)
        truth = (u * torch.from_numpy(TASK_S)) @ v.T
        x = torch.randn(N, D, generator=gen, dtype=torch.float64)
        along = (x @ vk) @ vk.T
        x = np.sqrt(LEAK) * along + (x - along)
        r = x @ truth.T + SIGMA * torch.randn(N, D, generator=gen, dtype=torch.float64)
        for rank in RANKS:
            if rank is None:
                delta, offset = least_squares(x, r, intercept=True)
            else:
                delta, offset = reduced_rank(x, r, rank, intercept=False)
            error = delta - truth

            def cost(m, c=offset, source_cov=source_cov):
                return float((torch.trace(m @ source_cov @ m.T) + c.square().sum()) / D)

            out[rank][0].append(cost(delta))
            out[rank][1].append(cost(error))
    return out


@pytest.mark.parametrize("rank", RANKS)
def test_noise_part_matches_simulation(simulated, rank):
    predicted = predicted_forgetting(N, D, D, SIGMA, LEAK, K_SOURCE, TASK_S, rank, rank is None)
    noise = np.mean(simulated[rank][1])
    assert predicted.noise == pytest.approx(noise, rel=NOISE_TOLERANCE[rank])


@pytest.mark.parametrize("rank", RANKS)
def test_total_matches_simulated_forgetting(simulated, rank):
    predicted = predicted_forgetting(N, D, D, SIGMA, LEAK, K_SOURCE, TASK_S, rank, rank is None)
    values = np.asarray(simulated[rank][0])
    assert abs(predicted.total - values.mean()) < 0.02 * predicted.total
    assert predicted.signal == pytest.approx(LEAK * np.sum(TASK_S**2) / D)


def test_rank_fit_forgets_less_noise_than_full():
    args = (2048, 128, 128, 0.05, 0.05, 16, [1.0] * 8)
    full = predicted_forgetting(*args, rank=None, intercept=True)
    low = predicted_forgetting(*args, rank=8)
    assert low.noise < full.noise / 10
    assert full.noise / 0.05**2 == pytest.approx(trace_m(128, 16, 0.05) / (2047 - 129), rel=0.01)


def test_full_rank_reduced_rank_equals_least_squares():
    args = (400, 20, 20, 0.2, 0.1, 3, [1.0, 0.5])
    assert predicted_forgetting(*args, rank=20).noise == pytest.approx(
        predicted_forgetting(*args, rank=None).noise
    )
    parts = predicted_forgetting(*args, rank=19).noise
    assert parts < predicted_forgetting(*args, rank=None).noise


def test_top_energy_against_sampled_singular_values():
    rng = np.random.default_rng(0)
    for rows, cols, m in [(30, 30, 6), (40, 20, 5)]:
        samples = [
            np.sort(np.linalg.svd(rng.standard_normal((rows, cols)), compute_uv=False) ** 2)[::-1][
                :m
            ].sum()
            for _ in range(60)
        ]
        assert top_energy(rows, cols, m) == pytest.approx(np.mean(samples), rel=0.04)
    assert top_energy(10, 7, 7) == 70
    assert top_energy(10, 7, 0) == 0
