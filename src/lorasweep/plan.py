"""Expand a config into runs and group the runs into training jobs.

This module never imports torch, so Snakemake can build the DAG of a large grid quickly.

A *run* is one training of one model. Its id is derived only from its parameters, for example
``lowrank__lora_r4_a8_standard_kaiming_lr0.001_s0`` or ``lowrank__full_lr0.001_s0``.

A *job* is one Snakemake job (one process) that trains several runs in turn, so that the cost of
starting Python and importing torch (about 5 s here) is paid once per job rather than once per
run. Runs are dealt into jobs by estimated cost (see :func:`group_runs`). Each run still has its
own folder, ``results/runs/<run_id>/``, and a job reuses a run whose folder holds a result for
the same settings, data and code, so regrouping never retrains anything.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lorasweep.choices import FIGURES


def format_number(value: float | int) -> str:
    """Shortest exact text for a number: 8 → ``8``, 8.0 → ``8``, 0.001 → ``0.001``."""
    if isinstance(value, bool):
        raise TypeError("booleans are not numbers here")
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's result (except the data, named by ``dataset``)."""

    dataset: str
    method: str
    seed: int
    lr: float
    epochs: int
    batch_size: int | None
    bias: str
    device: str
    rank: int | None = None
    alpha: float | None = None
    scaling: str | None = None
    init: str | None = None
    lr_ratio: float = 1.0
    dropout: float = 0.0

    @property
    def run_id(self) -> str:
        if self.method == "full":
            return f"{self.dataset}__full_lr{format_number(self.lr)}_s{self.seed}"
        ratio = f"_lrB{format_number(self.lr_ratio)}" if self.lr_ratio != 1 else ""
        return (
            f"{self.dataset}__lora_r{self.rank}_a{format_number(self.alpha)}_{self.scaling}"
            f"_{self.init}_lr{format_number(self.lr)}{ratio}_s{self.seed}"
        )

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> RunSpec:
        return cls(**{k: v for k, v in data.items() if k != "run_id"})


@dataclass
class Plan:
    runs: list[RunSpec]
    jobs: dict[str, list[RunSpec]] = field(default_factory=dict)

    def job_datasets(self, job_id: str) -> list[str]:
        return sorted({run.dataset for run in self.jobs[job_id]})


GRID_AXES = ("rank", "alpha", "scaling", "init", "lr", "lr_ratio")


def grids(config: dict) -> list[dict]:
    """The main grid, then each of ``extra_grids`` with missing axes taken from the main grid."""
    main = {"lr_ratio": [1.0], **config["grid"]}
    blocks = [{**main, "datasets": None}]
    for extra in config.get("extra_grids", []):
        blocks.append({**main, "datasets": None, **extra})
    return blocks


def expand_runs(config: dict) -> list[RunSpec]:
    """The LoRA runs (datasets × seeds × rank × α × scaling × init × lr × lr_ratio, for the main
    grid and each extra grid, without repeats) followed by the full fine-tuning runs (datasets ×
    seeds × lr), in a fixed order."""
    train = config["train"]
    common = {
        "epochs": train["epochs"],
        "batch_size": train.get("batch_size"),
        "bias": train.get("bias", "none"),
        "device": train.get("device", "auto"),
    }
    runs: list[RunSpec] = []
    for dataset, grid in itertools.product(config["datasets"], grids(config)):
        if grid["datasets"] is not None and dataset["name"] not in grid["datasets"]:
            continue
        for seed in config["seeds"]:
            for rank, alpha, scaling, init, lr, lr_ratio in itertools.product(
                *(grid[axis] for axis in GRID_AXES)
            ):
                runs.append(
                    RunSpec(
                        dataset=dataset["name"],
                        method="lora",
                        seed=seed,
                        lr=lr,
                        rank=rank,
                        alpha=alpha,
                        scaling=scaling,
                        init=init,
                        lr_ratio=lr_ratio,
                        dropout=train.get("lora_dropout", 0.0),
                        **common,
                    )
                )
    full = config.get("full_finetune", {})
    if full.get("enabled", False):
        for dataset in config["datasets"]:
            for seed in config["seeds"]:
                for lr in full["lr"]:
                    runs.append(
                        RunSpec(dataset=dataset["name"], method="full", seed=seed, lr=lr, **common)
                    )
    return list(dict.fromkeys(runs))


