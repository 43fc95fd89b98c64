"""Snakemake script: the best settings, the efficiency and method tables and the findings of the
study."""

from lorasweep.logs import workflow_script

with workflow_script(snakemake):  # noqa: F821
    import pandas as pd

    from lorasweep.analysis.summary import summarise
    from lorasweep.io import write_csv
    from lorasweep.tables.forgetting import read_forgetting
    from lorasweep.tables.runs import read_runs

    sm = snakemake  # noqa: F821
    tables = summarise(
        read_runs(sm.input.runs),
        pd.read_csv(sm.input.epochs),
        pd.read_csv(sm.input.timings),
        pairs=pd.read_csv(sm.input.pairs),
        lr_optima=pd.read_csv(sm.input.lr_optima),
        intruders=pd.read_csv(sm.input.intruders),
        tolerance=sm.params.tolerance,
        forgetting=read_forgetting(sm.input.forgetting),
        oracles=pd.read_csv(sm.input.oracles),
        geometry=pd.read_csv(sm.input.geometry),
    )
    for name, frame in tables.items():
        write_csv(sm.output[name], frame)
    verdicts = tables["findings"]["verdict"].value_counts()
    print(", ".join(f"{n} {verdict}" for verdict, n in verdicts.items()))
