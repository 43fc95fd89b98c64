"""Before any job: compare what the results folder holds with what the config asks for.

Snakemake decides what to rerun from file times and its own records in ``.snakemake/``. Those
miss a changed config under ``--rerun-triggers mtime`` or once ``.snakemake/`` is deleted, and
never look inside a file. :func:`stale_outputs` reads the files themselves:

- a dataset whose sidecar records another spec than the config's is stale;
- a training job is stale when its manifest lists other runs than the plan, or one of its run
  folders is missing, fails its checksums (:mod:`lorasweep.jobs.integrity`), or records other
  parameters or another dataset checksum than the plan;
- a job manifest that is not one stops the workflow, with one line naming it
  (:class:`~lorasweep.jobs.integrity.ManifestError`), before anything is touched.

Nothing here deletes anything. The workflow has Snakemake rerun the job that makes each stale
output, as ``--forcerun`` would (so a dry run shows those reruns too); the rerun job replaces its
outputs, and retrains only the runs that fail the reuse check. Figure files the config no
longer draws (:func:`stale_figures`) are removed by the manifest job
(:func:`remove_stale_figures`), a step of the run, never while the workflow is planned.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lorasweep.io import read_json
from lorasweep.jobs.integrity import integrity_problem, plan_mismatch, read_manifest
from lorasweep.layout import Layout
from lorasweep.planning.grouping import Plan
from lorasweep.planning.runs import RunSpec
from lorasweep.tasks.storage import spec_mismatch

FIGURE_FORMATS = ("pdf", "png")


@dataclass(frozen=True)
class Stale:
    """Result files that no longer match the config; rerunning the job that makes ``paths[0]``
    makes them again."""

    paths: tuple[str, ...]
    reason: str

    def describe(self) -> str:
        return f"{self.paths[0]}: {self.reason}"


def stale_outputs(datasets: Mapping[str, dict], plan: Plan, layout: Layout) -> list[Stale]:
    """Every stale dataset and training job (module docstring), datasets first. Raises
    :class:`~lorasweep.jobs.integrity.ManifestError` for an unreadable job manifest."""
    stale, checksums = [], {}
    for name, entry in datasets.items():
        meta = layout.dataset_meta(name)
        reason = spec_mismatch(meta, entry)
        if reason:
            stale.append(Stale((meta, layout.dataset_tensors(name)), reason))
        elif Path(meta).is_file():
            checksums[name] = read_json(meta).get("sha256")
    for job, runs in plan.jobs.items():
        manifest = layout.job_manifest(job)
        try:
            run_ids, runs_dir = read_manifest(manifest)
        except FileNotFoundError:
            continue
        reason = _job_problem(runs, run_ids, runs_dir, Path(layout.runs_dir), checksums)
        if reason:
            stale.append(Stale((manifest,), reason))
    return stale


def stale_figures(layout: Layout, drawn: list[str]) -> list[Stale]:
    """Figure files (PDF, PNG) in the figures folder that are not among the ``drawn`` figure
    names: left from an earlier config, they would otherwise look current."""
    wanted = {Path(layout.figure(name, ext)).name for name in drawn for ext in FIGURE_FORMATS}
    folder = Path(layout.figures_dir)
    return [
        Stale((path.as_posix(),), "this config does not draw it")
        for path in sorted(folder.glob("*"))
        if path.suffix[1:] in FIGURE_FORMATS and path.name not in wanted and path.is_file()
    ]


def _job_problem(
    runs: list[RunSpec],
    run_ids: list[str],
    runs_dir: Path,
    expected_dir: Path,
    checksums: Mapping[str, str],
) -> str | None:
    """Why a finished job's results do not match its part of the plan; None when they do."""
    if run_ids != [run.run_id for run in runs]:
        return "the job's runs changed"
    if os.path.normpath(runs_dir) != os.path.normpath(expected_dir):
        return f"it lists runs in {runs_dir}, not {expected_dir}"
    for run in runs:
        run_dir = runs_dir / run.run_id
        problem = integrity_problem(run_dir) or plan_mismatch(
            run_dir, run.as_dict(), checksums.get(run.data)
        )
        if problem:
            return f"run {run.run_id}: {problem}"
    return None


def remove_stale_figures(layout: Layout, drawn: list[str]) -> list[str]:
    """Delete the figure files :func:`stale_figures` finds; returns the paths removed."""
    removed = []
    for item in stale_figures(layout, drawn):
        Path(item.paths[0]).unlink(missing_ok=True)
        removed.append(item.paths[0])
    return removed
