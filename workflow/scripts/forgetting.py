"""Snakemake script: matched forgetting per rank and unit, beside estimation theory's prediction."""

from lorasweep.logs import workflow_script

with workflow_script(snakemake):  # noqa: F821
    import pandas as pd

    from lorasweep.io import write_csv
    from lorasweep.tables.forgetting import forgetting_table
    from lorasweep.tables.runs import read_runs
    from lorasweep.tasks import storage

    sm = snakemake  # noqa: F821
    loaded = storage.load_named(sm.params.datasets, sm.input.tensors, sm.input.meta)
    table = forgetting_table(read_runs(sm.input.runs), pd.read_csv(sm.input.epochs), loaded)
    write_csv(sm.output[0], table)
    print(f"{len(table)} rows")
