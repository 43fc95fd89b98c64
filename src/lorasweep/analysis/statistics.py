"""Summaries of the run tables: seed statistics, best settings per rank, efficiency vs full FT.

Diverged runs are left out of every mean; :func:`diverged` lists them for the report.
"""

from __future__ import annotations

import pandas as pd

from lorasweep.models import registry

LORA_SETTINGS = ("alpha", "scaling", "init", "lr", "lr_ratio", "dropout", "bias", "targets",
                 "method")  # fmt: skip
"""The adapter settings that tell runs apart besides rank and seed (``targets``: which modules
of a deep model, empty for the single-layer kinds; ``method``: LoRA, DoRA, …, so that runs of
two methods are never averaged as seeds of one setting)."""


def _unique(keys: list[str]) -> list[str]:
    return list(dict.fromkeys(keys))


def settings_in(frame: pd.DataFrame) -> list[str]:
    """The :data:`LORA_SETTINGS` that are columns of ``frame`` (a table without a dropout or bias
    column has one value of it)."""
    return [c for c in LORA_SETTINGS if c in frame.columns]


def completed(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "ok"]


def completed_lora(runs: pd.DataFrame) -> pd.DataFrame:
    return completed(runs[registry.adapter_rows(runs["method"])])


def diverged(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] != "ok"]


def seed_stats(runs: pd.DataFrame, by: list[str], value: str = "final_val_loss") -> pd.DataFrame:
    """Mean, sample standard deviation (0 for one seed) and count of ``value`` across seeds."""
    grouped = completed(runs).groupby(_unique(by), dropna=False, sort=True)[value]
    stats = grouped.agg(["mean", "std", "count"]).reset_index()
    stats["std"] = stats["std"].fillna(0.0)
    return stats


