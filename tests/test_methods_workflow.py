"""The method axis end to end: every registered method on a tiny single-layer and transformer
task through the whole workflow; every run finishes, every table and figure is drawn, every
``peft/`` folder reloads in PEFT to the run's final validation loss, and every number of the
report's methods table is a cell of methods.csv."""

import shutil

import pandas as pd
import pytest
import torch
import yaml

from lorasweep.analysis.summary import read_summary
from lorasweep.io import read_json
from lorasweep.models import registry
from lorasweep.options import GRID_METHODS
from lorasweep.tables.runs import read_runs
from lorasweep.tasks import storage
from lorasweep.training import peft_trainer

from .conftest import CONFIGS, required_in_ci, snakemake

pytestmark = [pytest.mark.integration, pytest.mark.peft]


@pytest.fixture(scope="module")
def methods_run(tmp_path_factory):
    try:
        import peft  # noqa: F401
    except ImportError:
        required_in_ci("LORASWEEP_REQUIRE_PEFT", "PEFT is not installed (pip install -e '.[dev]')")
    workdir = tmp_path_factory.mktemp("methods")
    shutil.copy(CONFIGS / "methods.yaml", workdir / "methods.yaml")
    snakemake(workdir, "--cores", "2", "--configfile", "methods.yaml")
    return workdir / "results"


def test_every_method_trains_on_both_tasks(methods_run):
    runs = read_runs(methods_run / "tables" / "runs.csv")
    assert set(runs["method"]) == {*GRID_METHODS, registry.full_name()}
    assert set(runs["dataset"]) == {"layer", "tf"}
    assert (runs["status"] == "ok").all(), runs.loc[runs["status"] != "ok", "run_id"].tolist()
    ia3 = runs[runs["method"] == "ia3"]
    assert ia3["rank"].isna().all() and set(ia3["lr"]) == {0.03, 0.3}
    assert set(runs.loc[runs["method"] == "vera", "lr"]) == {0.03, 0.3}
    assert set(runs.loc[runs["method"] == "loha", "lr"]) == {0.003, 0.03}


def test_the_methods_table_has_every_arm_at_its_own_best_rate(methods_run):
    table = read_summary(methods_run / "tables" / "methods.csv")
    runs = read_runs(methods_run / "tables" / "runs.csv")
    arms = runs.groupby(["dataset", "method", "rank"], dropna=False).ngroups
    assert len(table) == arms
    for row in table.itertuples():
        arm = runs[(runs["dataset"] == row.dataset) & (runs["method"] == row.method)]
        arm = arm[arm["rank"].isna()] if pd.isna(row.rank) else arm[arm["rank"] == row.rank]
        means = arm.groupby("lr")["final_val_loss"].mean()
        assert row.lr == means.idxmin(), (row.method, row.rank)
        assert row.lrs_searched == len(means)
    peft_rows = table[table["trained_by"] == "PEFT"]
    assert set(peft_rows["method"]) == {m for m in GRID_METHODS if registry.method(m).through_peft}
    assert table["delta_error"].notna().all() and table["trainable_params"].gt(0).all()


def test_every_figure_is_drawn(methods_run):
    from lorasweep.config import validated
    from lorasweep.figures.registry import figures_for

    config = validated(yaml.safe_load((CONFIGS / "methods.yaml").read_text()))
    wanted = figures_for(config)
    assert {"method_pareto", "method_lr_curves"} <= set(wanted)
    for name in wanted:
        assert (methods_run / "figures" / f"{name}.png").stat().st_size > 0, name


def test_every_peft_folder_reloads_to_its_runs_loss(methods_run):
    import peft

    runs_dir = methods_run / "runs"
    checked = 0
    for run_dir in sorted(runs_dir.iterdir()):
        metrics = read_json(run_dir / "metrics.json")
        if not registry.method(metrics["method"]).through_peft:
            continue
        spec = read_json(run_dir / "provenance.json")["dataset"]["spec"]
        name = metrics["dataset"] + (
            f".t{metrics['task_seed']}" if metrics.get("task_seed") else ""
        )
        data = storage.load(methods_run / "datasets" / f"{name}.safetensors",
                            methods_run / "datasets" / f"{name}.json")  # fmt: skip
        assert data.spec.kind == spec["kind"]
        model = peft.PeftModel.from_pretrained(peft_trainer.base_model(data, torch.device("cpu")),
                                               run_dir / "peft")  # fmt: skip
        model.eval()
        with torch.no_grad():
            loss = float(torch.nn.functional.mse_loss(model(data["X_val"]), data["y_val"]))
        assert loss == pytest.approx(metrics["final_val_loss"], rel=1e-4), run_dir.name
        checked += 1
    assert checked > 40


def test_the_report_shows_the_methods_table(methods_run):
    html = (methods_run / "report.html").read_text()
    assert "<h2>Methods against full fine-tuning</h2>" in html
    table = read_summary(methods_run / "tables" / "methods.csv")
    for row in table.itertuples():
        assert f"{row.test_loss:.4g}" in html
    findings = read_summary(methods_run / "tables" / "findings.csv")
    assert {"dora_low_rank", "variants_within", "pissa_lr", "multiplicative"} <= set(
        findings["claim_id"]
    )
