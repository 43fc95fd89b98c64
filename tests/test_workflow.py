"""End-to-end: the workflow runs through Snakemake and produces the documented outputs."""

import json
import re
import shutil
import subprocess
import sys
import time
import zipfile
from html import unescape

import pandas as pd
import pytest
import yaml

from lorasweep.figures.registry import figures_for
from lorasweep.models.names import linear_modules, select
from lorasweep.tables.runs import RUN_COLUMNS

from .conftest import CONFIGS, REPO, snakemake
from .helpers import report_verdicts

pytestmark = pytest.mark.integration

TINY_FIGURES = figures_for(yaml.safe_load((CONFIGS / "tiny.yaml").read_text()))

CONTRACT_COLUMNS = [
    "run_id", "dataset", "method", "rank", "alpha", "scaling", "init", "lr", "seed",
    "trainable_params", "frozen_params", "total_params", "final_train_loss",
    "final_val_loss", "best_val_loss", "status",
]  # fmt: skip


def test_runs_table_has_the_contract_columns_and_one_row_per_run(tiny_run):
    runs = pd.read_csv(tiny_run / "results" / "tables" / "runs.csv")
    assert list(runs.columns[: len(CONTRACT_COLUMNS)]) == CONTRACT_COLUMNS
    assert list(runs.columns) == RUN_COLUMNS
    lora, full = runs[runs["method"] == "lora"], runs[runs["method"] == "full"]
    assert len(lora) == 2 * 2 * 2 * 2 and len(full) == 2
    assert runs["run_id"].is_unique
    assert (runs["status"] == "ok").all()
    assert full[["rank", "alpha", "scaling", "init"]].isna().all().all()
    assert (lora["trainable_params"] == lora["rank"] * (16 + 12)).all()
    assert (full["trainable_params"] == 16 * 12 + 12).all()
    assert (runs["total_params"] == runs["trainable_params"] + runs["frozen_params"]).all()
    epochs = pd.read_csv(tiny_run / "results" / "tables" / "epochs.csv").groupby("run_id")
    by_run = runs.set_index("run_id")
    assert by_run["best_val_loss"].to_dict() == pytest.approx(epochs["val_loss"].min().to_dict())
    assert by_run["final_val_loss"].to_dict() == pytest.approx(epochs["val_loss"].last().to_dict())
    assert (by_run["best_val_loss"] < by_run["initial_val_loss"]).all(), "every run learned"


def test_epochs_table_is_long_format_with_epoch_zero(tiny_run):
    epochs = pd.read_csv(tiny_run / "results" / "tables" / "epochs.csv")
    assert list(epochs.columns[:4]) == ["run_id", "epoch", "train_loss", "val_loss"]
    assert len(epochs) == 18 * 5
    assert sorted(epochs["epoch"].unique()) == [0, 1, 2, 3, 4]
    runs = pd.read_csv(tiny_run / "results" / "tables" / "runs.csv")
    last = epochs[epochs["epoch"] == 4].set_index("run_id")["val_loss"]
    assert (runs.set_index("run_id")["final_val_loss"] == last).all()


def test_per_run_files_exist(tiny_run):
    run_dirs = list((tiny_run / "results" / "runs").iterdir())
    assert len(run_dirs) == 18 and all("__" in d.name for d in run_dirs)
    for run_dir in run_dirs:
        names = {p.name for p in run_dir.iterdir()}
        lora = "__lora_" in run_dir.name
        assert names == {
            "weights.safetensors",
            "epochs.csv",
            "metrics.json",
            "provenance.json",
            "timing.json",
            "checksums.json",
            *(["peft"] if lora else []),
        }
        if lora:
            peft = {p.name for p in (run_dir / "peft").iterdir()}
            assert peft == {"adapter_config.json", "adapter_model.safetensors"}


def test_figures_exist_as_pdf_and_png(tiny_run):
    assert {"loss_vs_params", "subspace_similarity", "rank_alpha_heatmap"} <= set(TINY_FIGURES)
    for name in TINY_FIGURES:
        for ext, magic in (("pdf", b"%PDF"), ("png", b"\x89PNG")):
            path = tiny_run / "results" / "figures" / f"{name}.{ext}"
            assert path.read_bytes()[:4] == magic, path


