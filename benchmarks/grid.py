"""Grid throughput: the pipeline against the in-process loop, side by side, from clean.

Both train the default config's runs and write runs.csv: the pipeline with
``snakemake --cores 2 <results>/tables/runs.csv``, the loop with ``python -m lorasweep.sequential``
(a fresh process each, so both pay Python and torch start-up). Repeats alternate the two.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd

from benchmarks.common import REPO, python_cmd, summary, timed_command

CORES = 2


def pipeline(workdir: Path, configfile: Path | None) -> float:
    args = [
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--cores",
        str(CORES),
        "--quiet",
        "all",
    ]
    if configfile:
        args += ["--configfile", str(configfile)]
    return timed_command(python_cmd(*args, "--", "results/tables/runs.csv"), cwd=workdir)


def loop(workdir: Path, configfile: Path | None, threads: int) -> float:
    args = ["-m", "lorasweep.sequential", "--results", "results", "--threads", str(threads)]
    if configfile:
        args += ["--configfile", str(configfile)]
    return timed_command(python_cmd(*args), cwd=workdir)


def run(repeats: int = 2, configfile: Path | None = None) -> pd.DataFrame:
    """Median wall time of the pipeline, of the loop with 1 and with 2 torch threads, and the
    ratio pipeline / fastest loop."""
    times: dict[str, list[float]] = {"pipeline": [], "loop_1_thread": [], "loop_2_threads": []}
    for _ in range(repeats):
        for name in times:
            workdir = Path(tempfile.mkdtemp(prefix=f"bench-grid-{name}-"))
            try:
                if name == "pipeline":
                    times[name].append(pipeline(workdir, configfile))
                else:
                    times[name].append(loop(workdir, configfile, threads=int(name.split("_")[1])))
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
    rows = [{"variant": name, **summary(t)} for name, t in times.items()]
    frame = pd.DataFrame(rows)
    fastest_loop = frame[frame["variant"] != "pipeline"]["median_s"].min()
    frame["ratio_to_fastest_loop"] = frame["median_s"] / fastest_loop
    return frame
