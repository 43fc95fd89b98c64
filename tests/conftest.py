from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "tests" / "configs"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Train with one torch thread, as every training job does; the bitwise claims about the
    batched engine are made for that setting."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def snakemake(
    workdir: Path,
    *args: str,
    check: bool = True,
    timeout: int = 900,
    snakefile: Path = REPO / "Snakefile",
):
    """Run the repository's workflow (or the one of ``snakefile``) in ``workdir``."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and result.returncode != 0:
        output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{output}")
    return result


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny config run once through the whole workflow; tests read its outputs."""
    workdir = tmp_path_factory.mktemp("tiny")
    shutil.copy(CONFIGS / "tiny.yaml", workdir / "tiny.yaml")
    snakemake(workdir, "--cores", "2", "--configfile", "tiny.yaml")
    return workdir


@pytest.fixture(scope="session")
def tiny_deep_run(tmp_path_factory) -> Path:
    """The tiny deep config (a transformer and an MLP) run once through the whole workflow."""
    workdir = tmp_path_factory.mktemp("tiny-deep")
    shutil.copy(CONFIGS / "tiny_deep.yaml", workdir / "tiny_deep.yaml")
    snakemake(workdir, "--cores", "2", "--configfile", "tiny_deep.yaml")
    return workdir


@pytest.fixture(scope="session")
def figures_run(tmp_path_factory) -> Path:
    """The figures config (every registered figure, long and numbered dataset names) run once
    through the whole workflow."""
    workdir = tmp_path_factory.mktemp("figures")
    shutil.copy(CONFIGS / "figures.yaml", workdir / "figures.yaml")
    snakemake(workdir, "--cores", "2", "--configfile", "figures.yaml")
    return workdir


def required_in_ci(variable: str, reason: str) -> None:
    """Skip the calling test with ``reason``, or fail it where ``variable`` is ``1`` (``.ci/run``
    sets it): in CI a missing dependency is an error, not a skip."""
    if os.environ.get(variable) == "1":
        pytest.fail(f"{reason}, but {variable}=1 requires it", pytrace=False)
    pytest.skip(f"{reason} (set {variable}=1 to make this an error)")


def _slurm_wanted() -> bool:
    """Run the local Slurm cluster for this session: required (CI), or root with Slurm present."""
    if os.environ.get("LORASWEEP_REQUIRE_SLURM") == "1":
        return True
    return os.geteuid() == 0 and shutil.which("sinfo") is not None


def _slurm_controller_running() -> bool:
    """Whether ci/slurm/start.sh's controller is already up (another test session's)."""
    state = Path(os.environ.get("SLURM_CI_STATE", "/tmp/lorasweep-slurm"))
    try:
        os.kill(int((state / "run" / "slurmctld.pid").read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture(scope="session", autouse=True)
def slurm_cluster():
    """The single-node Slurm cluster of ci/slurm/start.sh, up for the whole session.

    Besides serving the Slurm tests, a live controller keeps every other Snakemake start-up
    fast: snakemake-executor-plugin-slurm 2.8.0 runs ``scontrol show config`` (10 s timeout)
    whenever Slurm's client tools are installed, and with no controller it waits the full 10 s.
    Yields the partition name, or None when no cluster could be started (with the reason in
    ``slurm_cluster.reason``). A cluster that was already up is left up at the end, so a
    second test session on the same machine does not stop the first one's.
    """
    if not _slurm_wanted():
        slurm_cluster.reason = "Slurm is not installed here, or this is not root"
        yield None
        return
    found_running = _slurm_controller_running()
    start = subprocess.run(
        ["bash", str(REPO / "ci" / "slurm" / "start.sh")],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if start.returncode != 0:
        slurm_cluster.reason = f"ci/slurm/start.sh failed:\n{start.stderr[-3000:]}"
        yield None
        return
    try:
        yield start.stdout.strip()
    finally:
        if not found_running:
            subprocess.run(["bash", str(REPO / "ci" / "slurm" / "stop.sh")], timeout=120)
