"""Which code a workflow runs: always its own clone's, whatever ``lorasweep`` is installed, and a
run folder is retrained exactly when the code that computed it changed."""

import shutil

import pytest

from lorasweep.logs import ForeignPackageError, check_package_source

from .conftest import CONFIGS, REPO, snakemake

pytestmark = pytest.mark.integration

BROKEN = "\nraise RuntimeError('code of the other clone')\n"


def clone(destination):
    """A copy of this repository's workflow and package, as a second clone would hold."""
    destination.mkdir(parents=True)
    for name in ("Snakefile", "workflow", "src", "config"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("*.pyc"))
        else:
            shutil.copy(source, destination / name)
    return destination


def test_package_check_refuses_a_package_from_another_clone(tmp_path):
    check_package_source(REPO)
    with pytest.raises(ForeignPackageError, match="not from this workflow's clone"):
        check_package_source(tmp_path)


def test_jobs_run_the_code_of_the_clone_they_run_from(tmp_path):
    """The environment's lorasweep is installed from REPO; a clone whose training code raises
    must fail in its training jobs, never compute runs with REPO's code."""
    other = clone(tmp_path / "other")
    loop = other / "src" / "lorasweep" / "training" / "loop.py"
    loop.write_text(loop.read_text() + BROKEN)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(CONFIGS / "tiny.yaml", work / "tiny.yaml")
    result = snakemake(
        work, "--cores", "2", "--configfile", "tiny.yaml", snakefile=other / "Snakefile",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    logs = "".join(p.read_text() for p in (work / "results" / "logs" / "train").glob("*.log"))
    assert "code of the other clone" in logs
    runs = work / "results" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_a_foreign_package_on_the_path_is_not_used(tmp_path, monkeypatch):
    """A broken lorasweep ahead of the installed one on PYTHONPATH does not reach any job."""
    foreign = clone(tmp_path / "foreign") / "src"
    loop = foreign / "lorasweep" / "training" / "loop.py"
    loop.write_text(loop.read_text() + BROKEN)
    monkeypatch.setenv("PYTHONPATH", str(foreign))
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(CONFIGS / "tiny.yaml", work / "tiny.yaml")
    snakemake(work, "--cores", "2", "--configfile", "tiny.yaml")
    assert (work / "results" / "report.html").is_file()


def _run_stamps(results):
    return {p.parent.name: p.stat().st_mtime_ns for p in (results / "runs").glob("*/metrics.json")}


def _force_training(workdir, other):
    return snakemake(
        workdir, "--cores", "2", "--configfile", "tiny.yaml", "--forcerun", "train",
        snakefile=other / "Snakefile",
    )  # fmt: skip


def test_editing_figures_report_or_planning_reuses_every_run(tiny_run, tmp_path):
    other = clone(tmp_path / "other")
    package = other / "src" / "lorasweep"
    for edited in ("figures/loss.py", "report/html.py", "planning/grouping.py",
                   "analysis/statistics.py", "tables/runs.py"):  # fmt: skip
        path = package / edited
        path.write_text(path.read_text() + "\n# edited\n")
    shutil.copytree(tiny_run / "results", tmp_path / "results")
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    before = _run_stamps(tmp_path / "results")
    result = _force_training(tmp_path, other)
    assert _run_stamps(tmp_path / "results") == before, result.stderr[-2000:]


def test_editing_the_training_code_retrains_every_run(tiny_run, tmp_path):
    other = clone(tmp_path / "other")
    path = other / "src" / "lorasweep" / "training" / "loop.py"
    path.write_text(path.read_text() + "\nEDITED = True\n")
    shutil.copytree(tiny_run / "results", tmp_path / "results")
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    before = _run_stamps(tmp_path / "results")
    _force_training(tmp_path, other)
    after = _run_stamps(tmp_path / "results")
    assert set(after) == set(before)
    assert all(after[run] > before[run] for run in before)


def _planned_rules(workdir, other):
    """The rules a dry run of the tiny config in ``workdir`` with ``other``'s code would run."""
    result = snakemake(
        workdir, "-n", "--quiet", "rules", "--cores", "2", "--configfile", "tiny.yaml",
        snakefile=other / "Snakefile",
    )  # fmt: skip
    planned = set()
    for line in result.stdout.splitlines():
        words = line.split()
        if len(words) == 2 and words[1].isdigit() and words[0] not in {"total", "job"}:
            planned.add(words[0])
    return planned


def test_a_stage_reruns_when_its_code_changes_what_it_computes_and_not_for_a_docstring(
    tiny_run, tmp_path
):
    """Snakemake's own code trigger sees only a rule's script; each stage's rule also has the
    digest of the package code its script imports, docstrings left out."""
    shutil.copytree(tiny_run, tmp_path / "work", symlinks=True)
    work, other = tmp_path / "work", clone(tmp_path / "other")
    assert _planned_rules(work, other) == set()
    summary = other / "src" / "lorasweep" / "analysis" / "summary.py"
    text = summary.read_text()
    summary.write_text(text.replace('"""The derived tables', '"""Edited: the derived tables', 1))
    assert _planned_rules(work, other) == set()
    summary.write_text(text + "\nEDITED = True\n")
    planned = _planned_rules(work, other)
    assert {"summary", "report"} <= planned and not planned & {"train", "dataset", "tables"}
    summary.write_text(text)
    loop = other / "src" / "lorasweep" / "training" / "loop.py"
    loop.write_text(loop.read_text() + "\nEDITED = True\n")
    assert "train" in _planned_rules(work, other)
