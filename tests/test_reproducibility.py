"""Same config, same machine: byte-identical results; wall-clock timings live apart."""

import shutil

import pytest

from lorasweep.io import load_metadata, manifest

from .conftest import CONFIGS, snakemake

pytestmark = pytest.mark.integration

TIMING_FILES = {"timing.json", "timings.csv", "report.html"}


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
    compared = [p for p in first if p.rsplit("/", 1)[-1] not in TIMING_FILES | {"manifest.tsv"}]
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


def test_manifest_lists_every_result_file(tiny_run):
    listed = (tiny_run / "results" / "manifest.tsv").read_text().splitlines()
    assert listed[0] == "path\tbytes\tsha256"
    paths = {line.split("\t")[0] for line in listed[1:]}
    on_disk = set(result_hashes(tiny_run)) - {"manifest.tsv"}
    assert paths == on_disk


def test_adapters_carry_their_settings(tiny_run):
    weights = next((tiny_run / "results" / "runs").glob("*_r4_a8_rslora_*_s0/weights.safetensors"))
    meta = load_metadata(weights)
    assert meta["rank"] == 4 and meta["scaling_rule"] == "rslora"
    assert meta["scaling"] == pytest.approx(8 / 2)
