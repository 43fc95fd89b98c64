"""Helpers shared by several test files (fixtures live in conftest.py)."""

from __future__ import annotations

import io
import re

import pandas as pd

from lorasweep.tables.runs import RUN_COLUMNS, read_runs

FINDING_ROW = re.compile(r'<tr data-claim="([^"]+)"><td>[^<]*</td><td [^>]*>([^<]+)</td>')


def report_verdicts(html: str) -> dict[str, str]:
    """Claim id → verdict of every row of a report's findings table, in the report's order."""
    findings = html.split("<h2>Findings</h2>", 1)[1].split("<h2>", 1)[0]
    return dict(FINDING_ROW.findall(findings))


def as_stored(runs: pd.DataFrame) -> pd.DataFrame:
    """A hand-made runs table as the later stages read it: every ``runs.csv`` column (those the
    test left out empty, as ``targets`` is for single-layer runs), through a CSV round trip."""
    extra = [c for c in runs.columns if c not in RUN_COLUMNS]
    buffer = io.StringIO()
    runs.reindex(columns=[*RUN_COLUMNS, *extra]).to_csv(buffer, index=False)
    buffer.seek(0)
    return read_runs(buffer)
