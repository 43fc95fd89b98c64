"""Train a group of runs in one process, each into its own folder, reusing finished ones.

A job verifies its datasets, skips every run whose folder holds a result with the same reuse
key (:mod:`lorasweep.jobs.reuse`), groups the rest into cohorts
(:func:`lorasweep.planning.cohorts.plan_cohorts`; with ``train.engine: single`` a cohort of one
per run), trains each cohort with the batched engine
(:func:`lorasweep.training.batched.train_cohort`; a method trained through PEFT, one run at a
time with :func:`lorasweep.training.peft_trainer.train_peft_run`), and writes each run into its
folder (:mod:`lorasweep.jobs.run_folder`) as soon as its cohort is done. Its log counts the runs and
cohorts done, with an ETA, and so does the console every :data:`CONSOLE_INTERVAL_S` and at the
end. Ctrl-C keeps the runs finished so far. Its only declared output is its manifest,
``jobs/<job>.json``: the run ids, and the runs folder relative to it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

import torch

from lorasweep.io import write_json
from lorasweep.jobs.reuse import NOT_FINISHED, key_of, reuse_parts, reuse_refusal
from lorasweep.jobs.run_folder import write_run
from lorasweep.planning.cohorts import Progress, effective_engine, plan_cohorts
from lorasweep.planning.cpus import available_cpus
from lorasweep.planning.resources import cohort_cost
from lorasweep.planning.runs import RunSpec
from lorasweep.provenance import environment
from lorasweep.tasks import storage
from lorasweep.tasks.synthetic import Dataset, GroundTruth
from lorasweep.training.batched import train_cohort
from lorasweep.training.devices import resolve_device
from lorasweep.training.exact import cache_base_residuals
from lorasweep.training.loop import RunResult
from lorasweep.training.peft_trainer import train_peft_run

PROGRESS_INTERVAL_S = 5.0
CONSOLE_INTERVAL_S = 30.0


def configure_torch(device: torch.device, threads: int) -> None:
    """Fix thread count, and ask for deterministic kernels where PyTorch offers them."""
    torch.set_num_threads(max(1, threads))
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cuda.matmul.allow_tf32 = False


def reusable(run_dir: Path, parts: dict) -> bool:
    """Whether the finished run in ``run_dir`` can be reused for a run of reuse-key ``parts``;
    if a folder is there but cannot, say why in the job's log."""
    refusal = reuse_refusal(run_dir, parts)
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
    engine: str = "batched",
    memory_budget_mib: float | None = None,
    console: TextIO | None = None,
) -> dict[str, int]:
    """Train ``runs`` (dicts from :meth:`RunSpec.as_dict`) into ``runs_root/<run_id>/``, cohort
    by cohort with ``engine`` (``batched`` or ``single``), reusing finished runs when ``reuse``;
    then write ``manifest``.

    ``dataset_files`` maps a replicate name (:attr:`RunSpec.data`; a dataset's name for task
    seed 0) to its (tensors, metadata) paths;
    ``memory_budget_mib`` bounds what one wave of a cohort allocates (None: the device's default);
    ``threads`` is capped at the CPUs this process may use. Progress lines also go to
    ``console`` (every :data:`CONSOLE_INTERVAL_S`, and the total at the end). Returns the number
    of runs trained and reused.
    """
    specs = [RunSpec.from_dict(dict(run)) for run in runs]
    requested = {spec.device for spec in specs}
    if len(requested) != 1:
        raise ValueError(f"one job must use one device setting, got {sorted(requested)}")
    device = resolve_device(requested.pop())
    threads = min(threads, available_cpus())
    configure_torch(device, threads)
    runs_root, job = Path(runs_root), Path(manifest).stem

    metas = {name: storage.verify(*dataset_files[name]) for name in {s.data for s in specs}}
    dataset_specs = {s.dataset: metas[s.data]["spec"] for s in specs}
    engines = {s.run_id: effective_engine(s, engine, dataset_specs[s.dataset]) for s in specs}
    parts = {
        s.run_id: reuse_parts(s, metas[s.data]["sha256"], device, threads, engines[s.run_id])
        for s in specs
    }
    todo = [s for s in specs if not (reuse and reusable(runs_root / s.run_id, parts[s.run_id]))]
    cohorts = plan_cohorts(todo, engine, dataset_specs)
    costs = [cohort_cost(c, dataset_specs[c[0].dataset]) for c in cohorts]
    loaded: dict[str, tuple[Dataset, GroundTruth]] = {}
    env = None
    if console is not None and todo:
        print(f"{job}: training {len(todo)} runs in {len(cohorts)} cohorts, reusing "
              f"{len(specs) - len(todo)}", file=console, flush=True)  # fmt: skip
    start = last_report = last_console = time.perf_counter()
    done = 0
    try:
        for index, cohort in enumerate(cohorts):
            if cohort[0].data not in loaded:
                loaded[cohort[0].data] = _load(cohort[0].data, todo, metas, dataset_files, device)
            dataset, truth = loaded[cohort[0].data]
            if engines[cohort[0].run_id] == "peft":
                results = [train_peft_run(cohort[0], dataset, device)]
            else:
                results = train_cohort(cohort, dataset, device, memory_budget_mib)
            for result in results:
                if env is None:
                    env = environment(result.device, result.device_name, torch.get_num_threads())
                _write(result, runs_root, truth, metas, parts, env, engines[result.spec.run_id])
            done += len(cohort)
            now = time.perf_counter()
            last = index == len(cohorts) - 1
            to_log = progress and (now - last_report >= PROGRESS_INTERVAL_S or last)
            to_console = console is not None and now - last_console >= CONSOLE_INTERVAL_S
            if to_log or (to_console and not last):
                cost_done = sum(costs[: index + 1])
                line = Progress(done, len(todo), index + 1, len(cohorts), cost_done,
                                sum(costs), now - start).line(job)  # fmt: skip
            if to_log:
                print(line, flush=True)
                last_report = now
            if to_console and not last:
                print(line, file=console, flush=True)
                last_console = now
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"{done} of {len(todo)} runs trained and kept") from None
    counts = {"trained": len(todo), "reused": len(specs) - len(todo)}
    summary = f"{job}: trained {counts['trained']}, reused {counts['reused']}"
    print(summary)
    if console is not None:
        print(f"{summary} in {time.perf_counter() - start:.0f} s", file=console, flush=True)
    relative = os.path.relpath(runs_root, Path(manifest).parent)
    write_json(manifest, {"runs": [s.run_id for s in specs], "runs_dir": relative})
    return counts


def _load(name, todo, metas, dataset_files, device) -> tuple[Dataset, GroundTruth]:
    """A dataset on ``device``, with the base residuals cached for this job's runs of it."""
    meta = metas[name]
    dataset = storage.read_verified(dataset_files[name][0], meta)
    truth = storage.ground_truth_of(meta)
    dataset.tensors = {k: v.to(device) for k, v in dataset.tensors.items()}
    cache_base_residuals(dataset, [s for s in todo if s.data == name])
    return dataset, truth


def _write(result: RunResult, runs_root, truth, metas, parts, env, engine: str) -> None:
    spec = result.spec
    meta = metas[spec.data]
    provenance = {
        **env,
        "dataset": {"spec": meta["spec"], "sha256": meta["sha256"]},
        "engine": engine,
        "reuse_key": key_of(parts[spec.run_id]),
        "reuse": {k: v for k, v in parts[spec.run_id].items() if k != "run"},
    }
    write_run(runs_root / spec.run_id, result, truth, provenance)
    if result.status != "ok":
        print(f"{spec.run_id}: {result.status} at epoch {result.diverged_epoch}", flush=True)
