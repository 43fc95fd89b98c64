"""Snakemake script: SHA-256 of every result file, so two machines can compare runs."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from lorasweep.io import manifest, write_text
from lorasweep.scripting import logged_to
from lorasweep.tables import iter_run_dirs

with logged_to(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    run_dirs = [run_dir for _, run_dir in iter_run_dirs(sm.input.jobs)]
    table = manifest([*sm.input.results, *run_dirs], root=Path(sm.output[0]).parent)
    write_text(sm.output[0], table.to_csv(sep="\t", index=False, lineterminator="\n"))
    print(f"{len(table)} files")
