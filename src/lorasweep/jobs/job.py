"""Train a group of runs in one process, each into its own folder, reusing finished ones.

A job verifies its datasets, skips every run whose folder holds a result with the same reuse
key (:mod:`lorasweep.jobs.reuse`), trains the rest one after another (:mod:`lorasweep.training`)
and writes each into its folder (:mod:`lorasweep.jobs.run_folder`). Its only declared output is
its manifest, ``jobs/<job>.json``: the run ids, and the runs folder relative to it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from lorasweep.io import write_json
from lorasweep.jobs.reuse import NOT_FINISHED, reuse_key, reuse_refusal
from lorasweep.jobs.run_folder import write_run
from lorasweep.planning.runs import RunSpec
from lorasweep.provenance import environment
from lorasweep.tasks import storage
from lorasweep.tasks.synthetic import Dataset, GroundTruth
from lorasweep.training.devices import resolve_device
from lorasweep.training.exact import cache_base_residuals
from lorasweep.training.loop import train_run


def configure_torch(device: torch.device, threads: int) -> None:
    """Fix thread count, and ask for deterministic kernels where PyTorch offers them."""
    torch.set_num_threads(max(1, threads))
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cuda.matmul.allow_tf32 = False


def reusable(run_dir: Path, key: str) -> bool:
    """Whether the finished run in ``run_dir`` can be reused; if a folder is there but cannot,
    say why in the job's log."""
    refusal = reuse_refusal(run_dir, key)
    if refusal not in (None, NOT_FINISHED):
        print(f"{run_dir.name}: retraining: {refusal}")
    return refusal is None


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

    metas = {name: storage.verify(*dataset_files[name]) for name in {s.dataset for s in specs}}
    keys = {s.run_id: reuse_key(s, metas[s.dataset]["sha256"], device, threads) for s in specs}
    todo = [s for s in specs if not (reuse and reusable(runs_root / s.run_id, keys[s.run_id]))]

    loaded: dict[str, tuple[Dataset, GroundTruth]] = {}
    env = None
    for spec in tqdm(
        todo, desc=Path(manifest).stem, unit="run", disable=not progress, mininterval=5
    ):
        if spec.dataset not in loaded:
            meta = metas[spec.dataset]
            dataset = storage.read_verified(dataset_files[spec.dataset][0], meta)
            truth = storage.ground_truth_of(meta)
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
