"""Datasets on disk: safetensors tensors plus a JSON sidecar with the spec, the ground truth and
the tensors file's SHA-256, checked before every use."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from lorasweep.io import load_tensors, read_json, save_tensors, sha256_file, write_json
from lorasweep.logs import OneLineError
from lorasweep.options import DEEP_KINDS
from lorasweep.tasks.spec import DatasetSpec

if TYPE_CHECKING:
    from lorasweep.tasks.synthetic import Dataset

FORMAT_VERSION = 1


def save(dataset: Dataset, tensors_path: str | Path, meta_path: str | Path) -> None:
    """Write the tensors (safetensors) and then a JSON sidecar with the spec, the ground truth
    and the tensors file's SHA-256, which :func:`load` checks."""
    from lorasweep.tasks.synthetic import ground_truth

    spec = dataset.spec
    save_tensors(tensors_path, dataset.tensors, metadata={"format_version": FORMAT_VERSION})
    write_json(
        meta_path,
        {
            "format_version": FORMAT_VERSION,
            "spec": spec.as_dict(),
            "sha256": sha256_file(tensors_path),
            "ground_truth": asdict(ground_truth(dataset)),
            "shapes": {k: list(v.shape) for k, v in dataset.tensors.items()},
        },
    )


class DatasetFileError(OneLineError, RuntimeError):
    """A dataset file is missing, truncated, corrupted, or does not match its sidecar."""


def verify(tensors_path: str | Path, meta_path: str | Path) -> dict:
    """Check a saved dataset against the SHA-256 in its sidecar; return the sidecar."""
    tensors_path, meta_path = Path(tensors_path), Path(meta_path)
    try:
        meta = read_json(meta_path)
    except (OSError, ValueError) as err:
        raise DatasetFileError(
            f"{meta_path}: unreadable dataset metadata ({err}); delete it and "
            f"{tensors_path.name} to regenerate them"
        ) from err
    actual = sha256_file(tensors_path)
    if actual != meta.get("sha256"):
        raise DatasetFileError(
            f"{tensors_path}: checksum mismatch (expected {meta.get('sha256')}, got {actual}): "
            f"the file is truncated or corrupted; delete it and {meta_path.name} to regenerate"
        )
    return meta


def verify_existing(pairs) -> None:
    """Verify every (tensors, metadata) pair whose two files both exist (pre-flight check)."""
    for tensors_path, meta_path in pairs:
        if Path(tensors_path).exists() and Path(meta_path).exists():
            verify(tensors_path, meta_path)


def spec_mismatch(meta_path: str | Path, entry: dict) -> str | None:
    """How the spec recorded in an existing sidecar differs from the config's dataset ``entry``
    (the first three keys that differ); None when they agree or there is no sidecar."""
    try:
        recorded = read_json(meta_path).get("spec")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError):
        return "its sidecar is unreadable"
    wanted = json.loads(json.dumps(DatasetSpec.from_config(entry).as_dict()))
    recorded = recorded if isinstance(recorded, dict) else {}
    changed = sorted(k for k in {*wanted, *recorded} if recorded.get(k) != wanted.get(k))
    if not changed:
        return None
    shown = ", ".join(f"{k} {recorded.get(k)!r} → {wanted.get(k)!r}" for k in changed[:3])
    return f"it was generated for another spec ({shown})"


def load(tensors_path: str | Path, meta_path: str | Path) -> Dataset:
    """Load a dataset written by :func:`save`, verifying its checksum first."""
    return read_verified(tensors_path, verify(tensors_path, meta_path))


def load_named(names, tensors_paths, meta_paths) -> dict[str, Dataset]:
    """Each named dataset, loaded and verified (:func:`load`), by name."""
    return {
        name: load(tensors, meta)
        for name, tensors, meta in zip(names, tensors_paths, meta_paths, strict=True)
    }


def read_verified(tensors_path: str | Path, meta: dict) -> Dataset:
    """Read the tensors of a dataset whose sidecar ``meta`` :func:`verify` has just returned."""
    try:
        tensors = load_tensors(tensors_path)
    except Exception as err:
        raise DatasetFileError(f"{tensors_path}: cannot be loaded ({err})") from err
    from lorasweep.tasks.synthetic import Dataset

    return Dataset(DatasetSpec.from_config(meta["spec"]), tensors)


def ground_truth_of(meta: dict):
    """The :class:`GroundTruth` (or, for the deep kinds,
    :class:`lorasweep.tasks.deep.DeepGroundTruth`) recorded in a dataset's sidecar."""
    truth = meta["ground_truth"]
    if meta["spec"]["kind"] in DEEP_KINDS:
        from lorasweep.tasks.deep import DeepGroundTruth

        return DeepGroundTruth.from_json(truth)
    from lorasweep.tasks.synthetic import GroundTruth

    return GroundTruth(**{**truth, "singular_values": tuple(truth["singular_values"])})
