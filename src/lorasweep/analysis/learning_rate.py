"""The learning-rate study: each loss-against-learning-rate curve's optimum, and LoRA's optimum
relative to full fine-tuning's ("LoRA Without Regret", Schulman et al., Thinking Machines 2025,
Fig. 2)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def optimal_learning_rate(lrs: Sequence[float], losses: Sequence[float]) -> tuple[float, bool]:
    """The minimiser of a U-shaped curve of final loss against learning rate, and whether it
    lies at the edge of the grid.

    The curve is taken in (log₁₀ lr, log₁₀ loss). The optimum is the vertex of the parabola
    through the lowest grid point and its two neighbours, kept inside their bracket. Where the
    lowest point is the first or last of the grid, or the three points are not convex, the grid
    point itself is returned; at an edge the true optimum may lie beyond the grid, so the flag
    is True. Non-finite losses (diverged runs) count as +∞.
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
    denominator = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denominator
    b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / denominator
    if a <= 0:
        return float(grid[best]), False
    vertex = min(max(-b / (2 * a), x0), x2)
    return float(10**vertex), False
