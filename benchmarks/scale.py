"""How the pipeline scales with the number of runs.

- Dry run: ``snakemake -n`` of a 10,000-run grid against a bare Snakefile that ``expand()``s
  10,000 jobs (one rule, no work), both in fresh processes.
- Growth: wall time of ``snakemake --cores 2`` from clean up to runs.csv for 10, 100, 1,000 and
  10,000 small runs; linear growth means a constant time per added run.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from benchmarks.common import (
    measured_command,
    python_cmd,
    snakemake_cmd,
    summary,
    timed_command,
)

BARE_SNAKEFILE = """
rule all:
    input:
        expand("out/{i}.txt", i=range(N))


rule make:
    output:
        "out/{i}.txt"
    shell:
        "touch {output}"
"""


def grid_config(n_runs: int, epochs: int = 2) -> dict:
    """A config with exactly ``n_runs`` LoRA runs on one small dataset (n_runs = seeds × lrs)."""
    lrs = [round(1e-3 * (1 + i), 6) for i in range(max(1, n_runs // 10))]
    seeds = list(range(min(n_runs, 10)))
    assert len(lrs) * len(seeds) == n_runs, n_runs
    return {
        "results": "results",
        "seeds": seeds,
        "datasets": [{"name": "scale", "kind": "lowrank", "in_features": 16, "out_features": 12,
                      "task_rank": 2, "noise_std": 0.1, "n_train": 64, "n_val": 32}],
        "grid": {"rank": [2], "alpha": [4], "scaling": ["standard"], "init": ["kaiming"],
                 "lr": lrs, "lr_ratio": [1.0]},
        "full_finetune": {"enabled": False},
        "train": {"epochs": epochs, "batch_size": 32, "bias": "none", "device": "cpu"},
    }  # fmt: skip


def dry_run(repeats: int = 3, n_runs: int = 10_000) -> pd.DataFrame:
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        config = grid_config(1000)
        config["seeds"] = list(range(n_runs // 100))
        (work / "big.yaml").write_text(yaml.safe_dump(config))
        bare = work / "bare"
        bare.mkdir()
        (bare / "Snakefile").write_text(BARE_SNAKEFILE.replace("range(N)", f"range({n_runs})"))
        pipeline_cmd = snakemake_cmd("--configfile", "big.yaml", "-n")
        bare_cmd = python_cmd("-m", "snakemake", "-n", "--quiet", "all")
        times = {"pipeline": [], "bare_expand": []}
        for _ in range(repeats):
            times["pipeline"].append(timed_command(pipeline_cmd, cwd=work))
            times["bare_expand"].append(timed_command(bare_cmd, cwd=bare))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    frame = pd.DataFrame([{"variant": k, "runs": n_runs, **summary(v)} for k, v in times.items()])
    bare_median = frame.set_index("variant").loc["bare_expand", "median_s"]
    frame["ratio_to_bare"] = frame["median_s"] / bare_median
    return frame


def growth(sizes=(10, 100, 1000, 10_000), repeats: int = 1) -> pd.DataFrame:
    rows = []
    for n_runs in sizes:
        times, cpus = [], []
        for _ in range(repeats):
            work = Path(tempfile.mkdtemp(prefix=f"bench-growth-{n_runs}-"))
            try:
                (work / "grid.yaml").write_text(yaml.safe_dump(grid_config(n_runs)))
                cmd = snakemake_cmd("--configfile", "grid.yaml", "--cores", "2", "--",
                                    "results/tables/runs.csv")  # fmt: skip
                seconds, cpu = measured_command(cmd, cwd=work)
                times.append(seconds)
                cpus.append(cpu)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        rows.append({"runs": n_runs, **summary(times), "cpu_median_s": statistics.median(cpus)})
    frame = pd.DataFrame(rows)
    frame["seconds_per_run"] = frame["median_s"] / frame["runs"]
    frame["marginal_s_per_run"] = frame["median_s"].diff() / frame["runs"].diff()
    return frame
