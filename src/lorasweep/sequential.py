"""Train a whole config in one Python process, without Snakemake, with the config's engine.

This is the obvious alternative to the pipeline (what Hydra's basic launcher does), kept as the
baseline of the grid-throughput benchmark, and handy for quick local work. It writes the same
datasets, per-run files and tables as the workflow, at the same paths (:mod:`lorasweep.layout`):

    python -m lorasweep.sequential --configfile config/config.yaml --results /tmp/loop-results
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from lorasweep.io import write_csv
from lorasweep.layout import Layout
from lorasweep.planning.grouping import build_plan
from lorasweep.planning.runs import replicates
from lorasweep.tasks import storage, synthetic

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "config" / "config.yaml"


def load_config(*paths: str | Path) -> dict:
    """The default config with ``paths`` merged over it as Snakemake merges ``--configfile``,
    validated, defaults filled in."""
    from snakemake.utils import update_config

    from lorasweep.config import validated
    from lorasweep.report.title import drop_inherited_title

    config: dict = {}
    overrides: dict = {}
    for path in (DEFAULT_CONFIG, *paths):
        update_config(config, yaml.safe_load(Path(path).read_text()) or {})
    for path in paths:
        update_config(overrides, yaml.safe_load(Path(path).read_text()) or {})
    return validated(drop_inherited_title(config, overrides))


def run_in_process(config: dict, results: str | Path, threads: int = 1) -> dict[str, float]:
    """Generate the datasets, train every run and write the tables; return stage timings."""
    from lorasweep.jobs.job import run_job
    from lorasweep.tables.runs import collect

    layout = Layout(str(results))
    timings = {}
    start = time.perf_counter()
    plan = build_plan(config)
    files = {}
    for name, spec in replicates(config).items():
        files[name] = (layout.dataset_tensors(name), layout.dataset_meta(name))
        storage.save(synthetic.generate(synthetic.DatasetSpec.from_config(spec)), *files[name])
    timings["datasets"] = time.perf_counter() - start
    manifests = []
    for job_id, runs in plan.jobs.items():
        manifests.append(layout.job_manifest(job_id))
        runs_dicts = [r.as_dict() for r in runs]
        run_job(
            runs_dicts,
            files,
            layout.runs_dir,
            manifests[-1],
            threads,
            progress=False,
            engine=config["train"]["engine"],
            memory_budget_mib=config["train"]["memory_budget_mib"],
        )
    timings["train"] = time.perf_counter() - start - timings["datasets"]
    tables = dict(zip(("runs", "epochs", "timings", "provenance"), collect(manifests), strict=True))
    for name, frame in tables.items():
        write_csv(layout.table(name), frame)
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
