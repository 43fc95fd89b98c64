from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "tests" / "configs"


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900):
    """Run the repository's workflow with ``workdir`` as working directory."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args]
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
