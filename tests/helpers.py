"""Helpers shared by the tests."""

from __future__ import annotations

import io

import pandas as pd

from lorasweep.tables.runs import RUN_COLUMNS, read_runs


def as_stored(runs: pd.DataFrame) -> pd.DataFrame:
    """A hand-made runs table as the later stages read it: every ``runs.csv`` column (those the
    test left out empty, as ``targets`` is for single-layer runs), through a CSV round trip."""
    extra = [c for c in runs.columns if c not in RUN_COLUMNS]
    buffer = io.StringIO()
    runs.reindex(columns=[*RUN_COLUMNS, *extra]).to_csv(buffer, index=False)
    buffer.seek(0)
    return read_runs(buffer)
