"""Snakemake script: subspace similarity and amplification of the saved updates."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from lorasweep import datasets
from lorasweep.geometry import geometry_tables
from lorasweep.io import write_csv
from lorasweep.scripting import logged_to
from lorasweep.tables import iter_run_dirs

with logged_to(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    loaded = {
        name: datasets.load(tensors, meta)
        for name, tensors, meta in zip(
            sm.params.datasets, sm.input.tensors, sm.input.meta, strict=True
        )
    }
    run_dirs = [run_dir for _, run_dir in iter_run_dirs(sm.input.runs)]
    per_run, pairs = geometry_tables(run_dirs, loaded)
    write_csv(sm.output.geometry, per_run)
    write_csv(sm.output.pairs, pairs)
    print(f"{len(per_run)} runs, {len(pairs)} similarity cells")
