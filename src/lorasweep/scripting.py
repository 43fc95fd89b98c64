"""Glue for Snakemake ``script:`` files: send a job's output to its log file."""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def logged_to(path: str | Path) -> Iterator[None]:
    """Redirect stdout and stderr to ``path``; on an exception, write its traceback there too,
    restore the streams and re-raise, so both the log and Snakemake show the error."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", buffering=1) as log:
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        except BaseException:
            traceback.print_exc(file=log)
            raise
        finally:
            sys.stdout.flush()
