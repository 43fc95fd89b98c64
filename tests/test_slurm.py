"""The workflow on a real (single-node, localhost) Slurm cluster, through profiles/slurm.

The cluster comes from ci/slurm/start.sh, which needs root. Without root these tests are
skipped with the reason; with LORASWEEP_REQUIRE_SLURM=1 (as .ci/run sets) they fail instead.
"""

import os
import re
import shutil
import subprocess

import pytest

from . import conftest
from .conftest import CONFIGS, REPO, snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.integration]

SLURM_ARGS = [
    "--profile", str(REPO / "profiles" / "slurm"),
    "--profile", str(REPO / "tests" / "profiles" / "slurm-ci"),
]  # fmt: skip


def unavailable(reason: str):
    if os.environ.get("LORASWEEP_REQUIRE_SLURM") == "1":
        pytest.fail(f"Slurm is required here but {reason}")
    pytest.skip(reason)


@pytest.fixture
def cluster(slurm_cluster):
    """The session's cluster (see conftest.slurm_cluster); skip, or fail where required."""
    if slurm_cluster is None:
        if os.geteuid() != 0:
            unavailable("starting Slurm needs root (ci/slurm/start.sh installs packages)")
        unavailable(getattr(conftest.slurm_cluster, "reason", "no cluster was started"))
    return slurm_cluster


def slurm_job_ids(output: str) -> list[str]:
    return re.findall(r"submitted with SLURM jobid (\d+)", output)


def sacct(job_ids: list[str]) -> dict[str, dict]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids),
         "--format=JobID,State,ReqTRES,Comment"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = {}
    for line in out.strip().splitlines():
        job_id, state, tres, comment = line.split("|", 3)
        rows[job_id] = {"state": state, "tres": tres, "comment": comment}
    return rows


def test_slurm_run_matches_a_local_run(cluster, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "slurm"
    for workdir in (local, remote):
        workdir.mkdir()
        shutil.copy(CONFIGS / "slurm.yaml", workdir / "slurm.yaml")
    snakemake(local, "--cores", "2", "--configfile", "slurm.yaml")
    result = snakemake(remote, *SLURM_ARGS, "--configfile", "slurm.yaml", timeout=900)
    output = result.stdout + result.stderr

    job_ids = slurm_job_ids(output)
    train_jobs = len(list((remote / "results" / "jobs").glob("*.json")))
    assert train_jobs == 2
    assert len(job_ids) == 1 + train_jobs, output[-3000:]
    accounting = sacct(job_ids)
    assert set(accounting) == set(job_ids), "a job is missing from sacct"
    assert all(row["state"] == "COMPLETED" for row in accounting.values()), accounting
    rules = [row["comment"].split("_wildcards_")[0] for row in accounting.values()]
    assert sorted(rules) == ["rule_dataset", "rule_train", "rule_train"]
    for row in accounting.values():
        requested_gpu = "gres/gpu=1" in row["tres"]
        assert requested_gpu == row["comment"].startswith("rule_train"), row

    for table in ("runs.csv", "epochs.csv", "geometry.csv", "subspace_pairs.csv"):
        expected = (local / "results" / "tables" / table).read_bytes()
        assert (remote / "results" / "tables" / table).read_bytes() == expected, table
    assert (remote / "results" / "report.html").exists()


def test_failing_slurm_job_is_reported_as_failed_not_hung(cluster, tmp_path):
    shutil.copy(CONFIGS / "slurm.yaml", tmp_path / "slurm.yaml")
    (tmp_path / "cuda.yaml").write_text("train:\n  device: cuda\n")
    result = snakemake(
        tmp_path, *SLURM_ARGS, "--retries", "0", "--configfile", "slurm.yaml", "cuda.yaml",
        check=False, timeout=600,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(r"Error in rule train", output), output[-3000:]
    failed = [row for row in sacct(slurm_job_ids(output)).values() if row["state"] == "FAILED"]
    assert failed and all(row["comment"].startswith("rule_train") for row in failed)
    logs = "".join(p.read_text() for p in (tmp_path / "results" / "logs" / "train").glob("*.log"))
    assert "train.device is 'cuda' but CUDA is not available" in logs
