"""Snakemake script: subspace similarity and amplification of the saved updates."""

from lorasweep.logs import workflow_script

with workflow_script(snakemake):  # noqa: F821
    from lorasweep.io import write_csv
    from lorasweep.tables.geometry import geometry_tables
    from lorasweep.tables.runs import iter_run_dirs
    from lorasweep.tasks import storage

    sm = snakemake  # noqa: F821
    loaded = storage.load_named(sm.params.datasets, sm.input.tensors, sm.input.meta)
    run_dirs = [run_dir for _, run_dir in iter_run_dirs(sm.input.runs)]
    per_run, pairs = geometry_tables(run_dirs, loaded)
    write_csv(sm.output.geometry, per_run)
    write_csv(sm.output.pairs, pairs)
    print(f"{len(per_run)} runs, {len(pairs)} similarity cells")
