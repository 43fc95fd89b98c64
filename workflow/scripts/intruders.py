"""Snakemake script: intruder dimensions of every run's fine-tuned weight, per layer and ε."""

from lorasweep.logs import workflow_script

with workflow_script(snakemake):  # noqa: F821
    from lorasweep.io import write_csv
    from lorasweep.tables.intruders import intruder_table
    from lorasweep.tables.runs import iter_run_dirs
    from lorasweep.tasks import storage

    sm = snakemake  # noqa: F821
    loaded = {
        name: storage.load(tensors, meta)
        for name, tensors, meta in zip(
            sm.params.datasets, sm.input.tensors, sm.input.meta, strict=True
        )
    }
    run_dirs = [run_dir for _, run_dir in iter_run_dirs(sm.input.runs)]
    table = intruder_table(run_dirs, loaded)
    write_csv(sm.output[0], table)
    print(f"{len(table)} rows")
