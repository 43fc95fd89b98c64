"""When a finished run folder may be reused instead of retraining: its reuse key matches and
its files match their checksums.

The key hashes the run's parameters, the dataset's SHA-256, the source of exactly the code that
can change a run's numbers (:data:`TRAINING_CODE`), the torch version, the thread count, the
device type and the engine that trained it (``batched`` or ``single``: the two round floats in
different orders). Which other runs shared its batch is left out: it changes nothing
(:mod:`lorasweep.training.batched`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import torch

from lorasweep.io import read_json
from lorasweep.jobs.integrity import integrity_problem
from lorasweep.planning.runs import RunSpec

PACKAGE = Path(__file__).resolve().parents[1]
TRAINING_CODE = ("tasks", "models", "training", "jobs", "seeding.py", "io.py")
"""Paths under the package whose source can change a run's numbers or its stored files.
Planning, tables, analysis, figures and the report are left out: editing them never retrains."""


def training_sources() -> list[Path]:
    """Every source file of :data:`TRAINING_CODE`, in a fixed order."""
    files = []
    for name in TRAINING_CODE:
        path = PACKAGE / name
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


@functools.cache
def code_fingerprint() -> str:
    """SHA-256 of the source of every module that can change a run's result (read once per
    process)."""
    digest = hashlib.sha256()
    for path in training_sources():
        name = path.relative_to(PACKAGE).as_posix()
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def reuse_key(
    spec: RunSpec,
    dataset_sha256: str,
    device: torch.device,
    threads: int,
    engine: str = "batched",
) -> str:
    parts = {
        "engine": engine,
        "run": spec.as_dict(),
        "dataset_sha256": dataset_sha256,
        "code": code_fingerprint(),
        "torch": torch.__version__,
        "threads": threads,
        "device": device.type,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


NOT_FINISHED = "no finished run"


def reuse_refusal(run_dir: Path, key: str) -> str | None:
    """Why the folder ``run_dir`` cannot be reused for a run of reuse key ``key``, or None when
    it can: its ``provenance.json`` records ``key`` and every file matches its checksum
    (:func:`lorasweep.jobs.integrity.integrity_problem`)."""
    if not run_dir.exists():
        return NOT_FINISHED
    try:
        provenance = read_json(run_dir / "provenance.json")
    except (OSError, ValueError):
        return "provenance.json missing or unreadable"
    if not isinstance(provenance, dict) or provenance.get("reuse_key") != key:
        return "settings, dataset, training code, torch, threads or device changed"
    return integrity_problem(run_dir)
