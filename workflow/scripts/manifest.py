"""Snakemake script: SHA-256 of every result file, so two machines can compare runs."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from lorasweep.io import manifest, write_text
from lorasweep.scripting import logged_to

with logged_to(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    table = manifest(sm.input.results, root=Path(sm.output[0]).parent)
    write_text(sm.output[0], table.to_csv(sep="\t", index=False, lineterminator="\n"))
    print(f"{len(table)} files")
