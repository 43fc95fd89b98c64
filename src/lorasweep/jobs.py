"""Train a group of runs in one process and write each run's files.

Per run, under ``<job dir>/<run_id>/`` (each file written atomically, ``metrics.json`` last, so a
run folder with ``metrics.json`` is complete):

- ``weights.safetensors``: the trained adapter (``lora_A``, ``lora_B``, and ``bias`` if it
  trained) or, for full fine-tuning, the whole layer (``weight``, ``bias``);
- ``epochs.csv``: per-epoch train and validation MSE and mean gradient norms;
- ``timing.json``: wall-clock seconds per epoch (kept apart: it differs between reruns);
- ``provenance.json``: the run's resolved parameters, dataset spec and checksum, versions, device;
- ``metrics.json``: parameter counts, training-state bytes, adapter size, final and best losses,
  the theoretical optimum, and the status.

The job writes ``job.json`` (the list of its runs) after all runs, as its completion marker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from lorasweep import datasets as ds
from lorasweep.io import read_json, save_tensors, write_csv, write_json
from lorasweep.plan import RunSpec
from lorasweep.provenance import environment
from lorasweep.training import RunResult, resolve_device, train_run

EPOCH_COLUMNS = ["epoch", "train_loss", "val_loss", "grad_norm_A", "grad_norm_B", "grad_norm_W"]


def configure_torch(device: torch.device, threads: int) -> None:
    """Fix thread count, and ask for deterministic kernels where PyTorch offers them."""
    torch.set_num_threads(max(1, threads))
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cuda.matmul.allow_tf32 = False


def write_run(run_dir: Path, result: RunResult, truth: ds.GroundTruth, provenance: Mapping) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = result.spec
    weights = run_dir / "weights.safetensors"
    metadata = {"run_id": spec.run_id, "method": spec.method}
    if spec.method == "lora":
        metadata |= {
            "rank": spec.rank,
            "alpha": spec.alpha,
            "scaling_rule": spec.scaling,
            "scaling": result.scaling,
            "init": spec.init,
        }
    save_tensors(weights, result.tensors, metadata=metadata)
    frame = pd.DataFrame(result.epochs).reindex(columns=EPOCH_COLUMNS)
    write_csv(run_dir / "epochs.csv", frame)
    write_json(run_dir / "timing.json", {"epoch_seconds": result.epoch_seconds})
    write_json(run_dir / "provenance.json", {**provenance, "run": spec.as_dict()})
    write_json(
        run_dir / "metrics.json",
        {**result.summary(truth), "adapter_bytes": weights.stat().st_size},
    )


def run_job(
    runs: Sequence[Mapping],
    dataset_files: Mapping[str, tuple[str | Path, str | Path]],
    out_dir: str | Path,
    threads: int = 1,
    progress: bool = True,
) -> list[str]:
    """Train ``runs`` (dicts as produced by :meth:`RunSpec.as_dict`) one after another.

    ``dataset_files`` maps a dataset name to its (tensors, metadata) paths. Returns the run ids.
    """
    specs = [RunSpec.from_dict(dict(run)) for run in runs]
    requested = {spec.device for spec in specs}
    if len(requested) != 1:
        raise ValueError(f"one job must use one device setting, got {sorted(requested)}")
    device = resolve_device(requested.pop())
    configure_torch(device, threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    loaded: dict[str, tuple[ds.Dataset, ds.GroundTruth, dict]] = {}
    for name in sorted({spec.dataset for spec in specs}):
        tensors_path, meta_path = dataset_files[name]
        dataset = ds.load(tensors_path, meta_path)
        meta = read_json(meta_path)
        loaded[name] = (dataset, ds.load_ground_truth(meta_path), meta)
        dataset.tensors = {k: v.to(device) for k, v in dataset.tensors.items()}

    env = None
    for spec in tqdm(specs, desc=out_dir.name, unit="run", disable=not progress, mininterval=5):
        dataset, truth, meta = loaded[spec.dataset]
        result = train_run(spec, dataset, device)
        if env is None:
            env = environment(result.device, result.device_name, torch.get_num_threads())
        provenance = {
            **env,
            "dataset": {"spec": meta["spec"], "sha256": meta["sha256"]},
        }
        write_run(out_dir / spec.run_id, result, truth, provenance)
        if result.status != "ok":
            tqdm.write(f"{spec.run_id}: {result.status} at epoch {result.diverged_epoch}")
    run_ids = [spec.run_id for spec in specs]
    write_json(out_dir / "job.json", {"runs": run_ids})
    return run_ids
