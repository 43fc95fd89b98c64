"""Ctrl-C in a local Snakemake run: each stopped job says so in one line (:mod:`lorasweep.logs`);
the main process then leaves out Snakemake's error block for each of them and ends with one line
saying what finished and how to resume."""

from __future__ import annotations

import atexit
import logging
import signal
import sys
from collections.abc import Iterable
from pathlib import Path


class Interrupts:
    """Notes a Ctrl-C (SIGINT) before Snakemake handles it as usual, as a KeyboardInterrupt."""

    def __init__(self) -> None:
        self.seen = False

    def install(self, logger: logging.Logger) -> None:
        """Watch SIGINT, and keep errors off ``logger``'s console handlers once one came."""
        signal.signal(signal.SIGINT, self._handle)
        for handler in logger.handlers:
            if not isinstance(handler, logging.FileHandler):
                handler.addFilter(self._quiet)

    def _handle(self, signum, frame) -> None:
        self.seen = True
        signal.default_int_handler(signum, frame)

    def _quiet(self, record: logging.LogRecord) -> bool:
        return not (self.seen and record.levelno >= logging.ERROR)


def summary(jobs: dict[str, str], runs: Iterable[str], runs_dir: str | Path) -> str:
    """The last line after a Ctrl-C: how many of ``jobs`` (job → manifest path) and of ``runs``
    (run ids) are finished, and how to resume."""
    runs = list(runs)
    finished_jobs = sum(Path(manifest).is_file() for manifest in jobs.values())
    finished_runs = sum((Path(runs_dir) / run).is_dir() for run in runs)
    return (
        f"interrupted: {finished_jobs} of {len(jobs)} training jobs and {finished_runs} of "
        f"{len(runs)} runs are finished and kept; run the same command again to resume"
    )


def report_at_exit(interrupts: Interrupts, line) -> None:
    """After a Ctrl-C, print ``line()`` when the process exits, after Snakemake's last words."""
    if interrupts.seen:
        atexit.register(lambda: print(line(), file=sys.stderr, flush=True))
