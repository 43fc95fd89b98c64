"""Intruder dimensions (Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of
Equivalence", arXiv 2410.21228).

A top singular vector y_j of the fine-tuned weight W₀ + ΔW is an *intruder* when it is nearly
orthogonal to every singular vector x_i of W₀: max_i |cos(y_j, x_i)| < ε. As in PEFT's
``reduce_intruder_dimension`` (defaults top_k = 10, ε = 0.5), the vectors compared are the left
singular vectors (the output space), and only the top_k of the fine-tuned weight are examined.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

TOP_K = 10
EPSILONS = (0.4, 0.5, 0.6)
"""ε grid around PEFT's default 0.5; a smaller ε counts only vectors closer to orthogonal."""


def base_vectors(w0: torch.Tensor) -> torch.Tensor:
    """All left singular vectors x_i of W₀ (columns, float64), computed once per layer."""
    import torch  # here, not at the top: figure and report jobs read TOP_K without importing it

    base, _, _ = torch.linalg.svd(w0.double(), full_matrices=False)
    return base


def max_base_cosines(
    w0: torch.Tensor, fine_tuned: torch.Tensor, top_k: int, base: torch.Tensor | None = None
) -> torch.Tensor:
    """max_i |cos(y_j, x_i)| for the top ``top_k`` left singular vectors y_j of ``fine_tuned``
    against all left singular vectors x_i of ``w0`` (float64; ``base`` may pass
    :func:`base_vectors` of ``w0`` already computed)."""
    import torch

    base = base_vectors(w0) if base is None else base
    tuned, _, _ = torch.linalg.svd(fine_tuned.double(), full_matrices=False)
    return (tuned[:, :top_k].T @ base).abs().max(dim=1).values


def intruder_counts(
    w0: torch.Tensor,
    fine_tuned: torch.Tensor,
    top_k: int = TOP_K,
    epsilons: Sequence[float] = EPSILONS,
    base: torch.Tensor | None = None,
) -> dict[float, int]:
    """The number of intruder dimensions among the top ``top_k``, for each ε."""
    cosines = max_base_cosines(w0, fine_tuned, top_k, base)
    return {eps: int((cosines < eps).sum()) for eps in epsilons}
