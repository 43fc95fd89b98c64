"""Glue for Snakemake ``script:`` files: check which code runs, send the output to a log, and
end on a known failure (a full disk, Ctrl-C, a :class:`OneLineError`) with one line instead of a
traceback."""

from __future__ import annotations

import contextlib
import errno
import re
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


class OneLineError(Exception):
    """An error whose message, one line naming the file or key and what to do, says all; a
    workflow script prints it without a traceback."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
TEMPORARY = re.compile(r"\.(.+)\.[A-Za-z0-9_]{8}\.tmp")
"""A temporary sibling of :mod:`lorasweep.io` and the run folders: ``.<name>.<random>.tmp``."""


def final_path(path: str | Path) -> str:
    """``path`` with each temporary sibling's name replaced by the name it was to get."""
    parts = [m[1] if (m := TEMPORARY.fullmatch(part)) else part for part in Path(path).parts]
    return str(Path(*parts)) if parts else str(path)


def one_line(err: BaseException) -> str | None:
    """The line to print for ``err`` instead of a traceback; None for an unexpected error."""
    if isinstance(err, OneLineError):
        return str(err)
    if isinstance(err, OSError) and err.errno in DISK_FULL:
        where = final_path(err.filename) if err.filename else "a result file"
        return (
            f"{where}: {err.strerror or 'no space left on device'}; free some space on its disk "
            "and run the same command again (what is finished is kept and reused)"
        )
    return None


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
            with contextlib.suppress(OSError):
                traceback.print_exc(file=log)
            raise
        finally:
            sys.stdout.flush()


@contextlib.contextmanager
def workflow_script(snakemake) -> Iterator[None]:
    """What every workflow script runs inside: the package check, then :func:`logged_to` the
    rule's log. A full disk, Ctrl-C or a :class:`OneLineError` ends the job with one line on
    the console (the log keeps the traceback)."""
    check_package_source(Path(snakemake.scriptdir).resolve().parents[1])
    job = " ".join([snakemake.rule, *map(str, snakemake.wildcards)])
    try:
        with logged_to(snakemake.log[0]):
            yield
    except KeyboardInterrupt as err:
        done = f" ({err})" if str(err) else ""
        print(f"{job}: interrupted{done}; run the same command again to resume", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:
        if (line := one_line(err)) is None:
            raise
        print(line, file=sys.stderr)
        raise SystemExit(1) from None
