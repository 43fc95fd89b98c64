"""What a job and a run print on the console: one line for a full disk, a changed run folder
or Ctrl-C instead of a traceback; progress of long training jobs; short params-change notes;
no more jobs or threads than CPUs."""

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from lorasweep.io import read_json
from lorasweep.jobs import job as job_module
from lorasweep.jobs.job import run_job
from lorasweep.planning.cpus import available_cpus, usable_cores
from lorasweep.planning.runs import JobRuns, RunSpec

from .conftest import CONFIGS, REPO, snakemake
from .test_faults import DAMAGE, trained_run


def job_script(tmp_path, body: str) -> subprocess.CompletedProcess:
    """Run ``body`` inside :func:`lorasweep.logs.workflow_script`, as a job's script runs."""
    program = textwrap.dedent(
        f"""
        import types
        from lorasweep.logs import workflow_script
        snakemake = types.SimpleNamespace(
            scriptdir={str(REPO / "workflow" / "scripts")!r}, log=[{str(tmp_path / "job.log")!r}],
            rule="train", wildcards=["part1of1"])
        with workflow_script(snakemake):
        """
    ) + textwrap.indent(textwrap.dedent(body), "    ")
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=300
    )


def test_a_full_disk_is_one_line_naming_the_file_and_the_rerun_finishes(tmp_path):
    args, run_dir = trained_run(tmp_path)
    (tmp_path / "args.json").write_text(
        json.dumps([args[0], {"lowrank": list(map(str, args[1]["lowrank"]))}])
    )
    body = f"""
    import errno, json, os
    from lorasweep.jobs.job import run_job

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    os.fsync = full
    runs, files = json.load(open({str(tmp_path / "args.json")!r}))
    run_job(runs, files, {str(tmp_path / "runs")!r}, {str(args[3])!r}, reuse=False)
    """  # fmt: skip
    result = job_script(tmp_path, body)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{run_dir}/"), result.stderr
    assert ".tmp" not in lines[0]
    assert lines[0].endswith(
        ": No space left on device; free some space on its disk and run the same command again "
        "(what is finished is kept and reused)"
    )
    assert "Traceback" in (tmp_path / "job.log").read_text()
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]
    assert run_job(*args, progress=False) == {"trained": 0, "reused": 1}


def test_a_run_folder_changed_under_a_running_pipeline_is_its_one_line(tmp_path):
    args, run_dir = trained_run(tmp_path)
    DAMAGE["truncated weights"](run_dir)
    result = job_script(
        tmp_path, f"from lorasweep.tables.runs import collect\ncollect([{str(args[3])!r}])\n"
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(run_dir)), result.stderr
    assert "Traceback" not in result.stderr


def test_ctrl_c_in_a_job_is_one_line_saying_what_it_kept(tmp_path, monkeypatch):
    args, _ = trained_run(tmp_path)
    result = job_script(tmp_path, "raise KeyboardInterrupt('3 of 8 runs trained and kept')\n")
    assert result.returncode == 130
    assert result.stderr.splitlines() == [
        "train part1of1: interrupted (3 of 8 runs trained and kept); run the same command "
        "again to resume"
    ]

    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(job_module, "train_cohort", interrupted)
    with pytest.raises(KeyboardInterrupt, match="^0 of 1 runs trained and kept$"):
        run_job(*args, reuse=False, progress=False)


def specs(n):
    return [
        RunSpec(dataset="lowrank", method="lora", seed=seed, lr=0.01, epochs=2, batch_size=32,
                bias="none", device="cpu", rank=2, alpha=4.0, scaling="standard", init="kaiming")
        for seed in range(n)
    ]  # fmt: skip


