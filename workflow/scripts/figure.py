"""Snakemake script: draw one figure from the tables."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

import pandas as pd

from lorasweep.plotting import make_figure
from lorasweep.scripting import logged_to
from lorasweep.tables import read_runs

with logged_to(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    make_figure(
        sm.wildcards.figure,
        read_runs(sm.input.runs),
        pd.read_csv(sm.input.epochs),
        pdf=sm.output.pdf,
        png=sm.output.png,
    )
