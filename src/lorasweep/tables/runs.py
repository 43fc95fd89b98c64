"""Gather the per-run files of training jobs into four tables.

- ``runs.csv``: one row per run (parameters, counts, losses, theory, status; the test loss
  and, for ``lowrank``, the exact population risk of the final weights). Deterministic.
- ``epochs.csv``: long format, one row per run and epoch. Deterministic.
- ``timings.csv``: wall-clock seconds per run; the only table that changes between reruns.
- ``provenance.csv``: one row per software/device environment, with the number of its runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from lorasweep.io import read_json
from lorasweep.jobs.integrity import ManifestError, integrity_problem, read_manifest
from lorasweep.logs import OneLineError
from lorasweep.models import registry

MODEL_COLUMNS = ["shifted", "n_layers", "d_model", "n_heads", "seq_len", "d_ff"]
"""The deep kinds' dataset keys, empty for the single-layer kinds."""
RUN_COLUMNS = [
    "run_id", "dataset", "method", "rank", "alpha", "scaling", "init", "lr", "seed",
    "trainable_params", "frozen_params", "total_params",
    "final_train_loss", "final_val_loss", "best_val_loss", "status",
    "lr_ratio", "bias", "dropout", "epochs", "batch_size", "device", "device_type",
    "diverged_epoch", "adapter_params", "train_state_bytes", "adapter_bytes",
    "initial_val_loss", "optimal_val_loss", "noise_floor", "gap_to_optimal",
    "dataset_kind", "in_features", "out_features", "task_rank", "noise_std",
    "cached_base", "final_source_loss", "forgetting",
    *MODEL_COLUMNS, "targets", "adapted_modules", "adapted_types",
    "final_test_loss", "population_loss", "task_seed",
]  # fmt: skip
LORA_ONLY = ["rank", "alpha", "scaling", "init", "lr_ratio", "dropout", "targets"]
SORT_KEYS = ["dataset", "method", "targets", "rank", "alpha", "scaling", "init", "lr", "lr_ratio",
             "task_seed", "seed", "run_id"]  # fmt: skip
INTEGER_COLUMNS = ["rank", "seed", "task_seed", "epochs", "batch_size", "diverged_epoch",
                   "task_rank", *MODEL_COLUMNS[1:], "adapted_modules"]  # fmt: skip


class IncompleteRunError(OneLineError, RuntimeError):
    """A job manifest is missing or unreadable, or names a run folder that is missing or fails
    its checksums (:func:`lorasweep.jobs.integrity.integrity_problem`). One line."""


def iter_run_dirs(manifests: Iterable[str | Path]) -> Iterable[tuple[str, Path]]:
    """(job id, run folder) for every run listed in each job manifest (``jobs/<job>.json``),
    each folder checked against its checksums first."""
    for manifest in map(Path, manifests):
        try:
            run_ids, runs_dir = read_manifest(manifest)
        except FileNotFoundError:
            raise IncompleteRunError(f"{manifest}: missing, the job did not finish") from None
        except ManifestError as err:
            raise IncompleteRunError(str(err)) from None
        for run_id in run_ids:
            run_dir = runs_dir / run_id
            problem = integrity_problem(run_dir)
            if problem:
                raise IncompleteRunError(
                    f"{run_dir}: {problem}; run the workflow again, which retrains such runs"
                )
            yield manifest.stem, run_dir


PROVENANCE_COLUMNS = [
    "python", "torch", "numpy", "pandas", "snakemake", "safetensors", "lorasweep",
    "git_commit", "device_type", "device_name", "torch_threads", "platform",
]  # fmt: skip


