"""Faults during a run: divergence is recorded, kills lose nothing, nothing unsafe is loaded,
and a damaged run folder is retrained rather than read."""

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

from lorasweep.jobs.integrity import integrity_problem
from lorasweep.jobs.job import run_job
from lorasweep.planning.runs import RunSpec
from lorasweep.tables.runs import IncompleteRunError, iter_run_dirs
from lorasweep.tasks import storage, synthetic
from lorasweep.training.loop import gap_to_optimal, train_run

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
    and check that a plain rerun refuses to start while the killed run's lock remains."""
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
    assert plain.returncode != 0, "a rerun started beside the killed run's lock"
    assert re.search(r"locked", plain.stderr + plain.stdout, re.I)


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
    snakemake(interrupted, *args)
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
    snakemake(tmp_path, *args)
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


DIVERGING = {
    "every LoRA run": {"grid": {"lr": [1e30]}},
    "every run": {"grid": {"lr": [1e30]}, "full_finetune": {"lr": [1e30]}},
}


@pytest.mark.integration
@pytest.mark.parametrize("case", DIVERGING, ids=list(DIVERGING))
def test_a_config_whose_runs_all_diverge_still_gets_its_figures_and_report(tmp_path, case):
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    (tmp_path / "explode.yaml").write_text(yaml.safe_dump({**DIVERGING[case], "runs_per_job": 32}))
    snakemake(tmp_path, "--cores", "2", "--configfile", "tiny.yaml", "explode.yaml")
    results = tmp_path / "results"
    runs = pd.read_csv(results / "tables" / "runs.csv")
    assert (runs[runs["method"] == "lora"]["status"] == "diverged").all()
    logs = {log.stem: log.read_text() for log in (results / "logs" / "figures").glob("*.log")}
    assert {"amplification", "loss_vs_rank"} <= set(logs)
    lora_only = ["amplification", "loss_vs_rank"] if case == "every LoRA run" else list(logs)
    for name in lora_only:
        assert "no data (" in logs[name], name
    for name in logs:
        assert (results / "figures" / f"{name}.png").is_file()
    html = (results / "report.html").read_text()
    diverged = html.split("<h2>Diverged runs</h2>")[1]
    assert all(run_id in diverged for run_id in runs[runs["status"] == "diverged"]["run_id"])
    if case == "every run":
        assert "every run diverged." in html
        assert "every one of its 18 runs diverged" in html
    else:
        assert "full fine-tuning reaches" in html and "every LoRA run diverged." in html


def noise_free(kind: str) -> synthetic.DatasetSpec:
    return synthetic.DatasetSpec(name=kind, kind=kind, in_features=8, out_features=6,
                                 n_train=64, n_val=32, noise_std=0.0,
                                 task_rank=2 if kind == "lowrank" else 0)  # fmt: skip


@pytest.mark.parametrize("kind", ["lowrank", "noise"])
def test_noise_free_tasks_have_a_gap_wherever_the_optimum_is_not_zero(kind):
    data = synthetic.generate(noise_free(kind))
    truth = synthetic.ground_truth(data)
    common = dict(dataset=kind, seed=0, lr=0.01, epochs=2, batch_size=None, bias="none",
                  device="cpu")  # fmt: skip
    full = RunSpec(method="full", **common)
    lora = RunSpec(method="lora", rank=2, alpha=4.0, scaling="standard", init="kaiming", **common)
    for spec in (full, lora):
        summary = train_run(spec, data).summary(truth)
        optimum, gap = summary["optimal_val_loss"], summary["gap_to_optimal"]
        assert summary["status"] == "ok"
        if spec.method == "full" or kind == "lowrank":
            assert optimum == 0.0 and gap is None, (spec.method, optimum, gap)
        else:
            assert optimum > 0 and gap == pytest.approx(summary["final_val_loss"] / optimum - 1)
    assert gap_to_optimal(0.3, 0.1) == pytest.approx(2.0) and gap_to_optimal(0.3, 0.0) is None


@pytest.mark.integration
def test_noise_free_lowrank_and_noise_datasets_run_to_the_report(tmp_path):
    datasets = [
        {**TINY["datasets"][0], "name": "lowrank0", "noise_std": 0.0},
        {"name": "noise0", "kind": "noise", "in_features": 16, "out_features": 12,
         "noise_std": 0.0, "n_train": 256, "n_val": 64},
    ]  # fmt: skip
    override = {"datasets": datasets, "runs_per_job": 32, "grid": {"alpha": [8]}}
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    (tmp_path / "sigma0.yaml").write_text(yaml.safe_dump(override))
    snakemake(tmp_path, "--cores", "2", "--configfile", "tiny.yaml", "sigma0.yaml")
    runs = pd.read_csv(tmp_path / "results" / "tables" / "runs.csv")
    assert (runs["status"] == "ok").all() and set(runs["dataset"]) == {"lowrank0", "noise0"}
    exact = (runs["method"] == "full") | ((runs["dataset"] == "lowrank0") & (runs["rank"] >= 2))
    assert (runs.loc[exact, "optimal_val_loss"] == 0).all()
    assert runs.loc[exact, "gap_to_optimal"].isna().all()
    assert runs.loc[~exact, "gap_to_optimal"].notna().all() and (~exact).any()
    html = (tmp_path / "results" / "report.html").read_text()
    visible = re.sub(r'src="data:[^"]+"', "", html)
    assert not re.search(r"\binf\b", visible, re.I)


