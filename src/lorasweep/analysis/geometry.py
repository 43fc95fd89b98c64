"""Geometry of learned updates: subspace similarity and amplification (LoRA paper §7).

All functions work in float64 and take the paper's layout: A is r×d_in, ΔW is d_out×d_in.
"""

from __future__ import annotations

import math

import torch


def right_singular_vectors(matrix: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Columns are the top-``k`` right-singular vectors of ``matrix`` (d_in×k)."""
    _, _, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    return vh[:k].T if k is not None else vh.T


def left_singular_vectors(matrix: torch.Tensor, k: int | None = None) -> torch.Tensor:
    u, _, _ = torch.linalg.svd(matrix.double(), full_matrices=False)
    return u[:, :k] if k is not None else u


def subspace_similarity(u1: torch.Tensor, u2: torch.Tensor, i: int, j: int) -> float:
    """φ(i, j) = ‖U₁⁽ⁱ⁾ᵀ U₂⁽ʲ⁾‖²_F / min(i, j), in [0, 1] (LoRA paper, Eq. 4).

    ``u1`` and ``u2`` have orthonormal columns; the first ``i`` (resp. ``j``) are used.
    """
    overlap = u1[:, :i].T.double() @ u2[:, :j].double()
    return float(overlap.square().sum()) / min(i, j)


def similarity_grid(a1: torch.Tensor, a2: torch.Tensor) -> torch.Tensor:
    """φ(A₁, A₂, i, j) for i = 1…r₁, j = 1…r₂, from the right-singular vectors of A₁ and A₂."""
    u1, u2 = right_singular_vectors(a1), right_singular_vectors(a2)
    overlap = (u1.T @ u2).square()
    cumulative = overlap.cumsum(0).cumsum(1)
    i = torch.arange(1, u1.shape[1] + 1, dtype=torch.float64)[:, None]
    j = torch.arange(1, u2.shape[1] + 1, dtype=torch.float64)[None, :]
    return cumulative / torch.minimum(i, j)


def true_subspace_similarity(
    learned: torch.Tensor, truth: torch.Tensor, rank: int, true_rank: int | None = None
) -> dict:
    """How well the learned update's top directions match the true shift's.

    With k = rank(ΔW*) and m = min(rank, k): φ between the top-m right- (input) and left-
    (output) singular vectors of the learned ΔW and the k of ΔW*. 1 means the learned top-m
    subspace lies inside the true one. Pass ``true_rank`` where k is known: estimated from a
    float32 ΔW* in float64, as without it, k counts float32 rounding as rank.
    """
    k = true_rank if true_rank is not None else int(torch.linalg.matrix_rank(truth.double()))
    m = min(rank, k)
    if m == 0:
        return {"phi_right": math.nan, "phi_left": math.nan}
    return {
        "phi_right": subspace_similarity(
            right_singular_vectors(learned, m), right_singular_vectors(truth, k), m, k
        ),
        "phi_left": subspace_similarity(
            left_singular_vectors(learned, m), left_singular_vectors(truth, k), m, k
        ),
    }


def amplification_factor(delta: torch.Tensor, w0: torch.Tensor, rank: int) -> float:
    """‖ΔW‖_F / ‖UᵀW₀V‖_F with U, V the top-``rank`` singular vectors of ΔW (LoRA §7.3).

    Large values mean ΔW amplifies directions that W₀ does not emphasise.
    """
    delta, w0 = delta.double(), w0.double()
    u, _, vh = torch.linalg.svd(delta, full_matrices=False)
    projected = u[:, :rank].T @ w0 @ vh[:rank].T
    return float(torch.linalg.matrix_norm(delta) / torch.linalg.matrix_norm(projected))


def lora_update(
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scaling: float,
    init_a: torch.Tensor | None = None,
    init_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """The change of the layer's effective weight, W_final − W₀, of a trained LoRA run.

    The layer computes (W_base + s·BA)x, so W_final − W₀ = s·BA − (W₀ − W_base). PiSSA froze
    W_base = W₀ − s·B₀A₀, which gives s·(BA − B₀A₀) from its initial factors ``init_a`` = A₀
    and ``init_b`` = B₀; every other init keeps W_base = W₀, which gives s·BA (for ``randn``
    the random start s·B₀A₀ is part of the layer's change from W₀).
    """
    product = lora_b.double() @ lora_a.double()
    if init_a is not None or init_b is not None:
        product = product - init_b.double() @ init_a.double()
    return scaling * product