def test_training_progress_and_its_eta_reach_the_console(tmp_path, monkeypatch):
    args, _ = trained_run(tmp_path)
    runs = [s.as_dict() for s in specs(3)]
    monkeypatch.setattr(job_module, "CONSOLE_INTERVAL_S", 0.0)
    monkeypatch.setattr(job_module, "plan_cohorts", lambda todo, *_: [[s] for s in todo])
    console = io.StringIO()
    run_job(runs, *args[1:], reuse=True, progress=False, console=console)
    lines = console.getvalue().splitlines()
    assert lines[0] == "a: training 2 runs in 2 cohorts, reusing 1"
    assert lines[1].startswith("a: 1/2 runs, 1/2 cohorts, ") and " ETA " in lines[1]
    assert lines[2].startswith("a: trained 2, reused 1 in ") and len(lines) == 3


def test_a_jobs_runs_param_is_left_to_its_short_digest_in_snakemakes_params_check():
    from snakemake.persistence import UNREPRESENTABLE, PersistenceBase

    runs = [s.as_dict() for s in specs(200)]
    param = JobRuns(runs)
    assert PersistenceBase._serialize_param_builtin(None, param) is UNREPRESENTABLE
    assert len(param.digest()) == 16 and param.digest() == JobRuns(runs).digest()
    moved = JobRuns(runs[:-1])
    changed = JobRuns([*runs[:-1], {**runs[-1], "lr": 0.02}])
    assert len({param.digest(), moved.digest(), changed.digest()}) == 3


def test_cores_beyond_the_cpus_here_are_capped_and_so_are_a_jobs_threads(tmp_path, monkeypatch):
    assert usable_cores(64, 2) == 2 and usable_cores(1, 2) == 1 and usable_cores(None) is None
    assert usable_cores(10**6) == available_cpus()
    args, run_dir = trained_run(tmp_path)
    monkeypatch.setattr(job_module, "available_cpus", lambda: 1)
    threads = torch.get_num_threads()
    try:
        run_job(*args, threads=3, reuse=False, progress=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert read_json(run_dir / "provenance.json")["torch_threads"] == 1


@pytest.mark.integration
def test_ctrl_c_ends_with_one_line_on_what_finished_and_a_plain_rerun_resumes(tmp_path):
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    (tmp_path / "slow.yaml").write_text("train: {epochs: 150}\nruns_per_job: 6\n")
    args = ["--cores", "1000", "--configfile", "tiny.yaml", "slow.yaml"]
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args]
    log = (tmp_path / "console.txt").open("w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, start_new_session=True, stdout=log, stderr=subprocess.STDOUT, env=env
    )
    runs = tmp_path / "results" / "runs"
    deadline = time.monotonic() + 600
    while not (runs.is_dir() and [p for p in runs.iterdir() if not p.name.startswith(".")]):
        assert proc.poll() is None and time.monotonic() < deadline, "no run finished in time"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=300)
    log.close()
    output = (tmp_path / "console.txt").read_text()
    assert proc.returncode != 0 and "Traceback" not in output, output[-3000:]
    lines = output.splitlines()
    after = lines[next(i for i, line in enumerate(lines) if "on user request" in line) + 1 :]
    assert all(
        re.fullmatch(r"train part\d+of\d+: interrupted \(\d+ of \d+ runs trained and kept\); "
                     r"run the same command again to resume", line)
        or line.startswith(("Complete log", "Elapsed time", "part", "train part"))
        for line in after[:-1]
    ), after  # fmt: skip
    assert re.fullmatch(
        r"interrupted: \d+ of \d+ training jobs and [1-9]\d* of 18 runs are finished and kept; "
        "run the same command again to resume",
        after[-1],
    ), after[-1]
    assert f"using --cores {available_cpus()}" in output
    assert f"Provided cores: {available_cpus()}" in output
    assert re.search(r"^part\d+of\d+: training \d+ runs in \d+ cohorts", output, re.M)
    kept = {p: p.stat().st_mtime_ns for p in runs.glob("[!.]*/metrics.json")}
    resumed = snakemake(tmp_path, *args)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept, "finished runs were retrained"
    assert resumed.returncode == 0
    changed = snakemake(tmp_path, *args, "-n", "--config", "train={epochs: 151}")
    lines = (changed.stdout + changed.stderr).splitlines()
    notes = [line for line in lines if "Params have changed" in line or "would rerun" in line]
    assert notes and max(map(len, notes)) < 300, max(notes, key=len)[:3000]
