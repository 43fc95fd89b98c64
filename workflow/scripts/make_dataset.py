"""Snakemake script: generate one seeded dataset and its ground truth."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from lorasweep import datasets
from lorasweep.scripting import logged_to

with logged_to(snakemake.log[0]):  # noqa: F821
    spec = datasets.DatasetSpec.from_config(snakemake.params.spec)  # noqa: F821
    data = datasets.generate(spec)
    datasets.save(data, snakemake.output.tensors, snakemake.output.meta)  # noqa: F821
    print(f"wrote {spec.name}: {spec.kind} {spec.in_features}→{spec.out_features}")
