"""What a finished run folder and a job manifest must satisfy before anything relies on them.

A run folder's last file is ``checksums.json``, written just before the folder is renamed into
place: the SHA-256 of every other file in it except ``timing.json``, whose wall-clock times
differ between reruns (the folder must not). :func:`integrity_problem` checks it, and that
``timing.json`` is readable, before a run is reused (:mod:`lorasweep.jobs.reuse`), before the
tables read a folder (:func:`lorasweep.tables.runs.iter_run_dirs`), and when the workflow plans
(:mod:`lorasweep.planning.freshness`). :func:`plan_mismatch` compares the parameters and dataset
checksum a folder records with the ones the plan asks for.

This module never imports torch, so the workflow can run these checks while it plans.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from lorasweep.io import read_json, sha256_file, write_json
from lorasweep.logs import OneLineError
from lorasweep.planning.devices import resolved_type

CHECKSUMS = "checksums.json"
TIMING = "timing.json"
REQUIRED = ("weights.safetensors", "epochs.csv", "metrics.json", "provenance.json")
"""Files every run folder has, and its checksums must cover."""


def file_checksums(folder: str | Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (POSIX path relative to it) except
    ``checksums.json`` and ``timing.json``."""
    folder = Path(folder)
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() not in (CHECKSUMS, TIMING)
    }


def write_checksums(folder: str | Path) -> None:
    """Write ``checksums.json``; call it after every other file of the folder is written."""
    write_json(Path(folder) / CHECKSUMS, file_checksums(folder))


def _recorded_checksums(run_dir: Path) -> dict[str, str] | str:
    """The checksums ``run_dir`` records, or why they cannot be read."""
    try:
        recorded = read_json(run_dir / CHECKSUMS)
    except FileNotFoundError:
        return f"{CHECKSUMS} missing (the run did not finish, or predates checksums)"
    except (OSError, ValueError) as err:
        return f"{CHECKSUMS} unreadable ({type(err).__name__})"
    safe = isinstance(recorded, dict) and all(
        isinstance(name, str)
        and isinstance(digest, str)
        and not PurePosixPath(name).is_absolute()
        and ".." not in PurePosixPath(name).parts
        for name, digest in recorded.items()
    )
    return recorded if safe else f"{CHECKSUMS} is not a mapping of file names to SHA-256"


def integrity_problem(run_dir: str | Path) -> str | None:
    """Why ``run_dir`` is not an intact finished run folder, in a few words; None when it is:
    every file its ``checksums.json`` lists (at least :data:`REQUIRED`) has that SHA-256, and
    ``timing.json`` holds a list of epoch times."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return "missing" if not os.path.lexists(run_dir) else "not a folder"
    recorded = _recorded_checksums(run_dir)
    if isinstance(recorded, str):
        return recorded
    for name in REQUIRED:
        if name not in recorded:
            return f"{name} is not covered by {CHECKSUMS}"
    for name, digest in sorted(recorded.items()):
        path = run_dir / name
        if not path.is_file():
            return f"{name} missing"
        if sha256_file(path) != digest:
            return f"{name} differs from its SHA-256 in {CHECKSUMS} (edited or corrupted)"
    try:
        seconds = read_json(run_dir / TIMING)["epoch_seconds"]
    except (OSError, ValueError, TypeError, KeyError):
        return f"{TIMING} missing or unreadable"
    if not isinstance(seconds, list):
        return f"{TIMING} has no list of epoch times"
    return None


def plan_mismatch(run_dir: str | Path, run: dict, dataset_sha256: str | None) -> str | None:
    """How the parameters (``provenance.json``'s ``run``) or dataset checksum recorded in an
    intact run folder differ from ``run`` (:meth:`RunSpec.as_dict`) and ``dataset_sha256``;
    None when they match. The device setting is compared by the device it resolves to here
    (``auto`` on a machine without a GPU matches a ``cpu`` run). ``dataset_sha256=None`` skips
    the dataset comparison."""
    provenance = read_json(Path(run_dir) / "provenance.json")
    recorded = provenance.get("run", {}) if isinstance(provenance, dict) else {}
    changed = sorted(
        k for k in {*recorded, *run} if k != "device" and recorded.get(k) != run.get(k)
    )
    if changed:
        shown = ", ".join(f"{k} {recorded.get(k)!r} → {run.get(k)!r}" for k in changed[:3])
        return f"recorded parameters differ from the config ({shown})"
    trained_on = (provenance.get("device") or {}).get("type")
    wanted = resolved_type(run.get("device", "cpu"))
    if trained_on != wanted:
        return f"trained on {trained_on}, but train.device {run.get('device')!r} is {wanted} here"
    recorded_sha = provenance.get("dataset", {}).get("sha256")
    if dataset_sha256 is not None and recorded_sha != dataset_sha256:
        return "trained on another version of its dataset"
    return None


class ManifestError(OneLineError, ValueError):
    """A job manifest (``jobs/<job>.json``) that cannot be read. One line naming the file."""


def read_manifest(path: str | Path) -> tuple[list[str], Path]:
    """The run ids a job manifest lists and their runs folder (resolved against the manifest's
    folder). Raises :class:`ManifestError` naming the file when it is not a manifest, and
    ``FileNotFoundError`` when it is missing."""
    path = Path(path)
    try:
        listing = read_json(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ManifestError(
            f"{path}: not a readable job manifest ({detail}); delete it to rerun its job"
        ) from None
    runs = listing.get("runs") if isinstance(listing, dict) else None
    runs_dir = listing.get("runs_dir") if isinstance(listing, dict) else None
    if not (
        isinstance(runs, list)
        and all(isinstance(r, str) and r and "/" not in r and r not in (".", "..") for r in runs)
        and isinstance(runs_dir, str)
    ):
        raise ManifestError(
            f"{path}: not a job manifest (expected 'runs', a list of run ids, and 'runs_dir'); "
            "delete it to rerun its job"
        )
    return runs, Path(os.path.normpath(path.parent / runs_dir))
