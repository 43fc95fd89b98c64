"""``forgetting.csv``: matched forgetting (:mod:`lorasweep.analysis.forgetting`) of LoRA at each
rank against full fine-tuning, for every dataset with a source task, beside the forgetting that
estimation theory predicts for the least-squares fit of the same size
(:mod:`lorasweep.analysis.estimation`).

Rows by ``unit``: ``pooled`` (every replicate and seed, as the figures show them), then one row
per independent unit the finding resamples: ``task_seed`` where the config has several task
replicates, else ``seed`` (the seeds of one task). A unit's matched level is its own.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch

from lorasweep.analysis import forgetting, statistics
from lorasweep.analysis.estimation import predicted_forgetting
from lorasweep.analysis.findings import unit_column
from lorasweep.tasks.synthetic import Dataset

PREDICTED = ["predicted_lora", "predicted_full", "predicted_lora_noise", "predicted_full_noise"]
COLUMNS = ["dataset", "unit", "task_seed", "seed", *forgetting.MATCH_COLUMNS[1:], *PREDICTED]
INTEGER_COLUMNS = ["task_seed", "seed", "rank"]


def predictions(runs: pd.DataFrame, datasets: Mapping[str, Dataset]) -> pd.DataFrame:
    """Per dataset, task seed and LoRA rank of ``runs``: the predicted forgetting of the rank-r
    fit (with LoRA's bias setting) and of OLS with an intercept (full fine-tuning)."""
    lora = statistics.completed_lora(runs)
    rows = []
    for data in datasets.values():
        spec = data.spec
        if spec.kind != "lowrank" or spec.source is None:
            continue
        mine = lora[
            (lora["dataset"] == spec.name) & (lora["task_seed"].fillna(0) == spec.task_seed)
        ]
        values = torch.linalg.svdvals(data["delta_W"].double())[: spec.task_rank].numpy()
        args = (spec.n_train, spec.in_features, spec.out_features, spec.noise_std,
                spec.source.leak, spec.source.top_directions, values)  # fmt: skip
        full = predicted_forgetting(*args, rank=None, intercept=True)
        for (rank, bias), _ in mine.groupby(["rank", "bias"], sort=True):
            low = predicted_forgetting(*args, rank=int(rank), intercept=bias == "lora_only")
            rows.append({"dataset": spec.name, "task_seed": spec.task_seed, "rank": int(rank),
                         "predicted_lora": low.total, "predicted_full": full.total,
                         "predicted_lora_noise": low.noise,
                         "predicted_full_noise": full.noise})  # fmt: skip
    table = pd.DataFrame(rows, columns=["dataset", "task_seed", "rank", *PREDICTED])
    # Two bias settings at one rank: the frozen bias, which the single-layer presets use.
    return table.groupby(["dataset", "task_seed", "rank"], as_index=False).first()


def _matched(runs: pd.DataFrame, epochs: pd.DataFrame, **unit) -> pd.DataFrame:
    return forgetting.matched_forgetting(forgetting.checkpoints(runs, epochs)).assign(**unit)


def forgetting_table(
    runs: pd.DataFrame, epochs: pd.DataFrame, datasets: Mapping[str, Dataset]
) -> pd.DataFrame:
    """``forgetting.csv`` (module docstring)."""
    runs = runs.assign(task_seed=runs["task_seed"].fillna(0).astype(int))
    ran = statistics.completed(runs)
    frames = [_matched(runs, epochs, unit="pooled")]
    for _, group in ran[ran["forgetting"].notna()].groupby("dataset", sort=True):
        unit = unit_column(group)
        for value, members in group.groupby(unit, sort=True):
            task_seed = value if unit == "task_seed" else int(members["task_seed"].iloc[0])
            seed = value if unit == "seed" else None
            frames.append(_matched(members, epochs, unit=unit, task_seed=task_seed, seed=seed))
    table = pd.concat([f for f in frames if not f.empty] or [pd.DataFrame(columns=COLUMNS)])
    predicted = predictions(runs, datasets)
    per_unit = table[table["unit"] != "pooled"].drop(columns=PREDICTED, errors="ignore")
    per_unit = per_unit.merge(predicted, on=["dataset", "task_seed", "rank"], how="left")
    pooled = table[table["unit"] == "pooled"].drop(columns=PREDICTED, errors="ignore")
    mean = predicted.groupby(["dataset", "rank"], as_index=False)[PREDICTED].mean()
    pooled = pooled.drop(columns=["task_seed", "seed"], errors="ignore")
    pooled = pooled.merge(mean, on=["dataset", "rank"], how="left")
    table = pd.concat([pooled, per_unit], ignore_index=True).reindex(columns=COLUMNS)
    for column in INTEGER_COLUMNS:
        table[column] = pd.array(table[column], dtype="Int64")
    order = ["dataset", "unit", "task_seed", "seed", "rank"]
    table["unit"] = pd.Categorical(table["unit"], ["pooled", "task_seed", "seed"])
    table = table.sort_values(order, na_position="first", kind="stable")
    return table.assign(unit=table["unit"].astype(str)).reset_index(drop=True)


def read_forgetting(path) -> pd.DataFrame:
    """``forgetting.csv`` as written, with its integer columns as nullable integers."""
    frame = pd.read_csv(path)
    for column in INTEGER_COLUMNS:
        frame[column] = pd.array(frame[column], dtype="Int64")
    return frame
