"""Snakemake script: draw one figure from the tables."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

import pandas as pd

from lorasweep.plotting import Tables, make_figure
from lorasweep.scripting import logged_to
from lorasweep.tables import read_runs

with logged_to(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    inputs = dict(sm.input.items())
    tables = Tables(
        runs=read_runs(inputs["runs"]),
        epochs=pd.read_csv(inputs["epochs"]),
        geometry=pd.read_csv(inputs["geometry"]) if "geometry" in inputs else None,
        pairs=pd.read_csv(inputs["pairs"]) if "pairs" in inputs else None,
    )
    make_figure(sm.params.figure, tables, pdf=sm.output.pdf, png=sm.output.png)
