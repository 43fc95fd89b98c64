"""Snakemake script: gather per-run files into runs.csv, epochs.csv and timings.csv."""

from lorasweep.logs import workflow_script

with workflow_script(snakemake):  # noqa: F821
    from lorasweep.io import write_csv
    from lorasweep.tables.runs import collect

    sm = snakemake  # noqa: F821
    runs, epochs, timings, provenance = collect(sm.input)
    write_csv(sm.output.runs, runs)
    write_csv(sm.output.epochs, epochs)
    write_csv(sm.output.timings, timings)
    write_csv(sm.output.provenance, provenance)
    print(f"{len(runs)} runs, {len(epochs)} epoch rows")
