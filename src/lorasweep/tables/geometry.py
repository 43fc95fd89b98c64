"""The geometry tables: per-run amplification and similarity to the true shift (per adapted
layer for the deep kinds), and φ between adapters of two ranks or two seeds, from the saved
weights."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import torch

from lorasweep.analysis.geometry import (
    amplification_factor,
    similarity_grid,
    true_subspace_similarity,
)
from lorasweep.analysis.statistics import LORA_SETTINGS
from lorasweep.io import load_metadata, load_tensors, read_json
from lorasweep.models import registry
from lorasweep.models.adapters import DELTA_WEIGHT, stored_update
from lorasweep.models.names import linear_modules
from lorasweep.options import DEEP_KINDS
from lorasweep.planning.runs import replicate_name
from lorasweep.tasks.deep import SHIFT_SUFFIX

PER_RUN_COLUMNS = ["run_id", "layer", "delta_norm", "amplification", "phi_true_right",
                   "phi_true_left", "error_norm", "truth_norm"]  # fmt: skip
PAIR_COLUMNS = ["comparison", "dataset", "run_a", "run_b", "rank_a", "rank_b", "seed_a",
                "seed_b", "i", "j", "phi"]  # fmt: skip


INIT_FACTORS = ("lora_A_init", "lora_B_init")
"""A₀ and B₀ in ``weights.safetensors`` of runs whose frozen base is W₀ − s·B₀A₀ (PiSSA)."""


class MissingInitError(RuntimeError):
    """A PiSSA run lacks the initial factors its ΔW needs."""


def run_update(run_dir: Path, metrics: dict, w0: torch.Tensor) -> torch.Tensor:
    """W_final − W₀ of a run, from its ``weights.safetensors`` (factors, initial factors and the
    scale s stored by the run)."""
    path = run_dir / "weights.safetensors"
    tensors = load_tensors(path)
    if registry.is_full(metrics["method"]):
        return tensors["weight"].double() - w0.double()
    scaling = load_metadata(path)["scaling"]
    return adapter_update(run_dir, tensors, "", scaling, metrics, w0)


def adapter_update(
    run_dir: Path, tensors: dict, prefix: str, scaling: float, metrics: dict, w0: torch.Tensor
):
    """W_final − W₀ of the adapter stored under ``prefix`` (a deep model's module name and a
    dot; nothing for a single layer), by its method (:func:`lorasweep.models.adapters.
    stored_update`: s·BA for LoRA, the merged weight's change for DoRA), with A₀ and B₀ where
    the frozen base is W₀ − s·B₀A₀."""
    init, method = metrics["init"], metrics["method"]
    if not registry.replaces_base(init):
        return stored_update(method, w0, tensors, prefix, scaling)
    names = [f"{prefix}{name}" for name in INIT_FACTORS]
    if any(name not in tensors for name in names):
        raise MissingInitError(
            f"{run_dir}: init {init!r} froze W₀ − s·B₀A₀, so ΔW needs lora_A_init "
            "and lora_B_init in weights.safetensors; rerun the pipeline to write them"
        )
    a0, b0 = (tensors[name] for name in names)
    return stored_update(method, w0, tensors, prefix, scaling, a0, b0)


def _geometry_row(
    run_id: str, layer, delta, w0, truth, rank: int | None, true_rank: int | None = None
) -> dict:
    """One row of ``geometry.csv``: ‖ΔW‖_F, the amplification factor at ``rank`` (the run's,
    or for full FT that of the true shift, at least 1), and φ to the true shift where there is
    one, with ‖ΔW − ΔW*‖_F and ‖ΔW*‖_F (ΔW* = 0 on a module the task does not shift).
    ``true_rank`` is the shift's known rank; without it, it is estimated from ``truth``."""
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
    target = truth.double() if truth is not None else torch.zeros_like(delta)
    return {
        "run_id": run_id,
        "layer": layer,
        "delta_norm": float(torch.linalg.matrix_norm(delta)),
        "amplification": amplification_factor(delta, w0, rank),
        "phi_true_right": similarity["phi_right"],
        "phi_true_left": similarity["phi_left"],
        "error_norm": float(torch.linalg.matrix_norm(delta.double() - target)),
        "truth_norm": float(torch.linalg.matrix_norm(target)),
    }


def layer_updates(
    run_dir: Path, metrics: dict, data
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(module name, W₀, ΔW) of each linear module a deep model's run changed, in forward order:
    the modules its adapter covers, or every one for full fine-tuning."""
    path = run_dir / "weights.safetensors"
    tensors = load_tensors(path)
    lora = registry.is_adapter(metrics["method"])
    scaling = load_metadata(path)["scaling"] if lora else None
    for module in linear_modules(data.spec.as_dict()):
        name, w0 = module.name, data[f"{module.name}.weight"]
        if not lora:
            yield name, w0, tensors[f"{name}.weight"].double() - w0.double()
        elif f"{name}.lora_A" in tensors or f"{name}.{DELTA_WEIGHT}" in tensors:
            yield name, w0, adapter_update(run_dir, tensors, f"{name}.", scaling, metrics, w0)


def _layer_rows(run_dir: Path, metrics: dict, data) -> list[dict]:
    """A deep model's run: one row per linear module it changed, against that module's W₀ and,
    where the teacher shifts it, its ΔW* of the dataset's known rank."""
    task_rank = data.spec.task_rank
    rank = registry.method(metrics["method"]).update_rank(metrics["rank"]) or task_rank
    return [
        _geometry_row(
            metrics["run_id"],
            name,
            delta,
            w0,
            data.tensors.get(f"{name}{SHIFT_SUFFIX}"),
            rank,
            task_rank,
        )
        for name, w0, delta in layer_updates(run_dir, metrics, data)
    ]


def is_deep(data) -> bool:
    """Whether a loaded dataset is one of the deep kinds (plain mappings of tensors are not)."""
    return getattr(getattr(data, "spec", None), "kind", None) in DEEP_KINDS


def geometry_tables(run_dirs, datasets: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-run geometry and pairwise subspace similarities, from saved weights.

    ``run_dirs`` are run folders (with ``metrics.json`` and ``weights.safetensors``);
    ``datasets`` maps a dataset name to its loaded :class:`lorasweep.tasks.synthetic.Dataset`.

    Returns (per_run, pairs) DataFrames, sorted by run id (a deep run's layers in forward order)
    and by comparison, dataset, runs and cell. ``per_run``: ``run_id, layer, delta_norm,
    amplification, phi_true_right, phi_true_left, error_norm, truth_norm``, one row per
    single-layer run (``layer``
    empty) and one per changed module of a deep model's run. ``pairs``: φ(A₁, A₂, i, j) in long
    format for two comparisons of single-layer adapters, ``rank`` (the smallest of 8 or the
    lowest rank, against the highest rank, same seed and settings) and ``seed`` (two seeds at
    the same rank and settings).
    """
    runs = [(run_dir, read_json(run_dir / "metrics.json")) for run_dir in run_dirs]
    folders = {m["run_id"]: d for d, m in runs}
    completed = [(d, m) for d, m in runs if m["status"] == "ok"]
    per_run = [row for d, m in completed for row in _run_geometry(d, m, datasets[_data(m)])]
    lora = [
        m
        for _, m in completed
        if registry.method(m["method"]).has_factors and m.get("targets") is None
    ]
    pairs = [
        row
        for kind, run_a, run_b in _comparison_pairs(lora)
        for row in _pair_rows(kind, run_a, run_b, folders)
    ]
    return (
        _sorted(pd.DataFrame(per_run, columns=PER_RUN_COLUMNS), ["run_id"]),
        _sorted(pd.DataFrame(pairs, columns=PAIR_COLUMNS), PAIR_ORDER),
    )


PAIR_ORDER = ["comparison", "dataset", "run_a", "run_b", "i", "j"]


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows in one fixed order, whatever order the run folders came in (it follows how runs
    were grouped into jobs, which depends on the core count)."""
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def _run_geometry(run_dir: Path, metrics: dict, data) -> list[dict]:
    """The ``per_run`` rows of one completed run: one for a single layer, one per changed
    module of a deep model (:func:`_layer_rows`)."""
    if is_deep(data):
        return _layer_rows(run_dir, metrics, data)
    w0, truth = data["W0"], data["delta_W"]
    delta = run_update(run_dir, metrics, w0)
    rank = registry.method(metrics["method"]).update_rank(metrics["rank"])
    return [_geometry_row(metrics["run_id"], None, delta, w0, truth, rank)]


def _pair_rows(kind: str, run_a: dict, run_b: dict, folders: dict) -> list[dict]:
    """φ(A_a, A_b, i, j) for every i and j, one ``pairs`` row each."""
    a, b = (
        load_tensors(folders[run["run_id"]] / "weights.safetensors")["lora_A"]
        for run in (run_a, run_b)
    )
    grid = similarity_grid(a, b)
    return [
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
        for i in range(grid.shape[0])
        for j in range(grid.shape[1])
    ]


def _data(metrics: dict) -> str:
    """The replicate a run trained on (:func:`lorasweep.planning.runs.replicate_name`)."""
    return replicate_name(metrics["dataset"], metrics.get("task_seed", 0))


def _comparison_pairs(lora: list[dict]):
    """(kind, run_a, run_b) for the rank and seed comparisons of each dataset.

    Settings are those whose runs at the largest rank have the lowest mean final loss, so the
    compared adapters are ones that learned the task.
    """
    by_dataset: dict = {}
    for m in lora:
        by_dataset.setdefault(_data(m), []).append(m)
    for dataset in sorted(by_dataset):
        runs = by_dataset[dataset]
        ranks = sorted({m["rank"] for m in runs})
        if len(ranks) < 2:
            continue
        high = ranks[-1]
        low = 8 if 8 in ranks and high > 8 else ranks[0]
        index = {(m["rank"], m["seed"], *(m.get(k) for k in LORA_SETTINGS)): m for m in runs}
        candidates: dict = {}
        for m in runs:
            if m["rank"] == high:
                key = tuple(m.get(k) for k in LORA_SETTINGS)
                candidates.setdefault(key, []).append(m["final_val_loss"])
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
