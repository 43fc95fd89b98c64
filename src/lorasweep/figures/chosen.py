"""The runs a figure draws, read from ``tables/selections.csv`` (a figure never chooses them)."""

from __future__ import annotations

import pandas as pd

from lorasweep.analysis import selections, statistics
from lorasweep.models import registry


def chosen_settings(t, name: str, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows of selection ``name`` (of the datasets in ``runs``, default all), with the group
    and settings columns typed as in the runs table."""
    runs = t.runs if runs is None else runs
    table = t.selections
    rows = table[(table["selection"] == name) & table["dataset"].isin(runs["dataset"])]
    keys = selections.merge_keys(name, t.runs)
    rows = rows[[*keys, *selections.STAT_COLUMNS]].reset_index(drop=True)
    return rows.astype({c: t.runs[c].dtype for c in keys})


def chosen_runs(t, name: str, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The completed runs (all seeds) of ``runs`` (default all) at the settings of selection
    ``name``."""
    runs = t.runs if runs is None else runs
    arm = registry.full_rows if name == selections.FULL else registry.adapter_rows
    keys = selections.merge_keys(name, t.runs)
    pool = statistics.completed(runs[arm(runs["method"])])
    return pool.merge(chosen_settings(t, name, runs)[keys], on=keys, how="inner")


def full_level(t, dataset: str) -> tuple[float, float] | None:
    """Mean and sd of the chosen full fine-tuning final validation loss of ``dataset``, or
    None."""
    row = chosen_settings(t, selections.FULL)
    row = row[row["dataset"] == dataset]
    return None if row.empty else (float(row["mean"].iloc[0]), float(row["std"].iloc[0]))
