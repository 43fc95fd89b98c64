import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from lorasweep.config import (
    ConfigError,
    check_resources,
    check_semantics,
    describe_schema_error,
    parse_strings,
)
from lorasweep.choices import GEOMETRY_FIGURES
from lorasweep.datasets import DatasetFileError, verify_existing
from lorasweep.plan import build_plan, figures_for, requests_gpu


def validated(config):
    """Text read as numbers where meant, schema (with defaults filled in), cross-key checks
    and, in the main process, the resource estimates; one-line errors."""
    parse_strings(config)
    try:
        validate(config, "../schemas/config.schema.yaml")
    except WorkflowError as err:
        cause = err.__context__
        if not hasattr(cause, "absolute_path"):
            raise
        raise describe_schema_error(cause) from None
    check_semantics(config)
    if workflow.is_main_process:
        check_resources(config)
    return config


try:
    validated(config)
except ConfigError as err:
    sys.exit(str(err))
RESULTS = config["results"]
LOCAL_CORES = (
    workflow.resource_settings.cores
    if workflow.is_main_process and workflow.local_exec
    else None
)
PLAN = build_plan(config, workers=LOCAL_CORES)
DATASETS = {d["name"]: d for d in config["datasets"]}
GPU_PER_JOB = int(requests_gpu(config["train"]["device"]))
FIGURE_NAMES = figures_for(config)


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    job=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def dataset_files(name):
    return [
        f"{RESULTS}/datasets/{name}.safetensors",
        f"{RESULTS}/datasets/{name}.json",
    ]


try:
    verify_existing(dataset_files(name) for name in DATASETS)
except DatasetFileError as err:
    sys.exit(str(err))


def check_local_cuda():
    """Fail before any job when CUDA is required here but missing. On a cluster the check runs
    in each training job instead, since the submitting host may have no GPU."""
    if (
        config["train"]["device"] == "cuda"
        and workflow.is_main_process
        and workflow.local_exec
    ):
        from lorasweep.training import resolve_device

        resolve_device("cuda")


def job_inputs(wildcards):
    names = PLAN.job_datasets(wildcards.job)
    return {
        "tensors": [dataset_files(n)[0] for n in names],
        "meta": [dataset_files(n)[1] for n in names],
    }


def job_runs(wildcards):
    return [run.as_dict() for run in PLAN.jobs[wildcards.job]]


def job_manifests():
    return [f"{RESULTS}/jobs/{job}.json" for job in PLAN.jobs]


def figure_files(ext):
    return [f"{RESULTS}/figures/{name}.{ext}" for name in FIGURE_NAMES]


def figure_inputs(name):
    inputs = {
        "runs": f"{RESULTS}/tables/runs.csv",
        "epochs": f"{RESULTS}/tables/epochs.csv",
    }
    if name in GEOMETRY_FIGURES:
        inputs["geometry"] = f"{RESULTS}/tables/geometry.csv"
        inputs["pairs"] = f"{RESULTS}/tables/subspace_pairs.csv"
    return inputs


TABLES = ["runs", "epochs", "timings", "provenance", "geometry", "subspace_pairs"]


def result_files():
    """Every declared result file, except the logs and the manifest. The run folders listed in
    the job manifests are added by the manifest script."""
    return [
        *[f for name in DATASETS for f in dataset_files(name)],
        *job_manifests(),
        *[f"{RESULTS}/tables/{name}.csv" for name in TABLES],
        *figure_files("pdf"),
        *figure_files("png"),
        f"{RESULTS}/report.html",
    ]


def final_outputs():
    return [*result_files(), f"{RESULTS}/manifest.tsv"]


def caption_text(figure):
    """The figure's caption, shared by the Snakemake report and the HTML report."""
    path = Path(workflow.basedir) / "workflow" / "report" / "captions" / f"{figure}.rst"
    return path.read_text(encoding="utf-8").strip()
