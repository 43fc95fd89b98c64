"""The geometry tables: per-run amplification and similarity to the true shift (per adapted
layer for the deep kinds), and φ between adapters of two ranks or two seeds, from the saved
weights."""

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
from lorasweep.models.names import linear_modules
from lorasweep.options import DEEP_KINDS
from lorasweep.tasks.deep import SHIFT_SUFFIX

GEOMETRY_COLUMNS = ["run_id", "layer", "delta_norm", "amplification", "phi_true_right",
                    "phi_true_left"]  # fmt: skip


def _run_update(run_dir, metrics: dict, w0: torch.Tensor) -> torch.Tensor:
    tensors = load_tensors(run_dir / "weights.safetensors")
    if metrics["method"] == "full":
        return tensors["weight"].double() - w0.double()
    scaling = scaling_factor(metrics["scaling"], metrics["alpha"], metrics["rank"])
    return lora_update(tensors["lora_A"], tensors["lora_B"], scaling, metrics["init"], w0)


def _geometry_row(
    run_id: str, layer, delta, w0, truth, rank: int | None, true_rank: int | None = None
) -> dict:
    """One row of ``geometry.csv``: ‖ΔW‖_F, the amplification factor at ``rank`` (the run's,
    or for full FT that of the true shift, at least 1), and φ to the true shift where there is
    one. ``true_rank`` is the shift's known rank; without it, it is estimated from ``truth``."""
    if truth is None:
        true_rank = 0
    elif true_rank is None:
        true_rank = int(torch.linalg.matrix_rank(truth.double()))
    rank = rank if rank is not None else max(true_rank, 1)
    similarity = (
        true_subspace_similarity(delta, truth, rank, true_rank)
        if true_rank > 0
        else {"phi_right": math.nan, "phi_left": math.nan}
    )
    return {
        "run_id": run_id,
        "layer": layer,
        "delta_norm": float(torch.linalg.matrix_norm(delta)),
        "amplification": amplification_factor(delta, w0, rank),
        "phi_true_right": similarity["phi_right"],
        "phi_true_left": similarity["phi_left"],
    }


def _layer_rows(run_dir, metrics: dict, data) -> list[dict]:
    """A deep model's run: one row per linear module it changed (every module for full FT),
    against that module's W₀ and, where the teacher shifts it, its ΔW*."""
    tensors = load_tensors(run_dir / "weights.safetensors")
    lora = metrics["method"] == "lora"
    if lora:
        scaling = scaling_factor(metrics["scaling"], metrics["alpha"], metrics["rank"])
    rows = []
    for module in linear_modules(data.spec.as_dict()):
        name, w0 = module.name, data[f"{module.name}.weight"]
        if lora and f"{name}.lora_A" not in tensors:
            continue
        if lora:
            a, b = tensors[f"{name}.lora_A"], tensors[f"{name}.lora_B"]
            delta = lora_update(a, b, scaling, metrics["init"], w0)
        else:
            delta = tensors[f"{name}.weight"].double() - w0.double()
        truth = data.tensors.get(f"{name}{SHIFT_SUFFIX}")
        rank = metrics["rank"] if lora else data.spec.task_rank
        rows.append(
            _geometry_row(metrics["run_id"], name, delta, w0, truth, rank, data.spec.task_rank)
        )
    return rows


def geometry_tables(run_dirs, datasets: dict) -> tuple:
    """Per-run geometry and pairwise subspace similarities, from saved weights.

    ``run_dirs`` are run folders (with ``metrics.json`` and ``weights.safetensors``);
    ``datasets`` maps a dataset name to its loaded :class:`lorasweep.tasks.synthetic.Dataset`.

    Returns (per_run, pairs) DataFrames. ``per_run``: ``run_id, layer, delta_norm,
    amplification, phi_true_right, phi_true_left``, one row per single-layer run (``layer``
    empty) and one per changed module of a deep model's run. ``pairs``: φ(A₁, A₂, i, j) in long
    format for two comparisons of single-layer adapters, ``rank`` (the smallest of 8 or the
    lowest rank, against the highest rank, same seed and settings) and ``seed`` (two seeds at
    the same rank and settings).
    """
    metrics = {}
    rows = []
    for run_dir in run_dirs:
        m = read_json(run_dir / "metrics.json")
        metrics[m["run_id"]] = (run_dir, m)
        if m["status"] != "ok":
            continue
        data = datasets[m["dataset"]]
        if data.spec.kind in DEEP_KINDS:
            rows.extend(_layer_rows(run_dir, m, data))
            continue
        w0, truth = data["W0"], data["delta_W"]
        delta = _run_update(run_dir, m, w0)
        rank = m["rank"] if m["method"] == "lora" else None
        rows.append(_geometry_row(m["run_id"], None, delta, w0, truth, rank))
    per_run = pd.DataFrame(rows, columns=GEOMETRY_COLUMNS)

    pair_rows = []
    lora = [
        m
        for _, m in metrics.values()
        if m["method"] == "lora" and m["status"] == "ok" and m.get("targets") is None
    ]
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
