"""Summaries of the run tables: seed statistics, best settings per rank, efficiency vs full FT.

Settings are selected on the validation split (:data:`SELECT`) and reported on the held-out
test split (:data:`REPORT`), so the arm with more settings tried gains nothing from selection in
the reported number. Diverged runs are left out of every mean; :func:`diverged` lists them.
"""

from __future__ import annotations

import pandas as pd

from lorasweep.models import registry

LORA_SETTINGS = ("alpha", "scaling", "init", "lr", "lr_ratio", "dropout", "bias", "targets",
                 "method")  # fmt: skip
"""The adapter settings that tell runs apart besides rank and seed (``targets``: which modules
of a deep model, empty for the single-layer kinds; ``method``: LoRA, DoRA, …, so that runs of
two methods are never averaged as seeds of one setting)."""


SELECT = "final_val_loss"
"""The loss every best setting is chosen on."""
REPORT = "final_test_loss"
"""The loss a chosen setting is reported and judged on, where the runs have a test split."""


def reported_column(runs: pd.DataFrame) -> str:
    """:data:`REPORT` where ``runs`` has test losses, else :data:`SELECT` (a table from before
    the test split)."""
    return REPORT if REPORT in runs and runs[REPORT].notna().any() else SELECT


def split_name(column: str) -> str:
    return "test" if column == REPORT else "validation"


def _unique(keys: list[str]) -> list[str]:
    return list(dict.fromkeys(keys))


def settings_in(frame: pd.DataFrame) -> list[str]:
    """The :data:`LORA_SETTINGS` that are columns of ``frame`` (a table without a dropout or bias
    column has one value of it)."""
    return [c for c in LORA_SETTINGS if c in frame.columns]


def completed(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "ok"]


def completed_lora(runs: pd.DataFrame) -> pd.DataFrame:
    return completed(runs[registry.factor_rows(runs["method"])])


def diverged(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] != "ok"]


def seed_stats(runs: pd.DataFrame, by: list[str], value: str = "final_val_loss") -> pd.DataFrame:
    """Mean, sample standard deviation (0 for one seed) and count of ``value`` across seeds."""
    grouped = completed(runs).groupby(_unique(by), dropna=False, sort=True)[value]
    stats = grouped.agg(["mean", "std", "count"]).reset_index()
    stats["std"] = stats["std"].fillna(0.0)
    return stats


def _best_of(runs: pd.DataFrame, by: list[str], settings: list[str]) -> pd.DataFrame:
    """Per group in ``by``, the ``settings`` with the lowest mean :data:`SELECT` loss: its
    ``mean``, ``std`` and ``count`` (runs), the reported loss's ``test_mean`` and ``test_std``,
    ``n_replicates`` (task seeds), and the group's search budget: ``settings_searched`` (setting
    combinations tried) and ``lrs_searched`` (learning rates among them)."""
    keys = _unique([*by, *settings])
    stats = seed_stats(runs, keys)
    if stats.empty:
        return stats.assign(test_mean=[], test_std=[], n_replicates=[], settings_searched=[],
                            lrs_searched=[])  # fmt: skip
    reported = seed_stats(runs, keys, reported_column(runs))
    stats = stats.merge(
        reported[[*keys, "mean", "std"]].rename(columns={"mean": "test_mean", "std": "test_std"}),
        on=keys,
        how="left",
    )
    if reported_column(runs) != REPORT:
        stats[["test_mean", "test_std"]] = float("nan")
    replicates = (
        completed(runs).groupby(keys, dropna=False)["task_seed"].nunique()
        if "task_seed" in runs
        else None
    )
    stats["n_replicates"] = (
        stats.join(replicates.rename("n"), on=keys)["n"].clip(lower=1).to_numpy()
        if replicates is not None
        else 1
    )
    grouped = stats.groupby(_unique(by), dropna=False)
    stats["settings_searched"] = grouped["mean"].transform("size")
    stats["lrs_searched"] = grouped["lr"].transform("nunique") if "lr" in stats else 1
    best = stats.loc[grouped["mean"].idxmin()]
    return best.sort_values(_unique(by)).reset_index(drop=True)


def by_method(runs: pd.DataFrame, by: list[str]) -> list[str]:
    """``by`` with ``method`` after ``dataset`` where ``runs`` has that column: each adapter
    method (LoRA, DoRA, …) is an arm of its own, never one pool whose best setting may be either
    method's. With one method the groups, and their order, are ``by``'s."""
    if "method" not in runs.columns or "method" in by:
        return list(by)
    at = by.index("dataset") + 1 if "dataset" in by else 0
    return [*by[:at], "method", *by[at:]]


