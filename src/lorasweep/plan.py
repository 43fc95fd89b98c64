"""Expand a config into runs and group the runs into training jobs.

This module never imports torch, so Snakemake can build the DAG of a large grid quickly.

A *run* is one training of one model. Its id is derived only from its parameters, for example
``lowrank__lora_r4_a8_standard_kaiming_lr0.001_s0`` or ``lowrank__full_lr0.001_s0``.

A *job* is one Snakemake job (one process) that trains several runs in turn, so that the cost of
starting Python and importing torch (about 5 s here) is paid once per job rather than once per
run. Runs are grouped by (dataset, method, seed, scaling, init, lr ratio); each group is cut into
chunks of at most ``runs_per_job`` runs. Adding a seed, a dataset, a scaling rule or an init only
adds jobs; adding a rank, an α or a learning rate changes the membership of existing groups, and
those groups retrain.
"""

from __future__ import annotations

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

    @property
    def group_key(self) -> str:
        if self.method == "full":
            return f"{self.dataset}__full_s{self.seed}"
        ratio = f"_lrB{format_number(self.lr_ratio)}" if self.lr_ratio != 1 else ""
        return f"{self.dataset}__lora_{self.scaling}_{self.init}{ratio}_s{self.seed}"

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


def group_runs(runs: list[RunSpec], runs_per_job: int) -> dict[str, list[RunSpec]]:
    """Cut each group of runs into ceil(n / runs_per_job) near-equal chunks, in run order."""
    if runs_per_job < 1:
        raise ValueError(f"runs_per_job must be >= 1, got {runs_per_job}")
    groups: dict[str, list[RunSpec]] = {}
    for run in runs:
        groups.setdefault(run.group_key, []).append(run)
    jobs: dict[str, list[RunSpec]] = {}
    for key, members in groups.items():
        n_chunks = math.ceil(len(members) / runs_per_job)
        if n_chunks == 1:
            jobs[key] = members
            continue
        size = math.ceil(len(members) / n_chunks)
        for index in range(n_chunks):
            jobs[f"{key}_part{index + 1}of{n_chunks}"] = members[index * size : (index + 1) * size]
    return jobs


def build_plan(config: dict) -> Plan:
    runs = expand_runs(config)
    duplicates = [rid for rid, n in Counter(r.run_id for r in runs).items() if n > 1]
    if duplicates:
        raise ValueError(f"grid produces duplicate runs: {', '.join(duplicates[:3])}")
    return Plan(runs=runs, jobs=group_runs(runs, config.get("runs_per_job", 64)))


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
