"""Helpers shared by several test files (fixtures live in conftest.py)."""

from __future__ import annotations

import re

FINDING_ROW = re.compile(r'<tr data-claim="([^"]+)"><td>[^<]*</td><td [^>]*>([^<]+)</td>')


def report_verdicts(html: str) -> dict[str, str]:
    """Claim id → verdict of every row of a report's findings table, in the report's order."""
    findings = html.split("<h2>Findings</h2>", 1)[1].split("<h2>", 1)[0]
    return dict(FINDING_ROW.findall(findings))