def best_lora_settings(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """For each group in ``by`` (for example dataset and rank) and adapter method
    (:func:`by_method`), the settings with the lowest mean final validation loss across seeds
    (:func:`_best_of`: with that mean, sd and count, the test loss at those settings and the
    group's search budget)."""
    lora = runs[registry.factor_rows(runs["method"])]
    return _best_of(lora, by_method(lora, by), settings_in(lora))


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
    """Per dataset, the full fine-tuning learning rate with the lowest mean final val loss
    (columns as :func:`_best_of`)."""
    return _best_of(runs[registry.full_rows(runs["method"])], ["dataset"], ["lr"])


def select_runs(runs: pd.DataFrame, settings: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The runs (all seeds) whose ``keys`` match a row of ``settings``."""
    keys = _unique(keys)
    return completed(runs).merge(settings[keys], on=keys, how="inner")


def best_lora_runs(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The completed adapter runs (all seeds) at the :func:`best_lora_settings` of each group
    and method."""
    lora = runs[registry.factor_rows(runs["method"])]
    best = best_lora_settings(lora, by)
    if best.empty:
        return completed(lora).iloc[:0]
    return select_runs(lora, best, [*by_method(lora, by), *settings_in(lora)])


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
    lora = runs[(registry.factor_rows(runs["method"])) & (runs["dataset_kind"] == "lowrank")]
    best = best_lora_settings(lora, ["dataset", "rank"])
    meta = lora.groupby("dataset")[["task_rank", "noise_floor"]].first()
    return best.join(meta, on="dataset") if not best.empty else best


def efficiency_table(runs: pd.DataFrame, timings: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per dataset and adapter method and rank, and per dataset for full FT: counts,
    training-state bytes, seconds per epoch, the final validation loss the settings were chosen
    on and the final test loss they are reported on (mean ± sd over runs), the arm's search
    budget, plus ratios to full FT."""
    runs = runs.merge(timings, on="run_id", how="left") if timings is not None else runs
    keys = ["dataset", "method", "rank"]
    adapters = best_lora_settings(runs, ["dataset", "rank"]).set_index(keys)
    rows = [
        _efficiency_row(group, key[1], adapters.loc[key])
        for key, group in best_lora_runs(runs, ["dataset", "rank"]).groupby(keys, sort=True)
    ]
    full = best_full(runs).set_index("dataset")
    rows += [
        _efficiency_row(group, registry.full_name(), full.loc[key])
        for key, group in best_full_runs(runs).groupby("dataset", sort=True)
    ]
    table = pd.DataFrame(rows, columns=EFFICIENCY_COLUMNS[:-4])
    return _with_ratios_to_full(table).reindex(columns=EFFICIENCY_COLUMNS)


EFFICIENCY_COLUMNS = [
    "dataset", "method", "rank", "settings", "trainable_params", "total_params", "trainable_pct",
    "train_state_bytes", "adapter_bytes", "epoch_seconds", "final_val_loss", "final_val_loss_sd",
    "final_test_loss", "final_test_loss_sd", "seeds", "n_replicates", "settings_searched",
    "lrs_searched", "optimal_val_loss", "params_vs_full", "state_vs_full", "val_loss_vs_full",
    "test_loss_vs_full",
]  # fmt: skip
"""The columns of :func:`efficiency_table` (``tables/efficiency.csv``), also when it is empty."""


def _sd(values: pd.Series) -> float:
    return values.std(ddof=1) if values.notna().sum() > 1 else 0.0


def _efficiency_row(group: pd.DataFrame, method: str, best: pd.Series) -> dict:
    """The efficiency row of the runs of one method/rank at its best settings; ``best`` is its
    :func:`_best_of` row (the search budget)."""
    first = group.iloc[0]
    test = group[REPORT] if REPORT in group else pd.Series(dtype=float)
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
        "final_val_loss": group[SELECT].mean(),
        "final_val_loss_sd": _sd(group[SELECT]),
        "final_test_loss": test.mean() if test.notna().any() else float("nan"),
        "final_test_loss_sd": _sd(test) if test.notna().any() else float("nan"),
        "seeds": len(group),
        "n_replicates": int(best["n_replicates"]),
        "settings_searched": int(best["settings_searched"]),
        "lrs_searched": int(best["lrs_searched"]),
        "optimal_val_loss": first["optimal_val_loss"],
    }


def _with_ratios_to_full(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with parameters, training state and final losses as ratios to full FT's."""
    full = table[registry.full_rows(table["method"])].set_index("dataset")
    for column, ratio in (
        ("trainable_params", "params_vs_full"),
        ("train_state_bytes", "state_vs_full"),
        ("final_val_loss", "val_loss_vs_full"),
        ("final_test_loss", "test_loss_vs_full"),
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


def reported_loss_column(table: pd.DataFrame) -> str:
    """The loss an efficiency table reports: ``final_test_loss`` where it has one, else
    ``final_val_loss``."""
    test = table.get("final_test_loss")
    return "final_test_loss" if test is not None and test.notna().any() else SELECT


def search_budget(table: pd.DataFrame) -> str:
    """Each arm's number of settings searched, from efficiency rows: ``lora r4: 6; full: 2``."""
    return "; ".join(
        f"{arm_name(row)}: {int(row['settings_searched'])}" for _, row in table.iterrows()
    )


def arm_name(row: pd.Series) -> str:
    return f"{row['method']} r{int(row['rank'])}" if registry.is_adapter(row["method"]) else "full"


def first_rank_matching_full(rows: pd.DataFrame, tolerance: float) -> pd.Series | None:
    """Of one dataset's :func:`efficiency_table` rows, the lowest-rank LoRA row whose final
    validation loss is within ``tolerance`` of full fine-tuning's (a choice, so made on the
    validation split); None without a match or without full FT."""
    lora = rows[registry.factor_rows(rows["method"])].sort_values("rank")
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
    lora = runs[(registry.factor_rows(runs["method"])) & (runs["bias"] == "lora_only")]
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
    """Mean and sd of the best full fine-tuning final validation loss of ``dataset``, or
    None."""
    best = best_full(runs)
    row = best[best["dataset"] == dataset]
    return None if row.empty else (float(row["mean"].iloc[0]), float(row["std"].iloc[0]))


def noise_floor(runs: pd.DataFrame, dataset: str) -> float | None:
    """σ² of ``dataset`` as recorded in the runs table, or None."""
    floor = runs.loc[runs["dataset"] == dataset, "noise_floor"].dropna()
    return None if floor.empty else float(floor.iloc[0])
