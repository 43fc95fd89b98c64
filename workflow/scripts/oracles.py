"""Snakemake script: closed-form least-squares and reduced-rank oracles of each dataset."""

from lorasweep.logs import workflow_script

with workflow_script(snakemake):  # noqa: F821
    from lorasweep.io import write_csv
    from lorasweep.tables.oracles import oracle_table
    from lorasweep.tasks import storage

    sm = snakemake  # noqa: F821
    loaded = storage.load_named(sm.params.datasets, sm.input.tensors, sm.input.meta)
    table = oracle_table(loaded, sm.params.settings)
    write_csv(sm.output[0], table)
    print(f"{len(table)} oracle rows")
