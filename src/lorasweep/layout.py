"""Where every result lives under the results folder: one home for each path.

The Snakemake rules and the in-process runner (:mod:`lorasweep.sequential`) both take their paths
from here. A name may be a wildcard pattern such as ``"{dataset}"``.
"""

from __future__ import annotations

from dataclasses import dataclass

TABLES = ("runs", "epochs", "timings", "provenance", "geometry", "subspace_pairs", "lr_optima",
          "intruders", "oracles", "forgetting", "best_settings", "efficiency", "findings",
          "intruder_means", "gaps", "selections", "methods")  # fmt: skip

WALL_CLOCK = ("timing.json", "timings.csv", "efficiency.csv", "methods.csv", "report.html")
"""Result files that hold wall-clock times, so differ between reruns and machines: left out of
``manifest.tsv``, which lists only what two runs of a config can compare."""


@dataclass(frozen=True)
class Layout:
    """The files of one results folder, as POSIX path strings relative to the working folder."""

    root: str = "results"

    def dataset_tensors(self, name: str) -> str:
        return f"{self.root}/datasets/{name}.safetensors"

    def dataset_meta(self, name: str) -> str:
        return f"{self.root}/datasets/{name}.json"

    def dataset_files(self, name: str) -> list[str]:
        return [self.dataset_tensors(name), self.dataset_meta(name)]

    @property
    def runs_dir(self) -> str:
        return f"{self.root}/runs"

    def job_manifest(self, job: str) -> str:
        return f"{self.root}/jobs/{job}.json"

    def table(self, name: str) -> str:
        return f"{self.root}/tables/{name}.csv"

    @property
    def figures_dir(self) -> str:
        return f"{self.root}/figures"

    def figure(self, name: str, ext: str) -> str:
        return f"{self.figures_dir}/{name}.{ext}"

    @property
    def report(self) -> str:
        return f"{self.root}/report.html"

    @property
    def study(self) -> str:
        return f"{self.root}/study.json"

    @property
    def manifest(self) -> str:
        return f"{self.root}/manifest.tsv"

    def log(self, *parts: str) -> str:
        return f"{self.root}/logs/{'/'.join(parts)}.log"
