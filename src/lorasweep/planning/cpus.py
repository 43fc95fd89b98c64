"""How many cores a local run and its jobs may use: no more than the CPUs this process may run
on, since more jobs or threads than CPUs only slow each other down."""

from __future__ import annotations

import os


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which cgroups and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def usable_cores(requested: int | None, available: int | None = None) -> int | None:
    """``requested`` (``--cores``), capped at ``available`` (default: :func:`available_cpus`)."""
    if requested is None:
        return None
    return max(1, min(requested, available or available_cpus()))
