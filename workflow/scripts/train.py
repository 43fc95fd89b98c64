"""Snakemake script: train the runs of one job."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from lorasweep.jobs import run_job
from lorasweep.scripting import logged_to

with logged_to(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    run_job(
        runs=sm.params.runs,
        dataset_files={
            name: (tensors, meta)
            for name, tensors, meta in zip(
                sm.params.datasets, sm.input.tensors, sm.input.meta, strict=True
            )
        },
        runs_root=Path(sm.output[0]).parent.parent / "runs",
        manifest=sm.output[0],
        threads=sm.threads,
        reuse=sm.params.reuse,
    )
