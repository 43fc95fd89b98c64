"""Snakemake script: each loss-against-learning-rate curve's optimum, and LoRA's over full FT's."""

from lorasweep.logs import workflow_script

with workflow_script(snakemake):  # noqa: F821
    from lorasweep.analysis.learning_rate import lr_optima
    from lorasweep.io import write_csv
    from lorasweep.tables.runs import read_runs

    sm = snakemake  # noqa: F821
    optima = lr_optima(read_runs(sm.input[0]))
    write_csv(sm.output[0], optima)
    print(f"{len(optima)} optima")
