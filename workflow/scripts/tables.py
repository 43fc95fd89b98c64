"""Snakemake script: gather per-run files into runs.csv, epochs.csv and timings.csv."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from lorasweep.io import write_csv
from lorasweep.scripting import logged_to
from lorasweep.tables import collect

with logged_to(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    runs, epochs, timings, provenance = collect(sm.input)
    write_csv(sm.output.runs, runs)
    write_csv(sm.output.epochs, epochs)
    write_csv(sm.output.timings, timings)
    write_csv(sm.output.provenance, provenance)
    print(f"{len(runs)} runs, {len(epochs)} epoch rows")
