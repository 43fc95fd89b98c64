"""A results folder knows which study wrote it, and a run that cannot write there says so."""

import shutil
import subprocess
import sys

import pytest
import yaml

from lorasweep.config import ConfigError
from lorasweep.layout import Layout
from lorasweep.planning.study import check_owner, claim, study_name, unwritable_folder

from .conftest import CONFIGS, REPO, snakemake


def test_a_study_is_named_by_its_first_config_file(tmp_path):
    assert study_name([], REPO, tmp_path) == "config/config.yaml"
    assert study_name([REPO / "config" / "paper.yaml"], REPO, tmp_path) == "config/paper.yaml"
    assert study_name(["my.yaml", "more.yaml"], REPO, tmp_path) == "my.yaml"
    assert study_name([tmp_path / "a" / "my.yaml"], REPO, tmp_path) == "a/my.yaml"


def test_a_folder_of_another_study_is_refused_unless_replaced(tmp_path):
    layout = Layout(str(tmp_path / "results"))
    check_owner(layout, "my.yaml")
    claim(layout, "config/config.yaml")
    check_owner(layout, "config/config.yaml")
    with pytest.raises(ConfigError) as refused:
        check_owner(layout, "my.yaml")
    message = str(refused.value)
    assert message.startswith("config error: results: ") and "\n" not in message
    assert "config/config.yaml" in message and "--config results=" in message
    assert "replace_results=true" in message
    check_owner(layout, "my.yaml", replace=True)
    claim(layout, "my.yaml")
    check_owner(layout, "my.yaml")


def test_an_unwritable_folder_is_found(tmp_path, monkeypatch):
    layout = Layout(str(tmp_path / "results"))
    assert unwritable_folder(layout) is None
    (tmp_path / "results" / "jobs").mkdir(parents=True)
    assert unwritable_folder(layout) is None

    def refuse(dir=None, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.TemporaryFile", refuse)
    assert unwritable_folder(layout) is not None


def copied_study(tiny_run, tmp_path, name):
    """tiny_run's results in ``tmp_path``, with the tiny config saved as ``name``."""
    shutil.copytree(tiny_run / "results", tmp_path / "results")
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / name)


def files_of(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.integration
def test_another_config_into_a_studys_folder_stops_before_any_job(tiny_run, tmp_path):
    copied_study(tiny_run, tmp_path, "other.yaml")
    results = tmp_path / "results"
    assert yaml.safe_load((results / "study.json").read_text()) == {"study": "tiny.yaml"}
    before = files_of(results)
    refused = snakemake(tmp_path, "-n", "--configfile", "other.yaml", check=False)
    assert refused.returncode != 0
    lines = [line for line in refused.stderr.splitlines() if "results" in line]
    assert lines == [
        "config error: results: results/ holds the study of tiny.yaml, not of other.yaml; "
        "choose another folder (results: in other.yaml, or --config results=<folder>), or "
        "replace that study with --config replace_results=true"
    ], refused.stderr[-2000:]
    assert files_of(results) == before
    snakemake(tmp_path, "-n", "--configfile", "other.yaml", "--config", "replace_results=true")
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    (tmp_path / "epochs.yaml").write_text(yaml.safe_dump({"train": {"epochs": 5}}))
    edited = snakemake(tmp_path, "-n", "--configfile", "tiny.yaml", "epochs.yaml")
    assert "would rerun results/jobs/" in edited.stderr


def read_only_results(*command):
    """``command`` with ./results mounted read-only (a user and mount namespace: works as root,
    where permission bits would not stop a write)."""
    mount = 'mount --bind results results && mount -o remount,bind,ro results && exec "$@"'
    return ["unshare", "-rm", "sh", "-c", mount, "sh", *command]


@pytest.mark.integration
def test_a_read_only_results_folder_with_a_changed_config_is_one_line(tiny_run, tmp_path):
    probe = subprocess.run(read_only_results("true"), cwd=tiny_run, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no user namespaces here to mount a folder read-only")
    copied_study(tiny_run, tmp_path, "tiny.yaml")
    (tmp_path / "epochs.yaml").write_text(yaml.safe_dump({"train": {"epochs": 5}}))
    before = files_of(tmp_path / "results")
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--cores", "1", "--configfile", "tiny.yaml", "epochs.yaml"]  # fmt: skip
    result = subprocess.run(
        read_only_results(*command), cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "OSError" not in result.stderr
    assert "removing" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "cannot create files" in line]
    assert lines == [
        "results: cannot create files in results/ (read-only or not ours), so no job could "
        "write its results; make it writable, or choose another folder with "
        "--config results=<folder>"
    ], result.stderr[-3000:]
    assert files_of(tmp_path / "results") == before
