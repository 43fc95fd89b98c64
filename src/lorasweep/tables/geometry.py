"""The geometry tables: per-run amplification and similarity to the true shift, and φ between
adapters of two ranks or two seeds, from the saved weights."""

from __future__ import annotations

import math

import pandas as pd
import torch

from lorasweep.analysis.geometry import (
    amplification_factor,
    lora_update,
    similarity_grid,
    true_subspace_similarity,
)
from lorasweep.io import load_tensors, read_json
from lorasweep.models.lora import scaling_factor


def run_update(run_dir, metrics: dict, w0: torch.Tensor) -> torch.Tensor:
    """W_final − W₀ of a run, from its ``weights.safetensors``."""
    tensors = load_tensors(run_dir / "weights.safetensors")
    if metrics["method"] == "full":
        return tensors["weight"].double() - w0.double()
    scaling = scaling_factor(metrics["scaling"], metrics["alpha"], metrics["rank"])
    return lora_update(tensors["lora_A"], tensors["lora_B"], scaling, metrics["init"], w0)


def geometry_tables(run_dirs, datasets: dict) -> tuple:
    """Per-run geometry and pairwise subspace similarities, from saved weights.

    ``run_dirs`` are run folders (with ``metrics.json`` and ``weights.safetensors``);
    ``datasets`` maps a dataset name to its loaded :class:`lorasweep.tasks.synthetic.Dataset`.

    Returns (per_run, pairs) DataFrames. ``per_run``: ``run_id, delta_norm, amplification,
    phi_true_right, phi_true_left``. ``pairs``: φ(A₁, A₂, i, j) in long format for two
    comparisons, ``rank`` (the smallest of 8 or the lowest rank, against the highest rank, same
    seed and settings) and ``seed`` (two seeds at the same rank and settings).
    """
    metrics = {}
    rows = []
    for run_dir in run_dirs:
        m = read_json(run_dir / "metrics.json")
        metrics[m["run_id"]] = (run_dir, m)
        if m["status"] != "ok":
            continue
        data = datasets[m["dataset"]]
        w0, truth = data["W0"], data["delta_W"]
        delta = run_update(run_dir, m, w0)
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
