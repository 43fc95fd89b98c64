"""Snakemake script: write the self-contained HTML report."""

from lorasweep.logs import workflow_script

with workflow_script(snakemake):  # noqa: F821
    from pathlib import Path

    import pandas as pd

    from lorasweep.analysis.summary import read_summary
    from lorasweep.io import write_text
    from lorasweep.report.html import render
    from lorasweep.tables.forgetting import read_forgetting
    from lorasweep.tables.runs import read_runs

    sm = snakemake  # noqa: F821
    figures = {
        Path(png).stem: (png, caption)
        for png, caption in zip(sm.input.figures, sm.params.captions, strict=True)
    }
    html = render(
        read_runs(sm.input.runs),
        pd.read_csv(sm.input.epochs),
        figures,
        efficiency=read_summary(sm.input.efficiency),
        findings=read_summary(sm.input.findings),
        provenance=pd.read_csv(sm.input.provenance, dtype=str, keep_default_na=False),
        title=sm.params.title,
        tolerance=sm.params.tolerance,
        lr_optima=pd.read_csv(sm.input.lr_optima),
        intruders=pd.read_csv(sm.input.intruders),
        forgetting=read_forgetting(sm.input.forgetting),
        intruder_means=read_summary(sm.input.intruder_means),
        gaps=read_summary(sm.input.gaps),
        methods=read_summary(sm.input.methods),
    )
    write_text(sm.output[0], html)
