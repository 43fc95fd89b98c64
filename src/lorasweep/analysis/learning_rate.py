"""The learning-rate study: each loss-against-learning-rate curve's optimum, and LoRA's optimum
relative to full fine-tuning's ("LoRA Without Regret", Schulman et al., Thinking Machines 2025,
Fig. 2)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from lorasweep.analysis.statistics import LORA_SETTINGS
from lorasweep.models import registry

CANDIDATE_VERTICES = 401
"""Vertices tried across the bracket before :data:`REFINE_STEPS` of golden-section search."""
REFINE_STEPS = 80


def _two_arm_misfit(vertex: float, x: np.ndarray, y: np.ndarray) -> float:
    """Squared misfit of the best y = level + a·(x − vertex)² left of the vertex and
    level + c·(x − vertex)² right of it (a, c ≥ 0, the level at most the lowest point)."""
    offset = x - vertex
    design = np.stack([np.ones_like(x), np.minimum(offset, 0) ** 2, np.maximum(offset, 0) ** 2], 1)
    (level, left, right), *_ = np.linalg.lstsq(design, y, rcond=None)
    if left < 0 or right < 0 or level > y.min() + 1e-12:
        return math.inf
    residual = design @ np.array([level, left, right]) - y
    return float(residual @ residual)


def _two_arm_vertex(x: np.ndarray, y: np.ndarray, low: float, high: float) -> float | None:
    """The vertex in [low, high] of the two-arm parabola that best fits (x, y); None where no
    vertex there fits convex arms."""
    candidates = np.linspace(low, high, CANDIDATE_VERTICES)
    misfits = [_two_arm_misfit(v, x, y) for v in candidates]
    if not np.isfinite(misfits).any():
        return None
    i = int(np.argmin(misfits))
    a, b = candidates[max(i - 1, 0)], candidates[min(i + 1, len(candidates) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(REFINE_STEPS):
        left, right = b - ratio * (b - a), a + ratio * (b - a)
        if _two_arm_misfit(left, x, y) < _two_arm_misfit(right, x, y):
            b = right
        else:
            a = left
    return (a + b) / 2


def optimal_learning_rate(lrs: Sequence[float], losses: Sequence[float]) -> tuple[float, bool]:
    """The minimiser of a U-shaped curve of final loss against learning rate, and whether it
    lies at the edge of the grid.

    The curve is taken in (log₁₀ lr, log₁₀ loss). Where the lowest grid point has two finite
    neighbours on each side, the optimum is the vertex of the two-arm parabola (one curvature
    left of the vertex, another right of it) that best fits those five points, kept between the
    lowest point's neighbours: a curve that falls gently and then rises off a cliff, as training
    does towards divergence, is skewed, and one parabola through three points would put its
    vertex on the gentle side. With fewer neighbours, it is the vertex of the parabola through
    the lowest point and its two neighbours, kept inside their bracket. Both are exact for a
    parabola. Where the lowest point is the first or last of the grid, or the three points are
    not convex, the grid point itself is returned; at an edge the true optimum may lie beyond the
    grid, so the flag is True. Non-finite losses (diverged runs) count as +∞.
    """
    grid = np.asarray(lrs, dtype=float)
    order = np.argsort(grid)
    grid = grid[order]
    x = np.log10(grid)
    y = np.asarray(losses, dtype=float)[order]
    y = np.where(np.isfinite(y) & (y > 0), np.log10(np.where(y > 0, y, 1.0)), np.inf)
    if not np.isfinite(y).any():
        return math.nan, True
    best = int(np.argmin(y))
    if best in (0, len(x) - 1):
        return float(grid[best]), True
    (x0, x1, x2), (y0, y1, y2) = x[best - 1 : best + 2], y[best - 1 : best + 2]
    if not np.isfinite([y0, y2]).all():
        return float(grid[best]), False
    window = slice(best - 2, best + 3)
    if 2 <= best <= len(x) - 3 and np.isfinite(y[window]).all():
        vertex = _two_arm_vertex(x[window], y[window], x0, x2)
        if vertex is not None:
            return float(10**vertex), False
    denominator = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denominator
    b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / denominator
    if a <= 0:
        return float(grid[best]), False
    vertex = min(max(-b / (2 * a), x0), x2)
    return float(10**vertex), False


CURVE_KEYS = ["dataset", "method", "rank", *(s for s in LORA_SETTINGS if s not in ("lr", "method"))]
"""What tells one loss-against-learning-rate curve from another: every setting but lr and seed
(full fine-tuning has one curve per dataset; its LoRA columns are empty)."""
OPTIMA_COLUMNS = [*CURVE_KEYS, "task_seed", "seed", "lrs", "optimal_lr", "at_edge", "min_loss",
                  "ratio_to_full"]  # fmt: skip


def lr_optima(runs: pd.DataFrame) -> pd.DataFrame:
    """Each curve's optimal learning rate (:func:`optimal_learning_rate` of its final validation
    loss), once per task replicate and seed and once for the mean over all of them (``seed``
    and ``task_seed`` empty), for every curve swept over at least two learning rates.

    A diverged run counts as an infinite loss; the mean curve is infinite at a learning rate
    where any run diverged. ``ratio_to_full`` is a LoRA curve's optimum over full fine-tuning's
    on the same dataset, task replicate and seed (or both mean curves): LoRA Without Regret's
    ratio.
    """
    task_seed = runs["task_seed"].fillna(0) if "task_seed" in runs else 0
    runs = runs.assign(task_seed=task_seed)
    losses = runs.assign(loss=runs["final_val_loss"].where(runs["status"] == "ok"))
    keys = [k for k in CURVE_KEYS if k in runs.columns]
    rows = []
    for key, curve in losses.groupby(keys, dropna=False, sort=True):
        if curve["lr"].nunique() < 2:
            continue
        by_lr = (
            curve.set_index(["lr", "task_seed", "seed"])["loss"]
            .unstack(["task_seed", "seed"])
            .sort_index()
        )
        curve_key = dict(zip(keys, key, strict=True))
        rows.append(_optimum_row(curve_key, pd.NA, pd.NA, by_lr.mean(axis=1, skipna=False)))
        for task_seed, seed in by_lr.columns:
            rows.append(_optimum_row(curve_key, task_seed, seed, by_lr[(task_seed, seed)]))
    table = pd.DataFrame(rows).reindex(columns=OPTIMA_COLUMNS[:-1])
    for column in ("task_seed", "seed", "rank"):
        table[column] = pd.array(table[column], dtype="Int64")
    full = table[registry.full_rows(table["method"])].set_index(["dataset", "task_seed", "seed"])
    full = full["optimal_lr"]
    reference = [
        full.get((d, t, s), math.nan)
        for d, t, s in zip(table["dataset"], table["task_seed"], table["seed"], strict=True)
    ]
    table["ratio_to_full"] = (table["optimal_lr"] / reference).where(
        registry.factor_rows(table["method"])
    )
    return table.reindex(columns=OPTIMA_COLUMNS)


def _optimum_row(curve_key: dict, task_seed, seed, losses: pd.Series) -> dict:
    """One row of :func:`lr_optima`: the curve ``losses`` (indexed by lr) and its optimum."""
    lr, at_edge = optimal_learning_rate(losses.index, losses.fillna(math.inf).to_numpy())
    finite = losses[np.isfinite(losses)]
    return {
        **curve_key,
        "task_seed": task_seed,
        "seed": seed,
        "lrs": len(losses),
        "optimal_lr": lr,
        "at_edge": at_edge,
        "min_loss": float(finite.min()) if not finite.empty else math.nan,
    }


def ratio_spread(ratios: pd.Series) -> tuple[float, float, float]:
    """Geometric mean, smallest and largest of per-seed ratios (NaN where there are none)."""
    ratios = ratios.dropna()
    if ratios.empty:
        return math.nan, math.nan, math.nan
    return float(np.exp(np.log(ratios).mean())), float(ratios.min()), float(ratios.max())
