"""Group runs into training jobs (Snakemake jobs, one process each) of about equal cost.

The grouping depends on the config alone, never on the machine (its ``--cores``), so job ids
and the DAG are the same wherever the workflow runs: :func:`job_count` asks for enough jobs to
keep :data:`PARALLEL_JOBS` cores busy, but none that would train for less than the start-up it
costs.

A *job* trains several runs, so that the cost of starting Python and importing torch is paid once
per job rather than once per run. With the batched engine a job trains whole
cohorts (:mod:`lorasweep.planning.cohorts`): a cohort too large to balance the jobs is cut into
pieces, each trained whole by one job. Each run still has its own folder,
``results/runs/<run_id>/``, and a job reuses a run whose folder holds a result for the same
settings, data and code, so regrouping never retrains anything.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from dataclasses import dataclass, field

from lorasweep.planning.cohorts import by_order, plan_cohorts
from lorasweep.planning.resources import cohort_cost
from lorasweep.planning.runs import RunSpec, expand_runs

PARALLEL_JOBS = 4
"""A study is spread over at least this many jobs where its cost allows (:data:`JOB_MIN_COST`):
1, 2 or 4 cores (the usual local counts) then share the work evenly, whatever ``--cores`` is."""

JOB_MIN_COST = 4e10
"""Extra jobs are made only where each gets at least this estimated cost
(:func:`lorasweep.planning.resources.cohort_cost`, about a second of training by that model), so
that a small study is not spread over processes that would spend longer starting Python and
torch (about 5 s each) than training."""

PIECES_PER_JOB = 8
"""With the batched engine, cohorts are cut into pieces of at most 1/(8·jobs) of the total
estimated cost, so that dealing them gives jobs of about equal cost (within 3 % on the default
study's four jobs; 1/(4·jobs) left 16 %)."""


@dataclass
class Plan:
    runs: list[RunSpec]
    jobs: dict[str, list[RunSpec]] = field(default_factory=dict)

    def job_datasets(self, job_id: str) -> list[str]:
        return sorted({run.data for run in self.jobs[job_id]})


def job_count(runs: int, runs_per_job: int, total_cost: float = 0.0) -> int:
    """ceil(runs / runs_per_job) jobs, or more where the work is worth spreading: up to
    :data:`PARALLEL_JOBS`, each of at least :data:`JOB_MIN_COST` of ``total_cost``; at most one
    job per run."""
    if runs_per_job < 1:
        raise ValueError(f"runs_per_job must be >= 1, got {runs_per_job}")
    n_jobs = math.ceil(runs / runs_per_job)
    spread = min(PARALLEL_JOBS, math.floor(total_cost / JOB_MIN_COST))
    return max(1, min(runs, max(n_jobs, spread)))


def cohort_pieces(
    runs: list[RunSpec], datasets: dict[str, dict], n_jobs: int, runs_per_job: int
) -> list[list[RunSpec]]:
    """The cohorts of ``runs``, each cut into as few pieces as keep every piece within
    ``runs_per_job`` runs and 1/(:data:`PIECES_PER_JOB`·``n_jobs``) of the total estimated cost.
    Runs that draw the same mini-batches stay in one piece where they can."""
    cohorts = plan_cohorts(runs, "batched", datasets)
    costs = [cohort_cost(c, datasets[c[0].dataset]) for c in cohorts]
    limit = sum(costs) / (PIECES_PER_JOB * n_jobs)
    pieces = []
    for cohort, cost in zip(cohorts, costs, strict=True):
        n_train = datasets[cohort[0].dataset]["n_train"]
        count = max(math.ceil(len(cohort) / runs_per_job), math.ceil(cost / limit))
        count = min(count, len(cohort))
        ordered = sorted(cohort, key=lambda r: by_order(r, n_train))
        bounds = [round(i * len(ordered) / count) for i in range(count + 1)]
        pieces += [ordered[lo:hi] for lo, hi in itertools.pairwise(bounds)]
    return pieces


def group_runs(
    runs: list[RunSpec],
    datasets: dict[str, dict],
    runs_per_job: int,
    engine: str = "single",
) -> dict[str, list[RunSpec]]:
    """Deal the runs into jobs of about equal estimated cost (longest first, each to the least
    loaded job): run by run for the single-run engine, cohort piece by cohort piece
    (:func:`cohort_pieces`) for the batched one.

    There are :func:`job_count` jobs. Grouping only decides which process trains a run: every
    run keeps its own folder, and a run already trained with the same settings, data and code is
    reused, not retrained, whatever job it falls in.
    """
    if engine == "batched":
        cohorts = plan_cohorts(runs, "batched", datasets)
        total = sum(cohort_cost(c, datasets[c[0].dataset]) for c in cohorts)
        n_jobs = job_count(len(runs), runs_per_job, total)
        units = cohort_pieces(runs, datasets, n_jobs, runs_per_job)
        costs = [cohort_cost(unit, datasets[unit[0].dataset]) for unit in units]
    else:
        units = [[run] for run in runs]
        costs = [cohort_cost(unit, datasets[unit[0].dataset]) for unit in units]
        n_jobs = job_count(len(runs), runs_per_job, sum(costs))
    members = _deal(units, costs, n_jobs, runs_per_job)
    n_jobs = len(members)
    order = {run.run_id: i for i, run in enumerate(runs)}
    width = len(str(n_jobs))
    return {
        f"part{index + 1:0{width}d}of{n_jobs}": sorted(group, key=lambda r: order[r.run_id])
        for index, group in enumerate(members)
        if group
    }


def _deal(
    units: list[list[RunSpec]], costs: list[float], n_jobs: int, runs_per_job: int
) -> list[list[RunSpec]]:
    """Longest first, each unit to the least loaded job with room for it; a unit that fits
    nowhere opens one more job."""
    members: list[list[RunSpec]] = [[] for _ in range(n_jobs)]
    loads = [(0.0, index) for index in range(n_jobs)]
    for index in sorted(range(len(units)), key=lambda i: -costs[i]):
        unit, skipped = units[index], []
        while loads:
            load, job = heapq.heappop(loads)
            if len(members[job]) + len(unit) <= runs_per_job:
                break
            if len(members[job]) < runs_per_job:
                skipped.append((load, job))
        else:
            load, job = 0.0, len(members)
            members.append([])
        members[job].extend(unit)
        heapq.heappush(loads, (load + costs[index], job))
        for item in skipped:
            heapq.heappush(loads, item)
    return members


def build_plan(config: dict) -> Plan:
    """The config's runs and their jobs; the same for a config wherever it is planned."""
    runs = expand_runs(config)
    duplicates = [rid for rid, n in Counter(r.run_id for r in runs).items() if n > 1]
    if duplicates:
        raise ValueError(f"grid produces duplicate runs: {', '.join(duplicates[:3])}")
    datasets = {d["name"]: d for d in config["datasets"]}
    engine = config["train"].get("engine", "batched")
    jobs = group_runs(runs, datasets, config.get("runs_per_job", 256), engine)
    return Plan(runs=runs, jobs=jobs)