def best_lora_settings(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """For each group in ``by`` (for example dataset and rank), the LoRA settings with the lowest
    mean final validation loss across seeds, with that mean, sd and seed count."""
    lora = runs[registry.adapter_rows(runs["method"])]
    stats = seed_stats(lora, [*by, *settings_in(lora)])
    if stats.empty:
        return stats
    best = stats.loc[stats.groupby(by, dropna=False)["mean"].idxmin()]
    return best.sort_values(by).reset_index(drop=True)


def reference_slice(lora: pd.DataFrame, vary: list[str]) -> pd.DataFrame:
    """The LoRA runs in which only the axes in ``vary`` (and the seed) change.

    The other settings are fixed at the combination that covers the most runs (ties broken by
    sorted order), so a figure about one axis compares like with like.
    """
    fixed = [c for c in ["rank", *settings_in(lora)] if c not in vary]
    if lora.empty or not fixed:
        return lora
    sizes = lora.groupby(["dataset", *fixed], dropna=False).size().rename("n").reset_index()
    sizes = sizes.sort_values(
        ["dataset", "n", *fixed], ascending=[True, False, *[True] * len(fixed)]
    )
    chosen = sizes.groupby("dataset").head(1)[["dataset", *fixed]]
    return lora.merge(chosen, on=["dataset", *fixed], how="inner")


def where_varies(frame: pd.DataFrame, by: list[str], axis: str) -> pd.DataFrame:
    """Rows of the groups in ``by`` that have at least two values of ``axis``."""
    if frame.empty:
        return frame
    counts = frame.groupby(by, dropna=False)[axis].transform("nunique")
    return frame[counts >= 2]


def best_full(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, the full fine-tuning learning rate with the lowest mean final val loss."""
    stats = seed_stats(runs[registry.full_rows(runs["method"])], ["dataset", "lr"])
    if stats.empty:
        return stats
    return stats.loc[stats.groupby("dataset")["mean"].idxmin()].reset_index(drop=True)


def select_runs(runs: pd.DataFrame, settings: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The runs (all seeds) whose ``keys`` match a row of ``settings``."""
    keys = _unique(keys)
    return completed(runs).merge(settings[keys], on=keys, how="inner")


def best_lora_runs(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The completed LoRA runs (all seeds) at the :func:`best_lora_settings` of each group."""
    lora = runs[registry.adapter_rows(runs["method"])]
    best = best_lora_settings(lora, by)
    if best.empty:
        return completed(lora).iloc[:0]
    return select_runs(lora, best, [*by, *settings_in(lora)])


def best_full_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The completed full fine-tuning runs (all seeds) at each dataset's :func:`best_full` lr."""
    full = runs[registry.full_rows(runs["method"])]
    best = best_full(full)
    if best.empty:
        return completed(full).iloc[:0]
    return select_runs(full, best, ["dataset", "lr"])


def best_lowrank_lora(runs: pd.DataFrame) -> pd.DataFrame:
    """:func:`best_lora_settings` per lowrank dataset and rank, with the dataset's task rank and
    noise floor."""
    lora = runs[(registry.adapter_rows(runs["method"])) & (runs["dataset_kind"] == "lowrank")]
    best = best_lora_settings(lora, ["dataset", "rank"])
    meta = lora.groupby("dataset")[["task_rank", "noise_floor"]].first()
    return best.join(meta, on="dataset") if not best.empty else best


def efficiency_table(runs: pd.DataFrame, timings: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per dataset and method/rank: counts, training-state bytes, seconds per epoch and
    final validation loss (mean ± sd over seeds) at the best settings, plus ratios to full FT."""
    runs = runs.merge(timings, on="run_id", how="left") if timings is not None else runs
    chosen = [
        ("lora", ["dataset", "rank"], best_lora_runs(runs, ["dataset", "rank"])),
        ("full", ["dataset"], best_full_runs(runs)),
    ]
    rows = [
        _efficiency_row(group, method)
        for method, keys, frame in chosen
        for _, group in frame.groupby(keys, sort=True)
    ]
    table = pd.DataFrame(rows, columns=EFFICIENCY_COLUMNS[:-3])
    return _with_ratios_to_full(table).reindex(columns=EFFICIENCY_COLUMNS)


EFFICIENCY_COLUMNS = [
    "dataset", "method", "rank", "settings", "trainable_params", "total_params", "trainable_pct",
    "train_state_bytes", "adapter_bytes", "epoch_seconds", "final_val_loss", "final_val_loss_sd",
    "seeds", "optimal_val_loss", "params_vs_full", "state_vs_full", "loss_vs_full",
]  # fmt: skip
"""The columns of :func:`efficiency_table` (``tables/efficiency.csv``), also when it is empty."""


def _efficiency_row(group: pd.DataFrame, method: str) -> dict:
    """The efficiency row of the seeds of one method/rank at its best settings."""
    first = group.iloc[0]
    return {
        "dataset": first["dataset"],
        "method": method,
        "rank": first["rank"] if registry.is_adapter(method) else pd.NA,
        "settings": _settings_label(first, method),
        "trainable_params": int(first["trainable_params"]),
        "total_params": int(first["total_params"]),
        "trainable_pct": 100.0 * first["trainable_params"] / first["total_params"],
        "train_state_bytes": int(first["train_state_bytes"]),
        "adapter_bytes": int(first["adapter_bytes"]),
        "epoch_seconds": group["mean_epoch_seconds"].mean()
        if "mean_epoch_seconds" in group
        else float("nan"),
        "final_val_loss": group["final_val_loss"].mean(),
        "final_val_loss_sd": group["final_val_loss"].std(ddof=1) if len(group) > 1 else 0.0,
        "seeds": len(group),
        "optimal_val_loss": first["optimal_val_loss"],
    }


def _with_ratios_to_full(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with parameters, training state and final loss as ratios to full FT's."""
    full = table[registry.full_rows(table["method"])].set_index("dataset")
    for column, ratio in (
        ("trainable_params", "params_vs_full"),
        ("train_state_bytes", "state_vs_full"),
        ("final_val_loss", "loss_vs_full"),
    ):
        table[ratio] = table.apply(
            lambda row, c=column: (
                row[c] / full.loc[row["dataset"], c]
                if row["dataset"] in full.index
                else float("nan")
            ),
            axis=1,
        )
    return table


def first_rank_matching_full(rows: pd.DataFrame, tolerance: float) -> pd.Series | None:
    """Of one dataset's :func:`efficiency_table` rows, the lowest-rank LoRA row whose final loss
    is within ``tolerance`` of full fine-tuning's; None without a match or without full FT."""
    lora = rows[registry.adapter_rows(rows["method"])].sort_values("rank")
    full = rows[registry.full_rows(rows["method"])]
    if full.empty:
        return None
    match = lora[lora["final_val_loss"] <= full.iloc[0]["final_val_loss"] * (1 + tolerance)]
    return None if match.empty else match.iloc[0]


def _settings_label(row: pd.Series, method: str) -> str:
    if registry.is_full(method):
        return f"lr={row['lr']:g}"
    label = f"α={row['alpha']:g}, {row['scaling']}, {row['init']}, lr={row['lr']:g}"
    if pd.notna(row.get("targets")):
        label = f"targets {row['targets']}, {label}"
    if row.get("lr_ratio", 1) not in (1, 1.0):
        label += f", λ={row['lr_ratio']:g}"
    return label


def seed_demo_count_note(runs: pd.DataFrame) -> list[dict]:
    """For LoRA runs whose base bias trains (``bias="lora_only"``, as in the seed demo): the count a
    reader would expect from the adapter alone, the count that really trains, and the gap."""
    notes = []
    lora = runs[(registry.adapter_rows(runs["method"])) & (runs["bias"] == "lora_only")]
    for (dataset, rank), group in lora.groupby(["dataset", "rank"], sort=True):
        first = group.iloc[0]
        notes.append(
            {
                "dataset": dataset,
                "rank": int(rank),
                "adapter_params": int(first["adapter_params"]),
                "trainable_params": int(first["trainable_params"]),
                "total_params": int(first["total_params"]),
                "bias_params": int(first["trainable_params"] - first["adapter_params"]),
                "out_features": int(first["out_features"]),
            }
        )
    return notes


def full_fine_tuning_level(runs: pd.DataFrame, dataset: str) -> tuple[float, float] | None:
    """Mean and sd of the best full fine-tuning final loss of ``dataset``, or None."""
    best = best_full(runs)
    row = best[best["dataset"] == dataset]
    return None if row.empty else (float(row["mean"].iloc[0]), float(row["std"].iloc[0]))


def noise_floor(runs: pd.DataFrame, dataset: str) -> float | None:
    """σ² of ``dataset`` as recorded in the runs table, or None."""
    floor = runs.loc[runs["dataset"] == dataset, "noise_floor"].dropna()
    return None if floor.empty else float(floor.iloc[0])