def estimated_cost(run: RunSpec, dataset: dict) -> float:
    """Rough relative cost of a run: steps × (fixed per-step overhead + multiply-adds per step).

    LoRA runs train against the cached base product, so a step costs about 3·b·r·(d_in + d_out)
    multiply-adds; full fine-tuning about 3·b·d_in·d_out. The overhead term stands for the
    ~0.3 ms of Python and dispatch each step pays whatever its size.
    """
    n = dataset["n_train"]
    batch = min(run.batch_size or n, n)
    steps = run.epochs * math.ceil(n / batch)
    d_in, d_out = dataset["in_features"], dataset["out_features"]
    width = d_in * d_out if run.method == "full" else run.rank * (d_in + d_out)
    return steps * (3e5 + 3 * batch * width)


def group_runs(
    runs: list[RunSpec], datasets: dict[str, dict], runs_per_job: int, workers: int | None = None
) -> dict[str, list[RunSpec]]:
    """Deal the runs into jobs of about equal estimated cost (longest first, each to the least
    loaded job).

    There are ceil(n / runs_per_job) jobs, raised to a multiple of ``workers`` (the local core
    count) when given, so every core has the same amount of work. Grouping only decides which
    process trains a run: every run keeps its own folder, and a run already trained with the
    same settings, data and code is reused, not retrained, whatever job it falls in.
    """
    if runs_per_job < 1:
        raise ValueError(f"runs_per_job must be >= 1, got {runs_per_job}")
    n_jobs = math.ceil(len(runs) / runs_per_job)
    if workers and workers > 1:
        n_jobs = min(len(runs), math.ceil(max(n_jobs, workers) / workers) * workers)
    n_jobs = max(n_jobs, 1)
    loads = [(0.0, index) for index in range(n_jobs)]
    members: list[list[RunSpec]] = [[] for _ in range(n_jobs)]
    by_cost = sorted(runs, key=lambda r: -estimated_cost(r, datasets[r.dataset]))
    for run in by_cost:
        load, index = heapq.heappop(loads)
        members[index].append(run)
        heapq.heappush(loads, (load + estimated_cost(run, datasets[run.dataset]), index))
    order = {run.run_id: i for i, run in enumerate(runs)}
    width = len(str(n_jobs))
    return {
        f"part{index + 1:0{width}d}of{n_jobs}": sorted(group, key=lambda r: order[r.run_id])
        for index, group in enumerate(members)
        if group
    }


def build_plan(config: dict, workers: int | None = None) -> Plan:
    runs = expand_runs(config)
    duplicates = [rid for rid, n in Counter(r.run_id for r in runs).items() if n > 1]
    if duplicates:
        raise ValueError(f"grid produces duplicate runs: {', '.join(duplicates[:3])}")
    datasets = {d["name"]: d for d in config["datasets"]}
    jobs = group_runs(runs, datasets, config.get("runs_per_job", 256), workers)
    return Plan(runs=runs, jobs=jobs)


def visible_cuda_devices() -> int:
    """GPUs this process could use, found without importing torch: the NVIDIA driver's list,
    narrowed by CUDA_VISIBLE_DEVICES when it is set."""
    gpus = Path("/proc/driver/nvidia/gpus")
    count = len(list(gpus.iterdir())) if gpus.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([d for d in visible.split(",") if d.strip() not in ("", "-1")]))
    return count


def requests_gpu(device: str) -> bool:
    """Whether training jobs should request a GPU: ``cuda``, or ``auto`` where one is visible."""
    return device == "cuda" or (device == "auto" and visible_cuda_devices() > 0)


def figures_for(config: dict) -> list[str]:
    """The figures this config has the data for, in report order.

    A figure that compares values of an axis needs at least two of them somewhere in the grid
    (for example the α × lr heatmap needs two α and two learning rates in one grid block).
    """
    blocks = grids(config)

    def varies(*axes: str) -> bool:
        return any(all(len(set(block[a])) >= 2 for a in axes) for block in blocks)

    task_ranks = {d.get("task_rank") for d in config["datasets"] if d["kind"] == "lowrank"}
    wanted = {
        "loss_vs_params": True,
        "learning_curves": True,
        "loss_vs_rank": True,
        "grad_norm_vs_rank": varies("rank"),
        "rank_alpha_heatmap": varies("rank", "alpha"),
        "alpha_lr_heatmap": varies("alpha", "lr"),
        "subspace_similarity": varies("rank"),
        "amplification": True,
        "init_comparison": varies("init"),
        "lora_plus": varies("lr_ratio"),
        "task_rank_knee": len(task_ranks) >= 2 and varies("rank"),
    }
    return [name for name in FIGURES if wanted[name]]
