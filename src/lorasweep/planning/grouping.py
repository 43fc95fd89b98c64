"""Group runs into training jobs (Snakemake jobs, one process each) of about equal cost.

A *job* trains several runs in turn, so that the cost of starting Python and importing torch
(about 5 s here) is paid once per job rather than once per run. Each run still has its own
folder, ``results/runs/<run_id>/``, and a job reuses a run whose folder holds a result for the
same settings, data and code, so regrouping never retrains anything.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field

from lorasweep.models.names import linear_modules
from lorasweep.planning.runs import RunSpec, expand_runs


@dataclass
class Plan:
    runs: list[RunSpec]
    jobs: dict[str, list[RunSpec]] = field(default_factory=dict)

    def job_datasets(self, job_id: str) -> list[str]:
        return sorted({run.dataset for run in self.jobs[job_id]})


def estimated_cost(run: RunSpec, dataset: dict) -> float:
    """Rough relative cost of a run: steps × (fixed per-step overhead + multiply-adds per step).

    LoRA runs train against the cached base product, so a step costs about 3·b·r·(d_in + d_out)
    multiply-adds; full fine-tuning about 3·b·d_in·d_out. The overhead term stands for the
    ~0.3 ms of Python and dispatch each step pays whatever its size. A deep model's step runs
    the whole network forward and back, LoRA or not: 3·b·tokens·Σ d_in·d_out over its linear
    modules, and the overhead once per module.
    """
    n = dataset["n_train"]
    batch = min(run.batch_size or n, n)
    steps = run.epochs * math.ceil(n / batch)
    modules = linear_modules(dataset)
    if modules:
        tokens = dataset.get("seq_len") or 1
        weights = sum(m.in_features * m.out_features for m in modules)
        return steps * (3e5 * len(modules) + 3 * batch * tokens * weights)
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
