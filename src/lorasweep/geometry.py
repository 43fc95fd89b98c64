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


def true_subspace_similarity(learned: torch.Tensor, truth: torch.Tensor, rank: int) -> dict:
    """How well the learned update's top directions match the true shift's.

    With k = rank(ΔW*) and m = min(rank, k): φ between the top-m right- (input) and left-
    (output) singular vectors of the learned ΔW and the k of ΔW*. 1 means the learned top-m
    subspace lies inside the true one.
    """
    k = int(torch.linalg.matrix_rank(truth.double()))
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
    init: str,
    w0: torch.Tensor,
) -> torch.Tensor:
    """The change of the layer's effective weight, W_final − W₀, of a trained LoRA run.

    For zero-B inits and ``randn`` this is s·BA. PiSSA moved s·B₀A₀ = U_rS_rV_rᵀ out of W₀ at
    the start, so its change is s·BA − U_rS_rV_rᵀ.
    """
    delta = scaling * (lora_b.double() @ lora_a.double())
    if init == "pissa":
        rank = lora_a.shape[0]
        u, s, vh = torch.linalg.svd(w0.double(), full_matrices=False)
        delta = delta - (u[:, :rank] * s[:rank]) @ vh[:rank]
    return delta


def _run_update(run_dir, metrics: dict, w0: torch.Tensor) -> torch.Tensor:
    from lorasweep.io import load_tensors
    from lorasweep.lora import scaling_factor

    tensors = load_tensors(run_dir / "weights.safetensors")
    if metrics["method"] == "full":
        return tensors["weight"].double() - w0.double()
    scaling = scaling_factor(metrics["scaling"], metrics["alpha"], metrics["rank"])
    return lora_update(tensors["lora_A"], tensors["lora_B"], scaling, metrics["init"], w0)


def geometry_tables(run_dirs, datasets: dict) -> tuple:
    """Per-run geometry and pairwise subspace similarities, from saved weights.

    ``run_dirs`` are run folders (with ``metrics.json`` and ``weights.safetensors``);
    ``datasets`` maps a dataset name to its loaded :class:`lorasweep.datasets.Dataset`.

    Returns (per_run, pairs) DataFrames. ``per_run``: ``run_id, delta_norm, amplification,
    phi_true_right, phi_true_left``. ``pairs``: φ(A₁, A₂, i, j) in long format for two
    comparisons, ``rank`` (the smallest of 8 or the lowest rank, against the highest rank, same
    seed and settings) and ``seed`` (two seeds at the same rank and settings).
    """
    import pandas as pd

    from lorasweep.io import load_tensors, read_json

    metrics = {}
    rows = []
    for run_dir in run_dirs:
        m = read_json(run_dir / "metrics.json")
        metrics[m["run_id"]] = (run_dir, m)
        if m["status"] != "ok":
            continue
        data = datasets[m["dataset"]]
        w0, truth = data["W0"], data["delta_W"]
        delta = _run_update(run_dir, m, w0)
        true_rank = int(torch.linalg.matrix_rank(truth.double()))
        rank = m["rank"] if m["method"] == "lora" else max(true_rank, 1)
        similarity = (
            true_subspace_similarity(delta, truth, rank)
            if true_rank > 0
            else {"phi_right": math.nan, "phi_left": math.nan}
        )
        rows.append(
            {
                "run_id": m["run_id"],
                "delta_norm": float(torch.linalg.matrix_norm(delta)),
                "amplification": amplification_factor(delta, w0, rank),
                "phi_true_right": similarity["phi_right"],
                "phi_true_left": similarity["phi_left"],
            }
        )
    per_run = pd.DataFrame(
        rows, columns=["run_id", "delta_norm", "amplification", "phi_true_right", "phi_true_left"]
    )

    pair_rows = []
    lora = [m for _, m in metrics.values() if m["method"] == "lora" and m["status"] == "ok"]
    for kind, run_a, run_b in _comparison_pairs(lora):
        a = load_tensors(metrics[run_a["run_id"]][0] / "weights.safetensors")["lora_A"]
        b = load_tensors(metrics[run_b["run_id"]][0] / "weights.safetensors")["lora_A"]
        grid = similarity_grid(a, b)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                pair_rows.append(
                    {
                        "comparison": kind,
                        "dataset": run_a["dataset"],
                        "run_a": run_a["run_id"],
                        "run_b": run_b["run_id"],
                        "rank_a": run_a["rank"],
                        "rank_b": run_b["rank"],
                        "seed_a": run_a["seed"],
                        "seed_b": run_b["seed"],
                        "i": i + 1,
                        "j": j + 1,
                        "phi": float(grid[i, j]),
                    }
                )
    pair_columns = ["comparison", "dataset", "run_a", "run_b", "rank_a", "rank_b", "seed_a",
                    "seed_b", "i", "j", "phi"]  # fmt: skip
    return per_run, pd.DataFrame(pair_rows, columns=pair_columns)


SETTINGS = ("alpha", "scaling", "init", "lr", "lr_ratio", "dropout", "bias")


def _comparison_pairs(lora: list[dict]):
    """(kind, run_a, run_b) for the rank and seed comparisons of each dataset.

    Settings are those whose runs at the largest rank have the lowest mean final loss, so the
    compared adapters are ones that learned the task.
    """
    by_dataset: dict = {}
    for m in lora:
        by_dataset.setdefault(m["dataset"], []).append(m)
    for dataset in sorted(by_dataset):
        runs = by_dataset[dataset]
        ranks = sorted({m["rank"] for m in runs})
        if len(ranks) < 2:
            continue
        high = ranks[-1]
        low = 8 if 8 in ranks and high > 8 else ranks[0]
        index = {(m["rank"], m["seed"], *(m[k] for k in SETTINGS)): m for m in runs}
        candidates: dict = {}
        for m in runs:
            if m["rank"] == high:
                candidates.setdefault(tuple(m[k] for k in SETTINGS), []).append(m["final_val_loss"])
        settings = min(candidates, key=lambda s: (sum(candidates[s]) / len(candidates[s]), str(s)))
        seeds = sorted({m["seed"] for m in runs})
        for seed in seeds:
            a, b = index.get((low, seed, *settings)), index.get((high, seed, *settings))
            if a and b:
                yield "rank", a, b
        if len(seeds) >= 2:
            a, b = index.get((low, seeds[0], *settings)), index.get((low, seeds[1], *settings))
            if a and b:
                yield "seed", a, b