def trained_run(tmp_path):
    """One finished run of a small dataset: (run_job arguments, run folder)."""
    data = synthetic.generate(noise_free("lowrank"))
    files = {"lowrank": (tmp_path / "d.safetensors", tmp_path / "d.json")}
    storage.save(data, *files["lowrank"])
    spec = RunSpec(dataset="lowrank", method="lora", seed=0, lr=0.01, epochs=2, batch_size=32,
                   bias="none", device="cpu", rank=2, alpha=4.0, scaling="standard",
                   init="kaiming")  # fmt: skip
    args = ([spec.as_dict()], files, tmp_path / "runs", tmp_path / "jobs" / "a.json")
    assert run_job(*args, progress=False) == {"trained": 1, "reused": 0}
    return args, tmp_path / "runs" / spec.run_id


def folder_bytes(run_dir):
    """Every file of a run folder but timing.json, by path inside it."""
    return {
        p.relative_to(run_dir).as_posix(): p.read_bytes()
        for p in run_dir.rglob("*")
        if p.is_file() and p.name != "timing.json"
    }


DAMAGE = {
    "edited metrics": lambda d: (d / "metrics.json").write_text(
        (d / "metrics.json").read_text().replace('"status": "ok"', '"status": "OK"')
    ),
    "truncated weights": lambda d: (d / "weights.safetensors").write_bytes(
        (d / "weights.safetensors").read_bytes()[:100]
    ),
    "missing epochs": lambda d: (d / "epochs.csv").unlink(),
    "missing checksums": lambda d: (d / "checksums.json").unlink(),
    "garbage timing": lambda d: (d / "timing.json").write_text("{"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_run_folder_is_retrained_not_reused_and_the_tables_refuse_it(
    tmp_path, damage, capsys
):
    args, run_dir = trained_run(tmp_path)
    intact = folder_bytes(run_dir)
    assert integrity_problem(run_dir) is None
    DAMAGE[damage](run_dir)
    problem = integrity_problem(run_dir)
    assert problem
    with pytest.raises(IncompleteRunError) as refused:
        list(iter_run_dirs([args[3]]))
    message = str(refused.value)
    assert str(run_dir) in message and problem in message and "\n" not in message
    capsys.readouterr()
    assert run_job(*args, progress=False) == {"trained": 1, "reused": 0}
    assert f"{run_dir.name}: retraining: {problem}" in capsys.readouterr().out
    assert folder_bytes(run_dir) == intact


@pytest.mark.parametrize("content", ["{not json", '{"runs": 3, "runs_dir": "../runs"}', ""])
def test_an_unreadable_job_manifest_is_one_line_naming_it(tmp_path, content):
    manifest = tmp_path / "jobs" / "part1of1.json"
    manifest.parent.mkdir()
    manifest.write_text(content)
    with pytest.raises(IncompleteRunError) as refused:
        list(iter_run_dirs([manifest]))
    message = str(refused.value)
    assert message.startswith(f"{manifest}: not ") and "\n" not in message


@pytest.mark.parametrize("leftover", ["file", "symlink", "folder", "interrupted swap"])
def test_retraining_over_a_file_or_symlink_leaves_no_stale_entry(tmp_path, leftover):
    args, run_dir = trained_run(tmp_path)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("not the pipeline's")
    if leftover == "interrupted swap":
        run_dir.rename(run_dir.with_name(f".{run_dir.name}.stale"))
    else:
        shutil.rmtree(run_dir)
    if leftover == "file":
        run_dir.write_text("a file where the run folder was")
    elif leftover == "symlink":
        run_dir.symlink_to(target, target_is_directory=True)
    elif leftover == "folder":
        run_dir.mkdir()
    assert run_job(*args, progress=False) == {"trained": 1, "reused": 0}
    assert run_dir.is_dir() and not run_dir.is_symlink()
    assert integrity_problem(run_dir) is None
    assert sorted(p.name for p in run_dir.parent.iterdir()) == [run_dir.name]
    assert (target / "keep.txt").read_text() == "not the pipeline's"


@pytest.mark.integration
def test_edited_truncated_or_incomplete_run_folders_are_retrained_by_the_next_run(
    tiny_run, tmp_path
):
    shutil.copytree(tiny_run / "results", tmp_path / "results")
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    runs = tmp_path / "results" / "runs"
    damaged = sorted(runs.iterdir())[:3]
    for run_dir, damage in zip(damaged, ["edited metrics", "truncated weights", "missing epochs"],
                               strict=True):  # fmt: skip
        DAMAGE[damage](run_dir)
    result = snakemake(tmp_path, "--cores", "2", "--configfile", "tiny.yaml")
    assert "rerunning results/jobs/" in result.stderr, result.stderr[-3000:]
    logs = "".join(p.read_text() for p in (tmp_path / "results" / "logs" / "train").glob("*"))
    assert logs.count(": retraining: ") == 3
    for run_dir in damaged:
        assert f"{run_dir.name}: retraining: " in logs
        original = tiny_run / "results" / "runs" / run_dir.name
        for name in ("metrics.json", "weights.safetensors", "epochs.csv", "checksums.json"):
            assert (run_dir / name).read_bytes() == (original / name).read_bytes(), name
    for table in ("runs.csv", "epochs.csv", "geometry.csv", "subspace_pairs.csv"):
        ours = (tmp_path / "results" / "tables" / table).read_bytes()
        assert ours == (tiny_run / "results" / "tables" / table).read_bytes(), table