def collect(
    manifests: Iterable[str | Path],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Build (runs, epochs, timings, provenance) from the job manifests and run folders written
    by :func:`lorasweep.jobs.run_job`. ``provenance`` has one row per distinct environment, with
    the number of runs that used it."""
    run_rows, epoch_frames, timing_rows, environments = [], [], [], []
    for job_id, run_dir in iter_run_dirs(manifests):
        metrics = read_json(run_dir / "metrics.json")
        provenance = read_json(run_dir / "provenance.json")
        environments.append(_environment(provenance))
        run_rows.append(_run_row(metrics, provenance["dataset"]["spec"]))
        epochs = pd.read_csv(run_dir / "epochs.csv")
        epochs.insert(0, "run_id", metrics["run_id"])
        epoch_frames.append(epochs)
        steps = _steps_per_epoch(metrics, provenance["dataset"]["spec"])
        timing_rows.append(_timing_row(run_dir, metrics["run_id"], job_id, steps))
    if not run_rows:
        raise IncompleteRunError("no runs found")
    runs = _runs_table(run_rows)
    order = {run_id: i for i, run_id in enumerate(runs["run_id"])}
    epochs = pd.concat(epoch_frames, ignore_index=True)
    if "source_loss" not in epochs:
        epochs["source_loss"] = math.nan
    epochs = epochs.sort_values(
        ["run_id", "epoch"], key=lambda s: s.map(order) if s.name == "run_id" else s
    ).reset_index(drop=True)
    timings = pd.DataFrame(timing_rows)
    timings = timings.sort_values("run_id", key=lambda s: s.map(order)).reset_index(drop=True)
    return runs, epochs, timings, _provenance_table(environments)


def _environment(provenance: dict) -> dict:
    """The software, commit and device a run used."""
    return {
        **{k: v for k, v in provenance["versions"].items()},
        "git_commit": provenance.get("git_commit"),
        "device_type": provenance["device"]["type"],
        "device_name": provenance["device"]["name"],
        "torch_threads": provenance.get("torch_threads"),
        "platform": provenance.get("platform"),
    }


def _run_row(metrics: dict, dataset: dict) -> dict:
    """A run's metrics with the shape and kind of its dataset (and a deep model's
    architecture)."""
    return {
        **metrics,
        "task_seed": metrics.get("task_seed", 0),
        "dataset_kind": dataset["kind"],
        "in_features": dataset["in_features"],
        "out_features": dataset["out_features"],
        "task_rank": dataset["task_rank"] if dataset["kind"] != "noise" else None,
        "noise_std": dataset["noise_std"],
        **{key: dataset.get(key) for key in MODEL_COLUMNS},
    }


def _steps_per_epoch(metrics: dict, dataset: dict) -> int:
    n_train = dataset["n_train"]
    return math.ceil(n_train / min(metrics.get("batch_size") or n_train, n_train))


def _timing_row(run_dir: Path, run_id: str, job_id: str, steps_per_epoch: int) -> dict:
    """A run's wall-clock seconds; ``mean_step_seconds`` is an epoch's (its steps and its
    held-out losses) over its number of optimizer steps."""
    seconds = read_json(run_dir / "timing.json")["epoch_seconds"]
    mean = sum(seconds) / len(seconds) if seconds else math.nan
    return {
        "run_id": run_id,
        "job_id": job_id,
        "epochs_timed": len(seconds),
        "mean_epoch_seconds": mean,
        "total_train_seconds": sum(seconds),
        "mean_step_seconds": mean / steps_per_epoch,
    }


def _runs_table(rows: list[dict]) -> pd.DataFrame:
    """``runs.csv``: LoRA-only columns empty for full FT, integer columns as integers, sorted."""
    runs = pd.DataFrame(rows).reindex(columns=RUN_COLUMNS)
    full = runs["method"].map(registry.is_full).astype(bool)
    runs.loc[full, LORA_ONLY] = None
    runs = _with_integer_columns(runs)
    return runs.sort_values(SORT_KEYS, na_position="first", kind="stable").reset_index(drop=True)


def _provenance_table(environments: list[dict]) -> pd.DataFrame:
    """One row per distinct environment with the number of runs that used it."""
    env = pd.DataFrame(environments).reindex(columns=PROVENANCE_COLUMNS).astype("string")
    return (
        env.fillna("")
        .value_counts(sort=False)
        .rename("runs")
        .reset_index()
        .sort_values(PROVENANCE_COLUMNS)
    )


def read_runs(path: str | Path) -> pd.DataFrame:
    return _with_integer_columns(pd.read_csv(path))


def _with_integer_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with :data:`INTEGER_COLUMNS` as nullable integers (empty for full FT)."""
    for column in INTEGER_COLUMNS:
        runs[column] = pd.array(runs[column], dtype="Int64")
    return runs
