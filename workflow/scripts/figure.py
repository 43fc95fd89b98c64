"""Snakemake script: draw one registered figure from the tables it declares."""

from lorasweep.logs import workflow_script

with workflow_script(snakemake):  # noqa: F821
    import pandas as pd

    from lorasweep.figures import make_figure
    from lorasweep.figures.registry import Tables
    from lorasweep.tables.runs import read_runs

    sm = snakemake  # noqa: F821
    tables = {name: pd.read_csv(path) for name, path in sm.input.items() if name != "runs"}
    tables = Tables(runs=read_runs(sm.input.runs), **tables)
    missing = make_figure(sm.wildcards.figure, tables, pdf=sm.output.pdf, png=sm.output.png)
    print(f"{sm.wildcards.figure}: " + (f"no data ({missing})" if missing else "drawn"))
