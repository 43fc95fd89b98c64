"""Train a whole config in one Python process, one run after another, without Snakemake.

This is the obvious alternative to the pipeline (what Hydra's basic launcher does), kept as the
baseline of the grid-throughput benchmark, and handy for quick local work. It writes the same
datasets, per-run files and tables as the workflow:

    python -m lorasweep.loop --configfile config/config.yaml --results /tmp/loop-results
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import yaml

from lorasweep import datasets as ds
from lorasweep.io import write_csv
from lorasweep.plan import build_plan

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "config" / "config.yaml"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def merge(base: dict, override: dict) -> dict:
    """Snakemake's config merge: mappings merge key by key, everything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(*paths: str | Path) -> dict:
    """The default config merged with ``paths``, validated, defaults filled in."""
    from snakemake.utils import validate

    from lorasweep.config import check_semantics

    config: dict = {}
    for path in (DEFAULT_CONFIG, *paths):
        config = merge(config, yaml.safe_load(Path(path).read_text()) or {})
    validate(config, str(SCHEMA))
    check_semantics(config)
    return config


def run_in_process(config: dict, results: str | Path, threads: int = 1) -> dict[str, float]:
    """Generate the datasets, train every run and write the tables; return stage timings."""
    from lorasweep.jobs import run_job
    from lorasweep.tables import collect

    results = Path(results)
    timings = {}
    start = time.perf_counter()
    plan = build_plan(config, workers=1)
    files = {}
    for spec in config["datasets"]:
        name = spec["name"]
        files[name] = (
            results / "datasets" / f"{name}.safetensors",
            results / "datasets" / f"{name}.json",
        )
        ds.save(ds.generate(ds.DatasetSpec.from_config(spec)), *files[name])
    timings["datasets"] = time.perf_counter() - start
    manifests = []
    for job_id, runs in plan.jobs.items():
        manifests.append(results / "jobs" / f"{job_id}.json")
        runs_dicts = [r.as_dict() for r in runs]
        run_job(runs_dicts, files, results / "runs", manifests[-1], threads, progress=False)
    timings["train"] = time.perf_counter() - start - timings["datasets"]
    tables = dict(zip(("runs", "epochs", "timings", "provenance"), collect(manifests), strict=True))
    for name, frame in tables.items():
        write_csv(results / "tables" / f"{name}.csv", frame)
    timings["total"] = time.perf_counter() - start
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", nargs="*", default=[], help="merged over the default")
    parser.add_argument("--results", required=True, help="output folder")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    config = load_config(*args.configfile)
    timings = run_in_process(config, args.results, threads=args.threads)
    print(" ".join(f"{k}={v:.2f}s" for k, v in timings.items()))


if __name__ == "__main__":
    main()
