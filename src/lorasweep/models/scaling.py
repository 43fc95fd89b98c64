"""The adapter's output multiplier s for each scaling rule (importable without torch, so the
figures can name a run's scale)."""

from __future__ import annotations

import math

from lorasweep.options import SCALINGS


def scaling_factor(rule: str, alpha: float, rank: int) -> float:
    """The adapter's output multiplier s.

    ``standard``: α/r (LoRA §4.1, loralib, PEFT default); ``rslora``: α/√r (Kalajdzievski 2023,
    arXiv 2312.03732); ``constant``: α, independent of r (the seed demo uses α = 1).
    """
    if rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank}")
    if rule == "standard":
        return alpha / rank
    if rule == "rslora":
        return alpha / math.sqrt(rank)
    if rule == "constant":
        return float(alpha)
    raise ValueError(f"unknown scaling {rule!r}; allowed: {', '.join(SCALINGS)}")
