"""What estimation theory predicts for the forgetting of a least-squares fit on a ``lowrank``
task with a source task (:mod:`lorasweep.tasks.synthetic`), before any run is trained.

The source task's optimum is W₀, so a fitted update Δ̂ (and bias offset ĉ) raises the source
risk by F = (tr(Δ̂ Σ_src Δ̂ᵀ) + ‖ĉ‖²) / d_out, normalised as the losses are. Target inputs have
Σ_tgt = (I − P) + leak·P, source inputs Σ_src = P + leak·(I − P), with P the projector onto the
k source directions; ΔW*'s input directions are orthogonal to them. Write Δ̂ = ΔW*_r + E: F splits
into a *signal* part, tr(ΔW*_r Σ_src ΔW*_rᵀ)/d_out = leak·‖ΔW*_r‖²/d_out (what learning the task
itself costs; ΔW*_r its best rank-r part), and a *noise* part E[tr(E Σ_src Eᵀ)]/d_out, what
fitting the noise costs. The cross term has mean zero.

Full fine-tuning, ordinary least squares on n samples of dimension d = d_in. Given X the
error's rows are N(0, σ²(XᵀX)⁻¹), and E(XᵀX)⁻¹ = Σ_tgt⁻¹/(n − d − 1) for Gaussian rows (the mean
of an inverse Wishart matrix; Anderson, *An Introduction to Multivariate Statistical Analysis*,
3rd ed. 2003, §7.2; with an intercept n − 1 samples remain, so n − d − 2). Hence

    noise_full = s²·tr(M),   s² = σ²/(n − d − 1),   M = Σ_src Σ_tgt⁻¹ = P/leak + leak·(I − P),
    tr(M) = k/leak + leak·(d − k),

plus, with an intercept, the bias error σ²(n − 2)/(n(n − d − 2)) (the intercept's variance
σ²(1/n + x̄ᵀ(X_cᵀX_c)⁻¹x̄), averaged over x̄).

A rank-r fit, reduced-rank regression (the oracle of :mod:`lorasweep.tables.oracles`). To first
order its error is the OLS error projected onto the tangent space of the rank-k′ matrices at
ΔW*_{k′} in the Σ_tgt metric, k′ = min(r, task rank) (the delta method for the reduced-rank
MLE; Anderson 1999, Ann. Statist. 27:1141; Reinsel & Velu 1998, §2.5). With V the input
directions of ΔW*, where M = leak, that projection costs

    s²·[k′·tr(M) + (d_out − k′)·k′·leak].

Each of the r − k′ further directions fits noise alone: the fitted values' noise is an exact
d_in × d_out matrix of iid N(0, σ²) entries (the noise projected on X's column space), and
reduced-rank regression keeps its top singular directions. Their energy is the sum of the top
r − k′ squared singular values of a (d_in − k′) × (d_out − k′) standard Gaussian matrix, taken
from the Marchenko–Pastur law (Marchenko & Pastur 1967), each spread over the input space
outside V, where M averages (tr(M) − k′·leak)/(d_in − k′). At r = d_out the three parts add up to
noise_full exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """Predicted source-loss increase of one fit: ``signal`` from learning ΔW*_r, ``noise``
    from fitting the noise; ``total`` is their sum."""

    signal: float
    noise: float

    @property
    def total(self) -> float:
        return self.signal + self.noise


def trace_m(d_in: int, k_source: int, leak: float) -> float:
    """tr(Σ_src Σ_tgt⁻¹) = k/leak + leak·(d − k)."""
    return k_source / leak + leak * (d_in - k_source)


def top_energy(rows: int, cols: int, m: int, grid: int = 20001) -> float:
    """E of the sum of the top ``m`` squared singular values of a ``rows`` × ``cols`` matrix of
    iid N(0, 1) entries, from the Marchenko–Pastur law (exact for the sum of all of them)."""
    p, q = max(rows, cols), min(rows, cols)
    m = min(max(m, 0), q)
    if m == 0:
        return 0.0
    if m == q:
        return float(p * q)
    c = q / p
    low, high = (1 - np.sqrt(c)) ** 2, (1 + np.sqrt(c)) ** 2
    theta = np.linspace(0.0, np.pi, grid)
    lam = low + (high - low) * (1 - np.cos(theta)) / 2
    weight = np.zeros_like(theta)
    inside = lam > 0
    weight[inside] = (
        ((high - low) / 2) ** 2 * np.sin(theta[inside]) ** 2 / (2 * np.pi * c * lam[inside])
    )
    step = np.diff(theta)
    mass = np.concatenate([[0.0], np.cumsum((weight[1:] + weight[:-1]) / 2 * step)])
    moment = weight * lam
    first = np.concatenate([[0.0], np.cumsum((moment[1:] + moment[:-1]) / 2 * step)])
    mass, first = mass / mass[-1], first / first[-1]
    cut = np.interp(1.0 - m / q, mass, theta)
    share = 1.0 - np.interp(cut, theta, first)
    return float(p * q * share)


def predicted_forgetting(
    n: int,
    d_in: int,
    d_out: int,
    sigma: float,
    leak: float,
    k_source: int,
    task_singular_values,
    rank: int | None = None,
    intercept: bool = False,
) -> Prediction:
    """The predicted forgetting (module docstring) of OLS (``rank`` None, full fine-tuning) or
    of reduced-rank regression at ``rank``, on n training samples; ``task_singular_values``
    are ΔW*'s, whose input directions avoid the k source directions."""
    s = np.sort(np.asarray(task_singular_values, dtype=float))[::-1]
    samples = n - 1 if intercept else n
    if samples - d_in - 1 <= 0:
        raise ValueError(f"needs n > d + 1 for a least-squares fit, got n = {n}, d = {d_in}")
    s2 = sigma**2 / (samples - d_in - 1)
    tr_m = trace_m(d_in, k_source, leak)
    bias = sigma**2 * (n - 2) / (n * (n - d_in - 2)) if intercept else 0.0
    if rank is None or rank >= min(d_in, d_out):
        return Prediction(leak * float(np.sum(s**2)) / d_out, s2 * tr_m + bias)
    kept = min(rank, int(np.count_nonzero(s)))
    tangent = kept * tr_m + (d_out - kept) * kept * leak
    spread = (tr_m - kept * leak) / (d_in - kept)
    extra = top_energy(d_in - kept, d_out - kept, rank - kept) * spread
    signal = leak * float(np.sum(s[:kept] ** 2)) / d_out
    return Prediction(signal, s2 * (tangent + extra) / d_out + bias)
