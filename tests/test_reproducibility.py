"""Same config, same machine: byte-identical results and manifest whatever the core count;
wall-clock timings live apart; results follow the config even without Snakemake's records."""

import os
import re
import shutil
import stat
import subprocess

import pandas as pd
import pytest
import yaml

from lorasweep.figures.registry import figures_for
from lorasweep.io import current_umask, load_metadata, manifest, read_json, write_text
from lorasweep.layout import WALL_CLOCK
from lorasweep.tables.geometry import geometry_tables
from lorasweep.tasks import storage

from .conftest import CONFIGS, REPO, snakemake
from .test_faults import TINY, trained_run

pytestmark = pytest.mark.integration

TIMING_FILES = set(WALL_CLOCK)


def result_hashes(workdir):
    table = manifest([workdir / "results"], root=workdir / "results")
    table = table[~table["path"].str.startswith("logs/")]
    return dict(zip(table["path"], table["sha256"], strict=True))


@pytest.mark.parametrize("config", ["tiny", "tiny_deep"])
def test_two_clean_runs_are_byte_identical(config, request, tmp_path):
    first_run = request.getfixturevalue(f"{config}_run")
    shutil.copy(CONFIGS / f"{config}.yaml", tmp_path / f"{config}.yaml")
    snakemake(tmp_path, "--cores", "2", "--configfile", f"{config}.yaml")
    first, second = result_hashes(first_run), result_hashes(tmp_path)
    assert first.keys() == second.keys()
    compared = [p for p in first if p.rsplit("/", 1)[-1] not in TIMING_FILES]
    assert "manifest.tsv" in compared
    kinds = {p.rsplit(".", 1)[-1] for p in compared}
    assert {"csv", "json", "safetensors", "png", "pdf"} <= kinds
    differing = [p for p in compared if first[p] != second[p]]
    assert not differing, f"differ between clean runs: {differing[:10]}"
    peft_files = {p.rsplit("/", 1)[-1] for p in compared if "/peft/" in p}
    single_layer = {"adapter_config.json", "adapter_model.safetensors"}
    assert peft_files == (single_layer if config == "tiny" else set()), "deep runs write no peft/"
    explorers = [
        explorer_section((folder / "results" / "report.html").read_text(encoding="utf-8"))
        for folder in (first_run, tmp_path)
    ]
    assert explorers[0] == explorers[1], "the runs explorer differs between clean runs"


def explorer_section(html: str) -> str:
    """The runs explorer of a report, which holds no wall-clock times (the efficiency table's
    time per epoch is why report.html as a whole is compared apart)."""
    start = html.index('<section id="runs-explorer">')
    return html[start : html.index("</section>", start)]


def test_manifest_lists_every_result_file_but_the_wall_clock_ones(tiny_run):
    listed = (tiny_run / "results" / "manifest.tsv").read_text().splitlines()
    assert listed[0] == "path\tbytes\tsha256"
    paths = {line.split("\t")[0] for line in listed[1:]}
    on_disk = {p for p in result_hashes(tiny_run) if p.rsplit("/", 1)[-1] not in TIMING_FILES}
    assert paths == on_disk - {"manifest.tsv"}
    assert any(p.startswith("jobs/") for p in paths) and any("/runs/" in f"/{p}" for p in paths)


def test_adapters_carry_their_settings(tiny_run):
    weights = next((tiny_run / "results" / "runs").glob("*_r4_a8_rslora_*_s0/weights.safetensors"))
    meta = load_metadata(weights)
    assert meta["rank"] == 4 and meta["scaling_rule"] == "rslora"
    assert meta["scaling"] == pytest.approx(8 / 2)


def test_result_files_get_the_mode_the_umask_gives(tiny_run, tmp_path):
    mask = current_umask()
    for path in [*(tiny_run / "results").rglob("*")]:
        if "logs" not in path.parts:
            expected = (0o777 if path.is_dir() else 0o666) & ~mask
            assert stat.S_IMODE(path.stat().st_mode) == expected, path
    previous = os.umask(0o002)
    try:
        write_text(tmp_path / "a.txt", "x")
        _, run_dir = trained_run(tmp_path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o664
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o775
    for path in run_dir.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o775 if path.is_dir() else 0o664), path


def test_runs_record_the_workflows_commit_when_run_from_elsewhere(tiny_run):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the repository is not a git checkout")
    assert REPO not in tiny_run.parents
    for provenance in (tiny_run / "results" / "runs").glob("*/provenance.json"):
        assert read_json(provenance)["git_commit"] == head.stdout.strip(), provenance


