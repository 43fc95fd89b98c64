"""Where a result came from: package versions, git commit, device."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = ("lorasweep", "torch", "numpy", "pandas", "snakemake", "safetensors")
PACKAGE_DIR = Path(__file__).resolve().parent
"""This package's folder: in a workflow run, ``<clone>/src/lorasweep`` of the workflow's own
clone (:func:`lorasweep.logs.check_package_source` makes sure of it)."""


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(where: str | Path = PACKAGE_DIR) -> str | None:
    """The checked-out commit of the repository containing ``where``, or None outside git.

    The default is the package's own folder, not the working folder: a workflow run from
    anywhere records the commit of the code that computed it."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device_type: str, device_name: str, torch_threads: int) -> dict:
    return {
        "versions": package_versions(),
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "device": {"type": device_type, "name": device_name},
        "torch_threads": torch_threads,
    }
