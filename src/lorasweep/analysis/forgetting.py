"""Learning against forgetting ("LoRA Learns Less and Forgets Less", Biderman et al. 2024,
arXiv 2405.09673, Fig. 4), on datasets with a source task.

A *checkpoint* is one epoch ≥ 1 of one curve (a run's settings, seeds averaged): its target
validation loss and its forgetting, the source-task loss at that epoch minus before training.

Matching rule. A method's *frontier* F(L) is the least forgetting among its checkpoints whose
target validation loss is at most L (any learning rate, any epoch). LoRA at rank r is compared
with full fine-tuning at the matched level L* = the larger of the two lowest target losses
(the best target loss that both reach), so each side's frontier has at least one checkpoint
there: LoRA "forgets less at matched target loss" when F_LoRA,r(L*) < F_full(L*).
"""

from __future__ import annotations

import math

import pandas as pd

from lorasweep.analysis import statistics
from lorasweep.models import registry

POINT_KEYS = ["dataset", "method", "rank", "alpha", "scaling", "init", "lr", "lr_ratio", "epoch"]
MATCH_COLUMNS = ["dataset", "rank", "matched_val_loss", "lora_forgetting", "full_forgetting",
                 "lora_best_val_loss", "full_best_val_loss"]  # fmt: skip


def checkpoints(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Mean target ``val_loss`` and ``forgetting`` over seeds for each curve and epoch ≥ 1,
    from the completed runs whose dataset has a source task (``forgetting`` in runs.csv)."""
    with_source = statistics.completed(runs)
    with_source = with_source[with_source["forgetting"].notna()]
    if with_source.empty or "source_loss" not in epochs:
        return pd.DataFrame(columns=[*POINT_KEYS, "val_loss", "forgetting", "seeds"])
    frame = epochs[["run_id", "epoch", "val_loss", "source_loss"]].merge(
        with_source[["run_id", *POINT_KEYS[:-1]]], on="run_id"
    )
    before = frame[frame["epoch"] == 0].set_index("run_id")["source_loss"]
    frame["forgetting"] = frame["source_loss"] - frame["run_id"].map(before)
    frame = frame[frame["epoch"] >= 1]
    grouped = frame.groupby(POINT_KEYS, dropna=False, sort=True)
    return grouped.agg(
        val_loss=("val_loss", "mean"), forgetting=("forgetting", "mean"), seeds=("run_id", "size")
    ).reset_index()


def frontier(points: pd.DataFrame) -> pd.DataFrame:
    """F(L) as steps: ``val_loss`` ascending and ``forgetting``, the least forgetting of any
    checkpoint at that target loss or below."""
    ordered = points.sort_values(["val_loss", "forgetting"], kind="stable")
    return pd.DataFrame(
        {"val_loss": ordered["val_loss"].to_numpy(), "forgetting": ordered["forgetting"].cummin()}
    )


def least_forgetting(points: pd.DataFrame, level: float) -> float:
    """F(level): the least forgetting among ``points`` with target loss ≤ ``level`` (NaN if
    none reach it)."""
    reached = points.loc[points["val_loss"] <= level, "forgetting"]
    return float(reached.min()) if not reached.empty else math.nan


def matched_forgetting(points: pd.DataFrame) -> pd.DataFrame:
    """For each dataset and LoRA rank (all its settings and learning rates pooled), both
    frontiers at the matched target loss L* (module docstring)."""
    rows = []
    for dataset, group in points.groupby("dataset", sort=True):
        full = group[registry.full_rows(group["method"])]
        if full.empty:
            continue
        for rank, lora in group[registry.factor_rows(group["method"])].groupby("rank", sort=True):
            level = max(lora["val_loss"].min(), full["val_loss"].min())
            rows.append(
                {
                    "dataset": dataset,
                    "rank": int(rank),
                    "matched_val_loss": level,
                    "lora_forgetting": least_forgetting(lora, level),
                    "full_forgetting": least_forgetting(full, level),
                    "lora_best_val_loss": lora["val_loss"].min(),
                    "full_best_val_loss": full["val_loss"].min(),
                }
            )
    return pd.DataFrame(rows, columns=MATCH_COLUMNS)
