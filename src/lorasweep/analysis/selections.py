"""The settings each figure draws, chosen once (``tables/selections.csv``).

A selection names a grouping of the runs; per group it holds the settings with the lowest mean
final validation loss, as :func:`statistics.best_lora_settings` and :func:`statistics.best_full`
choose them, so the figures read their runs from this table and never choose them themselves.
"""

from __future__ import annotations

import pandas as pd

from lorasweep.analysis import statistics

LORA_SELECTIONS = {
    "rank": ["dataset", "rank"],
    "scaling_rank": ["dataset", "scaling", "rank"],
    "method_targets_rank": ["dataset", "method", "targets", "rank"],
    "targets_rank": ["dataset", "targets", "rank"],
    "scaling_rank_alpha": ["dataset", "scaling", "rank", "alpha"],
}
"""Each adapter selection by name: the columns of its groups (those the runs have), each also
split by adapter method (:func:`statistics.by_method`), so ``targets_rank`` and
``method_targets_rank`` choose alike; both stay, as figures name them."""
FULL = "full"
"""The selection of full fine-tuning's learning rate per dataset."""
FULL_KEYS = ["dataset", "lr"]
STAT_COLUMNS = ["mean", "std", "count", "test_mean", "test_std", "n_replicates",
                "settings_searched", "lrs_searched"]  # fmt: skip
"""The columns of :func:`statistics.best_lora_settings` besides the group and settings."""


def group_keys(name: str, runs: pd.DataFrame) -> list[str]:
    """The group columns of selection ``name`` present in ``runs``."""
    keys = ["dataset"] if name == FULL else LORA_SELECTIONS[name]
    return [c for c in keys if c in runs.columns]


def merge_keys(name: str, runs: pd.DataFrame) -> list[str]:
    """The columns a selection's rows are matched to runs on: its groups and the settings (as
    :func:`statistics.best_lora_runs` and :func:`statistics.best_full_runs` match them)."""
    if name == FULL:
        return FULL_KEYS
    return list(dict.fromkeys([*group_keys(name, runs), "rank", *statistics.settings_in(runs)]))


def selections_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per selection and group: ``selection``, the group and settings columns, and the
    chosen settings' validation and test statistics and search budget."""
    frames = [
        statistics.best_lora_settings(runs, group_keys(name, runs)).assign(selection=name)
        for name in LORA_SELECTIONS
    ]
    frames.append(statistics.best_full(runs).assign(method="full", selection=FULL))
    frames = [f for f in frames if not f.empty]
    settings = ["rank", *statistics.settings_in(runs)]
    columns = ["selection", "dataset", *settings, *STAT_COLUMNS]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).reindex(columns=columns)
