"""Grid throughput from clean to runs.csv, side by side: the pipeline (batched engine), the
pipeline with ``train.engine: single``, the in-process loop (``python -m lorasweep.sequential``,
the same jobs without Snakemake) and the plain-PyTorch per-run loop a user would write
(:mod:`benchmarks.user_loop`), each a fresh process, repeats interleaved.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from benchmarks.common import REPO, measured_command, python_cmd, snakemake_cmd, summary

CORES = 2
VARIANTS = ("pipeline", "pipeline_single", "in_process_loop", "user_loop")


def command(variant: str, configfiles: list[Path], workdir: Path) -> list[str]:
    files = ["--configfile", *map(str, configfiles)] if configfiles else []
    if variant.startswith("pipeline"):
        return snakemake_cmd("--cores", str(CORES), *files, "--", "results/tables/runs.csv")
    if variant == "in_process_loop":
        options = ["--results", "results", "--threads", "1"]
        return python_cmd("-m", "lorasweep.sequential", *options, *files)
    return python_cmd("-m", "benchmarks.user_loop", "--out", str(workdir / "user.csv"), *files)


def run(repeats: int = 2, configfile: Path | None = None) -> pd.DataFrame:
    """Median wall and CPU seconds of each variant, and the pipeline's ratios to the others."""
    wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name in VARIANTS:
            workdir = Path(tempfile.mkdtemp(prefix=f"bench-grid-{name}-"))
            files = [configfile] if configfile else []
            if name == "pipeline_single":
                (workdir / "single.yaml").write_text(
                    yaml.safe_dump({"train": {"engine": "single"}})
                )
                files.append(workdir / "single.yaml")
            try:
                cwd = REPO if name == "user_loop" else workdir
                seconds, cpu_seconds = measured_command(command(name, files, workdir), cwd=cwd)
                wall[name].append(seconds)
                cpu[name].append(cpu_seconds)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
    rows = [
        {"variant": name, **summary(wall[name]), "cpu_median_s": statistics.median(cpu[name])}
        for name in VARIANTS
    ]
    frame = pd.DataFrame(rows)
    pipeline = frame.set_index("variant").loc["pipeline"]
    frame["pipeline_over_this"] = pipeline["median_s"] / frame["median_s"]
    frame["pipeline_over_this_cpu"] = pipeline["cpu_median_s"] / frame["cpu_median_s"]
    return frame


def preset(name: str, runs: int, repeats: int = 1) -> pd.DataFrame:
    """A preset (``config/<name>.yaml``) from clean to report.html and manifest.tsv on two
    cores."""
    wall, cpu = [], []
    for _ in range(repeats):
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        try:
            configfile = str(REPO / "config" / f"{name}.yaml")
            cmd = snakemake_cmd("--cores", str(CORES), "--configfile", configfile)
            seconds, cpu_seconds = measured_command(cmd, cwd=workdir)
            wall.append(seconds)
            cpu.append(cpu_seconds)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return pd.DataFrame(
        [
            {
                "config": f"{name}.yaml ({runs:,} runs)",
                **summary(wall),
                "cpu_median_s": statistics.median(cpu),
            }
        ]
    )


def paper(repeats: int = 1) -> pd.DataFrame:
    """The paper preset end to end (:func:`preset`)."""
    return preset("paper", 2170, repeats)


def methods(repeats: int = 1) -> pd.DataFrame:
    """The method-comparison preset end to end (:func:`preset`): LoRA and DoRA on the engine,
    the ten methods trained through PEFT one run at a time."""
    return preset("methods", 330, repeats)
