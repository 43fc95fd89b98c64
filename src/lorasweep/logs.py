"""Glue for Snakemake ``script:`` files: check which code runs, and send the output to a log."""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


class ForeignPackageError(RuntimeError):
    """The imported ``lorasweep`` is not the one in the workflow's own clone."""


def check_package_source(clone: str | Path) -> None:
    """Refuse to run when the importable ``lorasweep`` is not ``<clone>/src/lorasweep``, so a
    workflow never computes results with a package installed from another clone."""
    expected = (Path(clone) / "src" / "lorasweep").resolve()
    if expected != PACKAGE:
        raise ForeignPackageError(
            f"lorasweep is imported from {PACKAGE}, not from this workflow's clone ({expected}); "
            "run the workflow through its Snakefile, which puts the clone's src/ first"
        )


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


@contextlib.contextmanager
def workflow_script(snakemake) -> Iterator[None]:
    """What every workflow script runs inside: the package check, then :func:`logged_to` the
    rule's log."""
    check_package_source(Path(snakemake.scriptdir).resolve().parents[1])
    with logged_to(snakemake.log[0]):
        yield