def test_geometry_rows_do_not_depend_on_the_order_of_run_folders(tiny_run):
    results = tiny_run / "results"
    run_dirs = sorted((results / "runs").iterdir())
    data = {"tiny": storage.load(results / "datasets" / "tiny.safetensors",
                                 results / "datasets" / "tiny.json")}  # fmt: skip
    forward, backward = geometry_tables(run_dirs, data), geometry_tables(run_dirs[::-1], data)
    for ours, theirs in zip(forward, backward, strict=True):
        pd.testing.assert_frame_equal(ours, theirs)


def test_one_core_and_two_cores_give_the_same_jobs_bytes_and_manifest(tiny_run, tmp_path):
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    snakemake(tmp_path, "--cores", "1", "--configfile", "tiny.yaml")
    two, one = result_hashes(tiny_run), result_hashes(tmp_path)
    assert two.keys() == one.keys()
    assert len([p for p in two if p.startswith("jobs/")]) > 1
    compared = [p for p in sorted(two) if p.rsplit("/", 1)[-1] not in TIMING_FILES]
    assert {"tables/geometry.csv", "manifest.tsv"} <= set(compared)
    differing = [p for p in compared if two[p] != one[p]]
    assert not differing, f"differ between --cores 2 and --cores 1: {differing[:10]}"


def planned_jobs(dry_run_output: str) -> list[str]:
    return sorted(set(re.findall(r"wildcards: job=(\S+)", dry_run_output)))


def test_dry_runs_on_one_and_two_cores_plan_the_same_jobs(tmp_path):
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    plans = [
        planned_jobs(
            snakemake(tmp_path, "-n", "--cores", cores, "--configfile", "tiny.yaml").stdout
        )
        for cores in ("1", "2")
    ]
    assert len(plans[0]) > 1 and plans[0] == plans[1]


def test_parsing_the_snakefile_deletes_nothing(tiny_run, tmp_path):
    """A changed config over results without Snakemake's records: listing the rules parses the
    Snakefile (and plans) but must leave every stale file in place."""
    shutil.copytree(tiny_run / "results", tmp_path / "results")
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    (tmp_path / "more.yaml").write_text(yaml.safe_dump({"train": {"epochs": 5}, "seeds": [0]}))
    before = result_hashes(tmp_path)
    snakemake(tmp_path, "--list-rules", "--cores", "1", "--configfile", "tiny.yaml", "more.yaml")
    assert result_hashes(tmp_path) == before


def test_config_changes_are_seen_without_snakemakes_records(tiny_run, tmp_path):
    """A copy of the results without .snakemake/, then --rerun-triggers mtime: changed epochs
    retrain, a changed dataset is regenerated, and figures the config no longer draws go."""
    shutil.copytree(tiny_run / "results", tmp_path / "results")
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    results = tmp_path / "results"
    (tmp_path / "epochs.yaml").write_text(yaml.safe_dump({"train": {"epochs": 5}}))
    args = ["--cores", "2", "--configfile", "tiny.yaml", "epochs.yaml"]

    before = result_hashes(tmp_path)
    dry = snakemake(tmp_path, "-n", *args)
    assert "would rerun results/jobs/" in dry.stderr
    assert planned_jobs(dry.stdout), "the dry run leaves out the reruns"
    assert result_hashes(tmp_path) == before, "a dry run changed results/"
    snakemake(tmp_path, *args)
    runs = pd.read_csv(results / "tables" / "runs.csv")
    assert (runs["epochs"] == 5).all()
    assert pd.read_csv(results / "tables" / "epochs.csv")["epoch"].max() == 5

    changed = {**TINY["datasets"][0], "noise_std": 0.2}
    fewer = {"datasets": [changed], "grid": {"rank": [4], "alpha": [8]}}
    (tmp_path / "noise.yaml").write_text(yaml.safe_dump(fewer))
    args = [*args, "noise.yaml", "--rerun-triggers", "mtime"]
    result = snakemake(tmp_path, *args)
    assert (
        "rerunning results/datasets/tiny.json: it was generated for another spec" in result.stderr
    )
    runs = pd.read_csv(results / "tables" / "runs.csv")
    assert (runs["noise_std"] == 0.2).all() and set(runs["rank"].dropna()) == {4}
    assert read_json(results / "datasets" / "tiny.json")["spec"]["noise_std"] == 0.2
    config = {**TINY, "datasets": [changed], "grid": {**TINY["grid"], **fewer["grid"]}}
    drawn = {f"{name}.{ext}" for name in figures_for(config) for ext in ("pdf", "png")}
    assert {p.name for p in (results / "figures").iterdir()} == drawn
    assert "rank_alpha_heatmap.pdf" not in drawn
