"""When a finished run folder may be reused instead of retraining: its reuse key matches and
its files match their checksums.

The key hashes the run's parameters, the dataset's SHA-256, the code that can change a run's
numbers (:func:`code_fingerprint`: the training code and every module it imports, docstrings and
comments left out), the torch version, the thread count, the
device type and the engine setting that trained it (``batched`` or ``single``, cohorts of one of
the same engine; kept in the key so that switching it is visible in the log). Which other runs
shared its cohort is left out: it changes nothing (:mod:`lorasweep.training.batched`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import torch

from lorasweep import sources
from lorasweep.io import read_json
from lorasweep.jobs.integrity import integrity_problem
from lorasweep.planning.runs import RunSpec

PACKAGE = Path(__file__).resolve().parents[1]
TRAINING_CODE = ("tasks", "models", "training", "jobs", "seeding.py", "io.py")
"""Paths under the package whose code trains a run or writes its folder. The fingerprint covers
them and every package module they import, wherever it lives (:func:`training_sources`)."""


def training_sources(package: Path = PACKAGE) -> list[Path]:
    """Every source file of :data:`TRAINING_CODE` and every package module they import,
    transitively, in a fixed order: planning's chunk sizes reach training this way."""
    roots = []
    for name in TRAINING_CODE:
        path = package / name
        roots.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return sources.closure(package, roots)


@functools.cache
def code_fingerprint(package: Path = PACKAGE) -> str:
    """SHA-256 of the code of every module that can change a run's result, without docstrings
    and comments (:func:`lorasweep.sources.digest`; read once per process)."""
    return sources.digest(package, training_sources(package))


def reuse_parts(
    spec: RunSpec,
    dataset_sha256: str,
    device: torch.device,
    threads: int,
    engine: str = "batched",
) -> dict:
    """What a run's reuse key hashes. The run's device *setting* is left out: the device it
    resolves to is what can change the numbers, so ``auto`` that resolves to the CPU reuses a
    ``cpu`` run."""
    run = {k: v for k, v in spec.as_dict().items() if k != "device"}
    return {
        "engine": engine,
        "run": run,
        "dataset_sha256": dataset_sha256,
        "code": code_fingerprint(),
        "torch": torch.__version__,
        "threads": threads,
        "device": device.type,
    }


def key_of(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def reuse_key(
    spec: RunSpec,
    dataset_sha256: str,
    device: torch.device,
    threads: int,
    engine: str = "batched",
) -> str:
    return key_of(reuse_parts(spec, dataset_sha256, device, threads, engine))


def recorded_parts(provenance: dict) -> dict:
    """The reuse-key parts a run folder's ``provenance.json`` records (:func:`reuse_parts`);
    a folder written before they were recorded gives what its other fields say, without
    ``code``."""
    recorded = dict(provenance.get("reuse") or {})
    if not recorded:
        recorded = {
            "engine": provenance.get("engine"),
            "dataset_sha256": (provenance.get("dataset") or {}).get("sha256"),
            "torch": (provenance.get("versions") or {}).get("torch"),
            "threads": provenance.get("torch_threads"),
            "device": (provenance.get("device") or {}).get("type"),
        }
    run = provenance.get("run") or {}
    recorded["run"] = {k: v for k, v in run.items() if k != "device"}
    return recorded


CHANGE_NAMES = {"engine": "engine", "torch": "torch", "threads": "threads", "device": "device"}


def what_changed(provenance: dict, parts: dict) -> str:
    """What differs between the reuse-key parts a run folder records and ``parts``, in words:
    ``changed: engine single → batched, device cuda → cpu``."""
    recorded = recorded_parts(provenance)
    changes = []
    run, wanted = recorded["run"], parts["run"]
    settings = sorted(k for k in {*run, *wanted} if run.get(k) != wanted.get(k))
    if settings:
        shown = ", ".join(f"{k} {run.get(k)!r} → {wanted.get(k)!r}" for k in settings[:3])
        changes.append(f"settings ({shown})")
    if recorded.get("dataset_sha256") != parts["dataset_sha256"]:
        changes.append("dataset (another SHA-256)")
    if "code" in recorded and recorded["code"] != parts["code"]:
        changes.append("training code")
    for key, name in CHANGE_NAMES.items():
        if recorded.get(key) != parts[key]:
            changes.append(f"{name} {recorded.get(key)} → {parts[key]}")
    if not changes:
        return "reuse key recorded by an older version (training code or its key changed)"
    return "changed: " + ", ".join(changes)


NOT_FINISHED = "no finished run"


def reuse_refusal(run_dir: Path, parts: dict) -> str | None:
    """Why the folder ``run_dir`` cannot be reused for a run whose reuse key hashes ``parts``
    (:func:`reuse_parts`), or None when it can: its ``provenance.json`` records that key and
    every file matches its checksum (:func:`lorasweep.jobs.integrity.integrity_problem`)."""
    if not run_dir.exists():
        return NOT_FINISHED
    try:
        provenance = read_json(run_dir / "provenance.json")
    except (OSError, ValueError):
        return "provenance.json missing or unreadable"
    if not isinstance(provenance, dict):
        return "provenance.json is not a mapping"
    if provenance.get("reuse_key") != key_of(parts):
        return what_changed(provenance, parts)
    return integrity_problem(run_dir)
