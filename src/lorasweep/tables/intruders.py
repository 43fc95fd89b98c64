"""The intruder table: per run and per adapted layer, the intruder dimensions of the fine-tuned
weight W₀ + ΔW among its top k singular vectors, for each ε (:mod:`lorasweep.analysis.intruders`),
plus the true fine-tuned weight W₀ + ΔW* of each ``lowrank`` dataset (of each shifted module of
a deep one) as a reference.

``null_intruders`` is the same count for a null control: W₀ plus a random perturbation with ΔW's
singular values (so its rank and Frobenius norm) and Haar-random singular vectors, drawn from a
generator seeded by the run and layer. W₀'s Marchenko–Pastur spectrum has close neighbouring
singular values, so its singular vectors rotate under any perturbation of that size; the control
measures how many intruders size and rank alone produce. A row's ``dataset`` and ``task_seed``
name its task replicate as ``runs.csv`` does."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import torch

from lorasweep.analysis.intruders import EPSILONS, TOP_K, base_vectors, intruder_counts
from lorasweep.io import read_json
from lorasweep.planning.runs import replicate_name
from lorasweep.seeding import generator
from lorasweep.tables.geometry import is_deep, layer_updates, run_update
from lorasweep.tasks.deep import SHIFT_SUFFIX, shifted_modules
from lorasweep.tasks.synthetic import orthonormal

SINGLE_LAYER = "linear"
"""The layer name of the single-layer tasks."""
COLUMNS = ["dataset", "task_seed", "run_id", "layer", "top_k", "epsilon", "intruders",
           "null_intruders"]  # fmt: skip


def adapted_layers(
    run_dir: Path, metrics: dict, dataset
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(layer name, W₀, ΔW) for every layer the run adapted: one for the single-layer tasks,
    each changed module of a deep model's network (:func:`layer_updates`)."""
    if is_deep(dataset):
        yield from layer_updates(run_dir, metrics, dataset)
        return
    w0 = dataset["W0"]
    yield SINGLE_LAYER, w0, run_update(run_dir, metrics, w0)


def null_perturbation(delta: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random matrix with the singular values of ``delta`` (hence its rank and Frobenius
    norm) and Haar-random left and right singular vectors (float64)."""
    values = torch.linalg.svdvals(delta.double())
    rows, cols = delta.shape
    u = orthonormal(rows, len(values), gen)
    v = orthonormal(cols, len(values), gen)
    return (u * values[None, :]) @ v.T


def intruder_table(run_dirs: Iterable[Path], datasets: dict) -> pd.DataFrame:
    """Long format, one row per (run, layer, ε): ``dataset, task_seed, run_id, layer, top_k,
    epsilon, intruders, null_intruders`` (module docstring), where top_k = min(:data:`TOP_K`,
    layer size). Rows with an empty ``run_id`` are the true W₀ + ΔW* of a ``lowrank`` dataset
    (or of a deep one's shifted module). Diverged runs are left out."""
    bases: dict[tuple[str, str], torch.Tensor] = {}
    rows = []

    def count(name: str, run_id, layer: str, w0: torch.Tensor, delta: torch.Tensor) -> None:
        spec = datasets[name].spec
        base = bases.setdefault((name, layer), base_vectors(w0))
        top_k = min(TOP_K, *w0.shape)
        counts = intruder_counts(w0, w0.double() + delta.double(), top_k, EPSILONS, base)
        gen = generator("intruder-null", name, run_id or "truth", layer)
        null = w0.double() + null_perturbation(delta, gen)
        nulls = intruder_counts(w0, null, top_k, EPSILONS, base)
        rows.extend(
            {"dataset": spec.name, "task_seed": spec.task_seed, "run_id": run_id,
             "layer": layer, "top_k": top_k, "epsilon": eps, "intruders": n,
             "null_intruders": nulls[eps]}
            for eps, n in counts.items()
        )  # fmt: skip

    for name in sorted(datasets):
        data = datasets[name]
        if data.spec.kind == "lowrank":
            count(name, None, SINGLE_LAYER, data["W0"], data["delta_W"])
        elif is_deep(data):
            for layer in shifted_modules(data.spec):
                count(name, None, layer, data[f"{layer}.weight"], data[f"{layer}{SHIFT_SUFFIX}"])
    for run_dir in run_dirs:
        metrics = read_json(run_dir / "metrics.json")
        if metrics["status"] != "ok":
            continue
        name = replicate_name(metrics["dataset"], metrics.get("task_seed", 0))
        for layer, w0, delta in adapted_layers(run_dir, metrics, datasets[name]):
            count(name, metrics["run_id"], layer, w0, delta)
    table = pd.DataFrame(rows, columns=COLUMNS)
    order = ["dataset", "task_seed", "run_id", "layer", "epsilon"]
    return table.sort_values(order, na_position="first", kind="stable").reset_index(drop=True)
