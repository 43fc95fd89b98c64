"""Snakemake script: train the runs of one job."""

from lorasweep.logs import workflow_script

with workflow_script(snakemake):  # noqa: F821
    import sys

    from lorasweep.jobs.job import run_job

    sm = snakemake  # noqa: F821
    run_job(
        runs=sm.params.runs.runs,
        dataset_files={
            name: (tensors, meta)
            for name, tensors, meta in zip(
                sm.params.datasets, sm.input.tensors, sm.input.meta, strict=True
            )
        },
        runs_root=sm.params.runs_dir,
        manifest=sm.output[0],
        threads=sm.threads,
        reuse=sm.params.reuse,
        engine=sm.params.engine,
        memory_budget_mib=sm.params.memory_budget_mib,
        console=sys.__stderr__,
    )
