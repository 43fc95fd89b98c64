"""Faults during a run: divergence is recorded, kills lose nothing, nothing unsafe is loaded."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from .conftest import CONFIGS, REPO, snakemake

TINY = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())


@pytest.mark.integration
def test_diverging_runs_are_recorded_and_the_grid_completes(tmp_path):
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    (tmp_path / "explode.yaml").write_text(yaml.safe_dump({"grid": {"lr": [0.01, 1e30]}}))
    snakemake(tmp_path, "--cores", "2", "--configfile", "tiny.yaml", "explode.yaml")
    runs = pd.read_csv(tmp_path / "results" / "tables" / "runs.csv")
    exploded = runs[runs["lr"] == 1e30]
    assert len(exploded) == 16 and (exploded["status"] == "diverged").all()
    assert exploded["diverged_epoch"].between(1, TINY["train"]["epochs"]).all()
    assert exploded["final_val_loss"].isna().all()
    assert (runs[runs["lr"] != 1e30]["status"] == "ok").all()
    html = (tmp_path / "results" / "report.html").read_text()
    assert "16 diverged" in html and "Diverged runs" in html
    assert html.count("lr1e+30") >= 16
    visible = re.sub(r'src="data:[^"]+"', "", html.split("<h2>Diverged runs</h2>")[0])
    assert not re.search(r"\bnan\b", visible, re.I), "a diverged run leaked into a mean"


@pytest.mark.integration
def test_diverging_deep_runs_are_recorded_and_the_grid_completes(tiny_deep_run):
    runs = pd.read_csv(tiny_deep_run / "results" / "tables" / "runs.csv")
    exploded = runs[runs["lr"] == 1e30]
    assert len(exploded) == 2 and (exploded["status"] == "diverged").all()
    assert (exploded["dataset_kind"] == "mlp").all() and (exploded["targets"] == "all").all()
    assert exploded["final_val_loss"].isna().all()
    assert (runs[runs["lr"] != 1e30]["status"] == "ok").all()
    html = (tiny_deep_run / "results" / "report.html").read_text()
    assert "2 diverged" in html and "Diverged runs" in html
    visible = re.sub(r'src="data:[^"]+"', "", html.split("<h2>Diverged runs</h2>")[0])
    assert not re.search(r"\bnan\b", visible, re.I), "a diverged run leaked into a mean"


def kill_mid_training(workdir, args, fewer_than):
    """Start the workflow, SIGKILL it once some runs, fewer than ``fewer_than``, have finished,
    and check that a plain rerun refuses the interrupted jobs' output."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args]
    proc = subprocess.Popen(
        cmd, cwd=workdir, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    results = workdir / "results"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        finished_runs = list((results / "runs").glob("*/metrics.json"))
        if finished_runs and len(finished_runs) < fewer_than:
            break
        assert proc.poll() is None, "workflow finished before it could be interrupted"
        time.sleep(0.02)
    else:
        pytest.fail("training never started")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (results / "tables" / "runs.csv").exists()
    plain = snakemake(workdir, *args, check=False)
    assert plain.returncode != 0, "an interrupted job's output was taken as complete"
    assert re.search(r"incomplete|locked", plain.stderr + plain.stdout, re.I)


def assert_same_tables(reference, resumed):
    for table in ("runs.csv", "epochs.csv"):
        expected = (reference / "results" / "tables" / table).read_bytes()
        assert (resumed / "results" / "tables" / table).read_bytes() == expected, table


@pytest.mark.integration
def test_sigkill_mid_training_then_rerun_gives_the_uninterrupted_tables(tmp_path):
    slow = {"train": {"epochs": 150}, "runs_per_job": 6}
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    for workdir in (reference, interrupted):
        workdir.mkdir()
        shutil.copy(CONFIGS / "tiny.yaml", workdir / "tiny.yaml")
        (workdir / "slow.yaml").write_text(yaml.safe_dump(slow))
    args = ["--cores", "2", "--configfile", "tiny.yaml", "slow.yaml"]
    snakemake(reference, *args)
    kill_mid_training(interrupted, args, fewer_than=12)
    snakemake(interrupted, "--unlock", *args[2:])
    snakemake(interrupted, *args, "--rerun-incomplete")
    assert_same_tables(reference, interrupted)


@pytest.mark.integration
def test_sigkill_mid_training_of_deep_models_then_rerun_gives_the_uninterrupted_tables(
    tiny_deep_run, tmp_path
):
    shutil.copy(CONFIGS / "tiny_deep.yaml", tmp_path / "tiny_deep.yaml")
    args = ["--cores", "2", "--configfile", "tiny_deep.yaml"]
    runs = len(pd.read_csv(tiny_deep_run / "results" / "tables" / "runs.csv"))
    kill_mid_training(tmp_path, args, fewer_than=runs)
    snakemake(tmp_path, "--unlock", *args[2:])
    snakemake(tmp_path, *args, "--rerun-incomplete")
    assert_same_tables(tiny_deep_run, tmp_path)


SOURCES = [*(REPO / "src").rglob("*.py"), *(REPO / "workflow").rglob("*.py")]
RULES = list((REPO / "workflow" / "rules").glob("*.smk")) + [REPO / "Snakefile"]


def test_nothing_is_ever_unpickled():
    for path in SOURCES:
        text = path.read_text()
        assert not re.search(
            r"^\s*(import|from)\s+(pickle|dill|joblib|cloudpickle)\b", text, re.M
        ), path
        assert "allow_pickle=True" not in text, path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)
        assert "read_pickle" not in text, path


def test_no_config_value_reaches_a_shell():
    for path in RULES:
        assert not re.search(r"^\s*(shell|run):", path.read_text(), re.M), path
    for path in SOURCES:
        text = path.read_text()
        assert "shell=True" not in text and "os.system(" not in text, path


@pytest.mark.integration
def test_cuda_without_cuda_fails_before_any_job_and_dry_run_shows_gpu_jobs(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    (tmp_path / "cuda.yaml").write_text(yaml.safe_dump({"train": {"device": "cuda"}}))
    result = snakemake(
        tmp_path, "--cores", "1", "--configfile", "tiny.yaml", "cuda.yaml", check=False
    )
    assert result.returncode != 0
    assert "train.device is 'cuda' but CUDA is not available" in result.stderr
    assert not (tmp_path / "results").exists()
    plan = snakemake(tmp_path, "-n", "--configfile", "tiny.yaml", "cuda.yaml")
    assert plan.stdout.count("gpu=1") == len(list(re.finditer(r"^rule train:", plan.stdout, re.M)))
    assert plan.stdout.count("gpu=1") > 0
