import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

SRC = CLONE / "src"
sys.path.insert(0, str(SRC))
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
)

from lorasweep.logs import ForeignPackageError, check_package_source

try:
    check_package_source(CLONE)
except ForeignPackageError as err:
    raise WorkflowError(str(err)) from None

from lorasweep.config import ConfigError, validated
from lorasweep.figures.registry import FIGURES, figures_for
from lorasweep.layout import TABLES, Layout
from lorasweep.jobs.integrity import ManifestError
from lorasweep.planning.cpus import usable_cores
from lorasweep.planning.devices import requests_gpu
from lorasweep.planning.freshness import stale_outputs
from lorasweep.planning.grouping import build_plan
from lorasweep.planning.runs import JobRuns, replicates
from lorasweep.planning.study import (
    check_owner,
    claim,
    study_name,
    unwritable_folder,
    unwritable_message,
)
from lorasweep.report.title import drop_inherited_title, report_title
from lorasweep.sources import script_code
from lorasweep.tasks.storage import DatasetFileError, verify_existing

drop_inherited_title(config, workflow.config_settings.overwrite_config)
try:
    validated(config, check_limits=workflow.is_main_process, files=workflow.configfiles)
except ConfigError as err:
    sys.exit(str(err))
RESULTS = Layout(config["results"])
LOCAL_CORES = None
if workflow.is_main_process and workflow.local_exec:
    LOCAL_CORES = usable_cores(workflow.resource_settings.cores)
    if LOCAL_CORES != workflow.resource_settings.cores:
        print(
            f"--cores {workflow.resource_settings.cores} is more than the {LOCAL_CORES} "
            f"CPUs here; using --cores {LOCAL_CORES} (more jobs than CPUs slow each other down)",
            file=sys.stderr,
        )
        workflow.global_resources["_cores"] = LOCAL_CORES
STUDY = study_name(workflow.overwrite_configfiles, CLONE, Path.cwd())
if workflow.is_main_process:
    try:
        check_owner(RESULTS, STUDY, replace=config["replace_results"])
    except ConfigError as err:
        sys.exit(str(err))
PLAN = build_plan(config)
DATASETS = replicates(config)
GPU_PER_JOB = int(requests_gpu(config["train"]["device"]))
FIGURE_NAMES = figures_for(config)


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*(\.t[0-9]+)?",
    job=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    figure="|".join(FIGURES),


try:
    verify_existing(RESULTS.dataset_files(name) for name in DATASETS)
except DatasetFileError as err:
    sys.exit(str(err))


def rerun_stale_results():
    """Have Snakemake rerun, as --forcerun would, the jobs whose datasets or job manifests
    results/ holds but the config or the run folders no longer match
    (lorasweep.planning.freshness), and, as --rerun-incomplete would, a job that Ctrl-C or a
    crash left marked incomplete: every output is written atomically and a rerun job reuses
    every run folder that passes its reuse check, so a plain rerun resumes. Nothing is deleted.
    Main process only."""
    if not workflow.is_main_process:
        return
    try:
        stale = stale_outputs(DATASETS, PLAN, RESULTS)
    except ManifestError as err:
        sys.exit(str(err))
    dry = workflow.output_settings.dryrun
    folder = unwritable_folder(RESULTS) if stale and not dry else None
    if folder is not None:
        sys.exit(unwritable_message(folder))
    action = "would rerun" if dry else "rerunning"
    for item in stale:
        print(f"{action} {item.describe()}", file=sys.stderr)
    forced = {item.paths[0] for item in stale}
    prepare_dag = workflow._prepare_dag

    def prepare_dag_resuming(*args, **kwargs):
        # The command line's DAG settings reach the workflow only after this file is parsed.
        settings = workflow.dag_settings
        settings.forcerun = frozenset({*settings.forcerun, *forced})
        settings.force_incomplete = True
        return prepare_dag(*args, **kwargs)

    workflow._prepare_dag = prepare_dag_resuming


rerun_stale_results()


def prepare_results_folder():
    """Before the first job: stop with one line if the results folder cannot be written, then
    record this study as the folder's (lorasweep.planning.study)."""
    folder = unwritable_folder(RESULTS)
    if folder is not None:
        sys.exit(unwritable_message(folder))
    claim(RESULTS, STUDY)


def check_local_cuda():
    """Fail before any job when CUDA is required here but missing. On a cluster the check runs
    in each training job instead, since the submitting host may have no GPU."""
    if (
        config["train"]["device"] == "cuda"
        and workflow.is_main_process
        and workflow.local_exec
    ):
        from lorasweep.training.devices import resolve_device

        resolve_device("cuda")


def stage_code(script):
    """A rule parameter that changes whenever the code ``script`` runs changes in what it
    computes (lorasweep.sources), so that Snakemake reruns the rule; Snakemake's own code
    trigger sees only the script file. Job processes, which do not decide what reruns, skip
    it."""
    if not workflow.is_main_process:
        return ""
    return script_code(CLONE / "workflow" / "scripts" / f"{script}.py")


def get_train_inputs(wildcards):
    names = PLAN.job_datasets(wildcards.job)
    return {
        "tensors": [RESULTS.dataset_tensors(n) for n in names],
        "meta": [RESULTS.dataset_meta(n) for n in names],
    }


def get_job_runs(wildcards):
    return JobRuns(run.as_dict() for run in PLAN.jobs[wildcards.job])


def get_figure_inputs(wildcards):
    return {name: RESULTS.table(name) for name in FIGURES[wildcards.figure].tables}


def caption_text(figure):
    """The figure's caption, shared by the Snakemake report and the HTML report."""
    path = CLONE / "workflow" / "report" / "captions" / f"{figure}.rst"
    return path.read_text(encoding="utf-8").strip()


def get_caption(wildcards):
    return caption_text(wildcards.figure)


def job_manifests():
    return [RESULTS.job_manifest(job) for job in PLAN.jobs]


def figure_files(ext):
    return [RESULTS.figure(name, ext) for name in FIGURE_NAMES]


def result_files():
    """Every declared result file, except the logs and the manifest. The run folders listed in
    the job manifests are added by the manifest script."""
    return [
        *[f for name in DATASETS for f in RESULTS.dataset_files(name)],
        *job_manifests(),
        *[RESULTS.table(name) for name in TABLES],
        *figure_files("pdf"),
        *figure_files("png"),
        RESULTS.report,
    ]


def final_outputs():
    return [*result_files(), RESULTS.manifest]
