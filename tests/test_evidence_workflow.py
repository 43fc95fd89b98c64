"""End to end: a config with a source task and learning-rate sweeps yields the three studies'
tables, figures, findings and report sections."""

import shutil

import pandas as pd
import pytest

from .conftest import CONFIGS, REPO, snakemake
from .helpers import report_verdicts

pytestmark = pytest.mark.integration

STUDY_FIGURES = ("loss_vs_learning_rate", "forgetting_vs_learning", "intruders_vs_rank")


@pytest.fixture(scope="module")
def evidence_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("evidence")
    shutil.copy(CONFIGS / "evidence.yaml", workdir / "evidence.yaml")
    snakemake(workdir, "--cores", "2", "--configfile", "evidence.yaml")
    return workdir / "results"


def test_every_run_records_its_source_loss_and_forgetting(evidence_run):
    runs = pd.read_csv(evidence_run / "tables" / "runs.csv")
    epochs = pd.read_csv(evidence_run / "tables" / "epochs.csv")
    assert len(runs) == 2 * 2 * 3 * 2 + 3 * 2 and runs["forgetting"].notna().all()
    assert epochs["source_loss"].notna().all()
    first = epochs[epochs["epoch"] == 0].set_index("run_id")["source_loss"]
    last = epochs[epochs["epoch"] == 3].set_index("run_id")["source_loss"]
    by_run = runs.set_index("run_id")
    assert (by_run["forgetting"] == (last - first)[by_run.index]).all()
    assert (by_run["final_source_loss"] == last[by_run.index]).all()
    one = pd.read_csv(next((evidence_run / "runs").iterdir()) / "epochs.csv")
    assert one.columns[-1] == "source_loss"


def test_lr_optima_and_intruder_tables_cover_every_curve_and_run(evidence_run):
    optima = pd.read_csv(evidence_run / "tables" / "lr_optima.csv")
    mean = optima[optima["seed"].isna()]
    assert len(mean) == 2 * 2 + 1 and len(optima) == 3 * len(mean)
    assert (optima["lrs"] == 3).all()
    lora = optima[optima["method"] == "lora"]
    assert lora["ratio_to_full"].notna().all()
    intruders = pd.read_csv(evidence_run / "tables" / "intruders.csv")
    runs = pd.read_csv(evidence_run / "tables" / "runs.csv")
    assert set(intruders["run_id"].dropna()) == set(runs["run_id"])
    assert sorted(intruders["epsilon"].unique()) == [0.4, 0.5, 0.6]
    assert intruders["intruders"].between(0, 10).all() and set(intruders["layer"]) == {"linear"}
    assert len(intruders) == 3 * (len(runs) + 1)
    assert intruders["null_intruders"].between(0, 10).all()
    assert (intruders["task_seed"] == 0).all()


def test_forgetting_intruder_means_and_gap_tables(evidence_run):
    from lorasweep.tables.forgetting import read_forgetting

    runs = pd.read_csv(evidence_run / "tables" / "runs.csv")
    table = read_forgetting(evidence_run / "tables" / "forgetting.csv")
    ranks = sorted(runs["rank"].dropna().astype(int).unique())
    pooled = table[table["unit"] == "pooled"]
    assert pooled["rank"].tolist() == ranks
    assert (table.loc[table["unit"] == "seed", "seed"].nunique()) == runs["seed"].nunique()
    assert table["predicted_full"].notna().all() and table["predicted_lora"].notna().all()
    assert (table["predicted_lora_noise"] < table["predicted_full_noise"]).all()
    means = pd.read_csv(evidence_run / "tables" / "intruder_means.csv")
    assert {"null_mean", "null_std"} <= set(means.columns)
    assert sorted(means["epsilon"].unique()) == [0.4, 0.5, 0.6]
    gaps = pd.read_csv(evidence_run / "tables" / "gaps.csv")
    assert set(gaps["method"]) == {"lora", "full"}
    parts = gaps["optimisation"] + gaps["approximation"] + gaps["estimation"]
    assert parts.to_numpy() == pytest.approx(gaps["total_gap"].to_numpy())
    assert (gaps["estimation"] > 0).all()


def test_report_has_a_section_and_a_figure_per_study(evidence_run):
    for name in STUDY_FIGURES:
        assert (evidence_run / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    html = (evidence_run / "report.html").read_text()
    for heading in ("Learning rate: LoRA against full fine-tuning", "Learning against forgetting",
                    "Intruder dimensions", "Where the gap comes from"):  # fmt: skip
        section = html.split(f"<h2>{heading}</h2>", 1)[1].split("<h2>", 1)[0]
        assert "<table" in section, heading
    findings = html.split("<h2>Findings</h2>", 1)[1].split("<h2>", 1)[0]
    verdicts = report_verdicts(html)
    assert len(verdicts) == 10
    assert verdicts["forgetting"] != "not tested by this config", "the config has a source task"
    assert "Biderman" in findings and "Shuttleworth" in findings


def test_regret_preset_is_valid_and_draws_the_study_figures():
    import yaml

    from lorasweep.figures.registry import figures_for
    from lorasweep.sequential import load_config

    config = load_config(REPO / "config" / "regret.yaml")
    assert set(STUDY_FIGURES) <= set(figures_for(config))
    assert config["datasets"][0]["source"]["leak"] == 0.05
    leaks = {d["source"]["leak"] for d in config["datasets"]}
    assert len(leaks) >= 2, "forgetting is tested at two leaks, not fixed by one design"
    assert yaml.safe_load((REPO / "config" / "regret.yaml").read_text())["grid"]["alpha"] == [32]