def test_report_is_self_contained_with_efficiency_table(tiny_run):
    html = (tiny_run / "results" / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(TINY_FIGURES)
    assert not re.search(r'src="(?!data:)', html)
    assert "Efficiency: LoRA vs full fine-tuning" in html
    assert "full FT" in html and "LoRA r=4" in html
    assert "training state" in html and "time / epoch" in html
    assert "<h1>LoRA (ranks 1, 4) vs full fine-tuning on tiny (16→12, task rank 2)</h1>" in html, (
        "tiny.yaml sets no report.title, so the title names its own study"
    )
    verdicts = report_verdicts(html)
    assert len(verdicts) == 10
    assert set(verdicts.values()) <= {
        "reproduced",
        "not reproduced",
        "inconclusive",
        "not tested by this config",
    }
    needs_lrs_or_source = ("lr_ratio", "lr_rank_standard", "lr_rank_rslora", "forgetting")
    assert [verdicts[claim] for claim in needs_lrs_or_source] == [
        "not tested by this config"
    ] * 4, "one lr and no source task"


def test_geometry_tables_cover_every_run(tiny_run):
    tables = tiny_run / "results" / "tables"
    geometry = pd.read_csv(tables / "geometry.csv")
    runs = pd.read_csv(tables / "runs.csv")
    assert set(geometry["run_id"]) == set(runs["run_id"])
    assert geometry["amplification"].gt(0).all()
    pairs = pd.read_csv(tables / "subspace_pairs.csv")
    assert set(pairs["comparison"]) == {"rank", "seed"}
    assert pairs["phi"].between(0, 1 + 1e-9).all()


def test_test_split_population_and_oracles_cover_every_run_and_rank(tiny_run):
    tables = tiny_run / "results" / "tables"
    runs = pd.read_csv(tables / "runs.csv")
    assert runs["final_test_loss"].gt(0).all() and runs["population_loss"].gt(0).all()
    assert (runs["population_loss"] >= runs["optimal_val_loss"] * (1 - 1e-6)).all()
    oracles = pd.read_csv(tables / "oracles.csv")
    assert list(oracles["oracle"]) == ["oracle_full", "oracle_lora", "oracle_lora"]
    assert oracles["rank"].iloc[1:].tolist() == [1, 4] and set(oracles["dataset"]) == {"tiny"}
    assert oracles[["train_loss", "val_loss", "test_loss", "population_loss"]].gt(0).all().all()


def test_snakemake_report_works(tiny_run):
    snakemake(tiny_run, "--configfile", "tiny.yaml", "--report", "snakemake-report.html")
    html = (tiny_run / "snakemake-report.html").read_text(errors="replace")
    for name in ("runs.csv", "epochs.csv", "report.html", *(f"{f}.png" for f in TINY_FIGURES)):
        assert name in html, f"{name} is not in Snakemake's report"


def test_snakemake_report_zip_works(tiny_run):
    """The workflow catalogue's report command: figures, tables and our HTML report inside."""
    snakemake(tiny_run, "--configfile", "tiny.yaml", "--report", "report.zip")
    with zipfile.ZipFile(tiny_run / "report.zip") as archive:
        names = [name.rsplit("/", 1)[-1] for name in archive.namelist()]
        assert archive.testzip() is None
    assert names.count("report.html") == 2, "Snakemake's report and results/report.html"
    assert {f"{name}.png" for name in TINY_FIGURES} | {"runs.csv", "epochs.csv"} <= set(names)


def test_repository_meets_the_workflow_catalogue_standardized_usage():
    settings = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    usage = settings["usage"]
    assert usage["mandatory-flags"]["desc"] and usage["mandatory-flags"]["flags"] == []
    assert usage["software-stack-deployment"]["conda"] is True and usage["report"] is True
    assert (REPO / "workflow" / "Snakefile").is_file() and (REPO / "Snakefile").is_file()
    assert (REPO / "config" / "README.md").is_file()
    assert list((REPO / "workflow" / "rules").glob("*.smk"))
    readme = (REPO / "README.md").read_text().lower()
    assert "snakemake" in readme and "workflow" in readme
    for snakefile in ("Snakefile", "workflow/Snakefile"):
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", "--snakefile", snakefile],
            cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "rule all:" in result.stdout + result.stderr, f"{snakefile}: no default target"


def test_seed_demo_preset_reproduces_306_of_946(tmp_path):
    snakemake(tmp_path, "--cores", "1", "--configfile", str(REPO / "config" / "seed_demo.yaml"))
    out = tmp_path / "results" / "seed_demo"
    runs = pd.read_csv(out / "tables" / "runs.csv")
    assert len(runs) == 4, "the demo's method and the corrected one, on two datasets"
    row = runs[(runs["dataset"] == "seed_demo") & (runs["init"] == "randn")].iloc[0]
    assert (row["trainable_params"], row["total_params"], row["adapter_params"]) == (306, 946, 296)
    assert (row["init"], row["scaling"], row["alpha"], row["bias"]) == (
        "randn",
        "constant",
        1.0,
        "lora_only",
    )
    epochs = pd.read_csv(out / "tables" / "epochs.csv")
    assert len(epochs) == 4 * 11
    curve = epochs[epochs["run_id"] == row["run_id"]]
    assert curve["val_loss"].iloc[0] > 50, "randn init should start far from the noise floor"
    html = (out / "report.html").read_text()
    assert "306" in html and "946" in html and "296" in html
    assert "linear.weight" in html
    assert '<img alt="tutorial_vs_corrected"' in html


def test_dry_run_of_default_config():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-q"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_bad_config_fails_before_any_job(tmp_path):
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    (tmp_path / "bad.yaml").write_text("grid:\n  rank: [0]\n")
    result = snakemake(
        tmp_path, "--cores", "1", "--configfile", "tiny.yaml", "bad.yaml", check=False
    )
    assert result.returncode != 0
    assert "config error: grid.rank[0]: got 0; allowed: an integer >= 1" in result.stderr
    assert not (tmp_path / "results").exists()


def test_snakemake_lint_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def test_snakefmt_and_ruff_are_clean():
    bin_dir = REPO / ".venv" / "bin"
    tools = {
        name: shutil.which(name, path=f"{bin_dir}:{sys.prefix}/bin")
        for name in ("snakefmt", "ruff")
    }
    missing = [name for name, path in tools.items() if path is None]
    assert not missing, f"not installed: {missing}"
    for cmd in (
        [tools["snakefmt"], "--check", "Snakefile", "workflow/Snakefile", "workflow/rules"],
        [tools["ruff"], "check", "src", "workflow", "tests", "benchmarks"],
        [tools["ruff"], "format", "--check", "src", "workflow", "tests", "benchmarks"],
    ):
        result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, f"{cmd}: {result.stdout}{result.stderr}"


def test_adding_a_grid_value_trains_only_the_new_runs(tiny_run, tmp_path):
    shutil.copytree(tiny_run / "results", tmp_path / "results")
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    before = {
        p.parent.name: p.stat().st_mtime_ns
        for p in (tmp_path / "results" / "runs").glob("*/metrics.json")
    }
    (tmp_path / "more.yaml").write_text(yaml.safe_dump({"grid": {"rank": [1, 2, 4]}}))
    started = time.time_ns()
    result = snakemake(tmp_path, "--cores", "2", "--configfile", "tiny.yaml", "more.yaml")
    after = {
        p.parent.name: p.stat().st_mtime_ns
        for p in (tmp_path / "results" / "runs").glob("*/metrics.json")
    }
    assert {k: after[k] for k in before} == before, "an unrelated run was retrained"
    new = set(after) - set(before)
    assert len(new) == 8 and all("_r2_" in run_id for run_id in new)
    new_logs = [
        p for p in (tmp_path / "results" / "logs" / "train").glob("*.log")
        if p.stat().st_mtime_ns >= started
    ]  # fmt: skip
    counts = re.findall(r"trained (\d+), reused (\d+)", "".join(p.read_text() for p in new_logs))
    assert sum(int(t) for t, _ in counts) == 8, result.stdout[-2000:]
    assert sum(int(r) for _, r in counts) == 18
    runs = pd.read_csv(tmp_path / "results" / "tables" / "runs.csv")
    assert len(runs) == 26


TINY_DEEP = yaml.safe_load((CONFIGS / "tiny_deep.yaml").read_text())
DEEP_FIGURES = {"deep_targets", "deep_budget", "deep_learning_curves", "deep_layer_geometry"}


def test_deep_models_run_through_every_stage(tiny_deep_run):
    results = tiny_deep_run / "results"
    runs = pd.read_csv(results / "tables" / "runs.csv")
    assert list(runs.columns) == RUN_COLUMNS and runs["run_id"].is_unique
    specs = {d["name"]: d for d in TINY_DEEP["datasets"]}
    lora, full = runs[runs["method"] == "lora"], runs[runs["method"] == "full"]
    assert (len(lora), len(full)) == (22, 4)
    for _, row in lora.iterrows():
        modules = select(linear_modules(specs[row["dataset"]]), row["targets"])
        expected = row["rank"] * sum(m.in_features + m.out_features for m in modules)
        assert row["trainable_params"] == row["adapter_params"] == expected, row["run_id"]
        assert row["adapted_modules"] == len(modules)
    budget = lora[lora["targets"].isin(["q", "q|v"])].groupby("targets")["rank"].unique()
    assert {t: list(r) for t, r in budget.items()} == {"q": [2], "q|v": [1]}
    assert (full["trainable_params"] == full["total_params"]).all() and full["targets"].isna().all()
    assert not runs["cached_base"].any(), "no deep run may train on cached residuals"
    covered = runs["targets"].isin(["mlp", "all"]) | (runs["method"] == "full")
    assert runs.loc[covered, "optimal_val_loss"].sub(0.01).abs().lt(1e-12).all()
    assert runs.loc[~covered, "optimal_val_loss"].isna().all()
    tf = runs[runs["dataset"] == "tf"].iloc[0]
    assert (tf["shifted"], tf["d_model"], tf["n_heads"], tf["seq_len"]) == ("mlp", 8, 2, 4)

    geometry = pd.read_csv(results / "tables" / "geometry.csv")
    ok = runs[runs["status"] == "ok"].set_index("run_id")
    assert geometry.groupby("run_id").size().to_dict() == ok["adapted_modules"].to_dict()
    shifted = geometry["layer"].str.contains("mlp") | geometry["run_id"].str.startswith("net")
    assert geometry.loc[shifted, "phi_true_right"].between(0, 1 + 1e-9).all()
    assert geometry.loc[~shifted, "phi_true_right"].isna().all()

    figures = figures_for(TINY_DEEP)
    assert set(figures) >= DEEP_FIGURES
    assert not {"subspace_similarity", "amplification"} & set(figures)
    for name in figures:
        assert (results / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    html = (results / "report.html").read_text()
    findings = html.split("<h2>Findings</h2>", 1)[1].split("<h2>", 1)[0]
    verdicts = report_verdicts(html)
    assert len(verdicts) == 13, "5 single-layer, 5 newer-evidence and 3 deep findings"
    deep_claims = ("deep_floor", "deep_budget", "deep_regret")
    assert all(verdicts[c] != "not tested by this config" for c in deep_claims), (
        "the deep config tests each claim"
    )
    assert "LoRA Without Regret" in findings and "<h2>Fixed parameter budget</h2>" in html

    run_dir = results / "runs" / "tf__lora-q+v_r1_a4_standard_kaiming_lr0.01_s0"
    provenance = json.loads((run_dir / "provenance.json").read_text())
    meta = json.loads((results / "datasets" / "tf.json").read_text())
    assert provenance["dataset"] == {"spec": meta["spec"], "sha256": meta["sha256"]}
    assert provenance["run"]["targets"] == "q|v" and len(provenance["reuse_key"]) == 64


def test_rslora_finding_is_decided_on_a_single_layer_dataset(tiny_run):
    """The tiny config sweeps both scaling rules on a single-layer task, whose empty ``targets``
    must not drop its runs from the comparison."""
    verdicts = report_verdicts((tiny_run / "results" / "report.html").read_text())
    assert verdicts["rslora"] in {"reproduced", "not reproduced", "inconclusive"}


def _html_table(html: str, after: str) -> list[list[str]]:
    """The body cells of the first table after the heading ``after``, as text."""
    section = html.split(after, 1)[1].split("</table>", 1)[0]
    body = section.split("<tbody>", 1)[1]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S) for row in rows]
    return [[unescape(c).strip() for c in row] for row in cells]


