"""The adapter's output multiplier s for each scaling rule (importable without torch, so the
figures can name a run's scale)."""

from __future__ import annotations

from lorasweep.models import registry


def scaling_factor(rule: str, alpha: float, rank: int) -> float:
    """The adapter's output multiplier s of scaling rule ``rule`` (its record's formula:
    ``standard`` α/r, ``rslora`` α/√r, ``constant`` α; see :mod:`lorasweep.models.registry`)."""
    if rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank}")
    return registry.scaling(rule).factor(alpha, rank)
