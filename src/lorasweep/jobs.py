"""Train a group of runs in one process, each into its own folder, reusing finished ones.

Per run, ``<runs>/<run_id>/`` holds (the folder is written under a temporary name and renamed
into place when complete, so a run folder that exists is a finished run):

- ``weights.safetensors``: the trained adapter (``lora_A``, ``lora_B``, and ``bias`` if it
  trained) or, for full fine-tuning, the whole layer (``weight``, ``bias``);
- ``epochs.csv``: per-epoch train and validation MSE and mean gradient norms;
- ``timing.json``: wall-clock seconds per epoch (kept apart: it differs between reruns);
- ``provenance.json``: the run's resolved parameters, dataset spec and checksum, versions,
  device, and the reuse key;
- ``metrics.json``: parameter counts, training-state bytes, adapter size, final and best losses,
  the theoretical optimum, and the status.

A run is reused instead of retrained when its folder's reuse key matches: a hash of the run's
parameters, the dataset's SHA-256, the source of the modules that affect training, the torch
version, the thread count and the device type. The job then writes its manifest
(``jobs/<job>.json``: the run ids, and the runs folder relative to it) as its only output.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from lorasweep import datasets as ds
from lorasweep.io import read_json, save_tensors, write_csv, write_json
from lorasweep.plan import RunSpec
from lorasweep.provenance import environment
from lorasweep.training import RunResult, cache_base_residuals, resolve_device, train_run

EPOCH_COLUMNS = ["epoch", "train_loss", "val_loss", "grad_norm_A", "grad_norm_B", "grad_norm_W"]
TRAINING_MODULES = (
    "accounting.py", "datasets.py", "io.py", "jobs.py", "lora.py", "plan.py", "seeding.py",
    "training.py",
)  # fmt: skip


@functools.cache
def code_fingerprint() -> str:
    """SHA-256 of the source of every module that can change a run's result (read once per
    process)."""
    digest = hashlib.sha256()
    package = Path(__file__).parent
    for name in TRAINING_MODULES:
        digest.update(name.encode() + b"\0" + (package / name).read_bytes())
    return digest.hexdigest()


def reuse_key(spec: RunSpec, dataset_sha256: str, device: torch.device, threads: int) -> str:
    parts = {
        "run": spec.as_dict(),
        "dataset_sha256": dataset_sha256,
        "code": code_fingerprint(),
        "torch": torch.__version__,
        "threads": threads,
        "device": device.type,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def finished_with_key(run_dir: Path, key: str) -> bool:
    try:
        provenance = read_json(run_dir / "provenance.json")
    except (OSError, ValueError):
        return False
    return provenance.get("reuse_key") == key and (run_dir / "metrics.json").is_file()


def configure_torch(device: torch.device, threads: int) -> None:
    """Fix thread count, and ask for deterministic kernels where PyTorch offers them."""
    torch.set_num_threads(max(1, threads))
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cuda.matmul.allow_tf32 = False


def write_run(run_dir: Path, result: RunResult, truth: ds.GroundTruth, provenance: Mapping) -> None:
    """Write a run's files into a temporary sibling folder, then rename it onto ``run_dir``."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{run_dir.name}.", suffix=".tmp"))
    try:
        spec = result.spec
        weights = tmp / "weights.safetensors"
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
        write_csv(tmp / "epochs.csv", frame)
        write_json(tmp / "timing.json", {"epoch_seconds": result.epoch_seconds})
        write_json(tmp / "provenance.json", {**provenance, "run": spec.as_dict()})
        write_json(
            tmp / "metrics.json",
            {**result.summary(truth), "adapter_bytes": weights.stat().st_size},
        )
        os.chmod(tmp, 0o755)
        if run_dir.exists():
            stale = run_dir.with_name(f".{run_dir.name}.stale")
            shutil.rmtree(stale, ignore_errors=True)
            os.replace(run_dir, stale)
            os.replace(tmp, run_dir)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.replace(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_job(
    runs: Sequence[Mapping],
    dataset_files: Mapping[str, tuple[str | Path, str | Path]],
    runs_root: str | Path,
    manifest: str | Path,
    threads: int = 1,
    reuse: bool = True,
    progress: bool = True,
) -> dict[str, int]:
    """Train ``runs`` (dicts from :meth:`RunSpec.as_dict`) one after another into
    ``runs_root/<run_id>/``, reusing finished runs when ``reuse``; then write ``manifest``.

    ``dataset_files`` maps a dataset name to its (tensors, metadata) paths. Returns the number
    of runs trained and reused.
    """
    specs = [RunSpec.from_dict(dict(run)) for run in runs]
    requested = {spec.device for spec in specs}
    if len(requested) != 1:
        raise ValueError(f"one job must use one device setting, got {sorted(requested)}")
    device = resolve_device(requested.pop())
    configure_torch(device, threads)
    runs_root = Path(runs_root)

    metas = {name: ds.verify(*dataset_files[name]) for name in {s.dataset for s in specs}}
    keys = {s.run_id: reuse_key(s, metas[s.dataset]["sha256"], device, threads) for s in specs}
    todo = [
        s for s in specs if not (reuse and finished_with_key(runs_root / s.run_id, keys[s.run_id]))
    ]

    loaded: dict[str, tuple[ds.Dataset, ds.GroundTruth]] = {}
    env = None
    for spec in tqdm(
        todo, desc=Path(manifest).stem, unit="run", disable=not progress, mininterval=5
    ):
        if spec.dataset not in loaded:
            meta = metas[spec.dataset]
            dataset = ds.read_verified(dataset_files[spec.dataset][0], meta)
            truth = ds.ground_truth_of(meta)
            dataset.tensors = {k: v.to(device) for k, v in dataset.tensors.items()}
            cache_base_residuals(dataset, [s for s in todo if s.dataset == spec.dataset])
            loaded[spec.dataset] = (dataset, truth)
        dataset, truth = loaded[spec.dataset]
        result = train_run(spec, dataset, device)
        if env is None:
            env = environment(result.device, result.device_name, torch.get_num_threads())
        meta = metas[spec.dataset]
        provenance = {
            **env,
            "dataset": {"spec": meta["spec"], "sha256": meta["sha256"]},
            "reuse_key": keys[spec.run_id],
        }
        write_run(runs_root / spec.run_id, result, truth, provenance)
        if result.status != "ok":
            tqdm.write(f"{spec.run_id}: {result.status} at epoch {result.diverged_epoch}")
    counts = {"trained": len(todo), "reused": len(specs) - len(todo)}
    print(f"{Path(manifest).stem}: trained {counts['trained']}, reused {counts['reused']}")
    relative = os.path.relpath(runs_root, Path(manifest).parent)
    write_json(manifest, {"runs": [s.run_id for s in specs], "runs_dir": relative})
    return counts