def _number(text: str) -> float:
    return float(re.match(r"[-+\d.,e]+", text).group(0).replace(",", ""))


def test_report_findings_and_efficiency_come_from_the_summary_tables(tiny_run):
    """Every number the report's findings and efficiency tables print is a cell of
    ``findings.csv`` / ``efficiency.csv``, to the precision printed."""
    html = (tiny_run / "results" / "report.html").read_text()
    tables = tiny_run / "results" / "tables"
    found = pd.read_csv(tables / "findings.csv", keep_default_na=False)
    shown = _html_table(html, "<h2>Findings</h2>")
    assert [row[1] for row in shown] == list(found["verdict"])
    assert [row[2] for row in shown] == list(found["search_budget"])
    assert [row[3] for row in shown] == list(found["evidence"])
    assert [row[0] for row in shown] == list(found["claim"])
    assert list(report_verdicts(html)) == list(found["claim_id"])
    efficiency = pd.read_csv(tables / "efficiency.csv")
    rows = _html_table(html, "<h2>Efficiency: LoRA vs full fine-tuning</h2>")
    assert len(rows) == len(efficiency)
    for cells, (_, row) in zip(rows, efficiency.iterrows(), strict=True):
        assert cells[0] == row["dataset"] and cells[2] == row["settings"]
        assert _number(cells[3]) == row["trainable_params"]
        assert _number(cells[4]) == pytest.approx(row["trainable_pct"], abs=0.005)
        assert _number(cells[8]) == pytest.approx(row["final_val_loss"], rel=5e-4)
        assert _number(cells[9]) == pytest.approx(row["final_test_loss"], rel=5e-4)
        assert _number(cells[11]) == pytest.approx(row["test_loss_vs_full"], abs=5e-4)
        assert int(cells[12]) == row["settings_searched"]
        assert int(cells[13]) == row["n_replicates"] and int(cells[14]) == row["seeds"]
