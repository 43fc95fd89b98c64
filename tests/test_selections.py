"""The figures draw the runs that ``selections.csv`` names, chosen there exactly as
:mod:`lorasweep.analysis.statistics` chooses them, and no figure chooses runs itself."""

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lorasweep.figures
from lorasweep.analysis import selections, statistics
from lorasweep.figures.chosen import chosen_runs, chosen_settings
from lorasweep.figures.registry import Tables
from lorasweep.io import write_csv
from tests.helpers import as_stored
from tests.test_figures import lora_row

SELECTING = {"_best_of", "best_lora_settings", "best_lora_runs", "best_full", "best_full_runs",
             "best_lowrank_lora", "full_fine_tuning_level", "select_runs"}  # fmt: skip
"""The functions of analysis/statistics that choose runs or settings."""


def test_no_figure_module_calls_a_selection_function():
    folder = Path(lorasweep.figures.__file__).parent
    found = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = None
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.Name):
                name = node.id
            elif isinstance(node, ast.ImportFrom):
                found += [f"{path.name}: {a.name}" for a in node.names if a.name in SELECTING]
            if name in SELECTING:
                found.append(f"{path.name}:{node.lineno}: {name}")
    assert not found


def hand_made_runs() -> pd.DataFrame:
    """Two datasets × two scaling rules × ranks 1, 4 × α 2, 8 × two learning rates × two seeds,
    random losses, one diverged run, and full fine-tuning at two learning rates."""
    rng = np.random.default_rng(3)
    rows = [
        lora_row(d, r, s, rng.uniform(0.1, 1.0), kind="lowrank", scaling=sc, alpha=a, lr=lr,
                 final_test_loss=rng.uniform(0.1, 1.0), task_seed=0,
                 run_id=f"{d}_{sc}_r{r}_a{a}_lr{lr}_s{s}")
        for d in ("task2", "task16") for sc in ("standard", "rslora") for r in (1, 4)
        for a in (2.0, 8.0) for lr in (0.003, 0.01) for s in (0, 1)
    ]  # fmt: skip
    rows[5]["status"] = "diverged"
    rows += [
        {**lora_row(d, np.nan, s, rng.uniform(0.1, 1.0), kind="lowrank", lr=lr, task_seed=0),
         "method": "full", "run_id": f"{d}_full_{lr}_s{s}", "alpha": np.nan,
         "scaling": np.nan, "init": np.nan, "lr_ratio": np.nan, "final_test_loss": 0.5}
        for d in ("task2", "task16") for lr in (0.003, 0.01) for s in (0, 1)
    ]  # fmt: skip
    return as_stored(pd.DataFrame(rows))


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """The hand-made runs and their selections table, each through its CSV, as a figure job
    reads them."""
    runs = hand_made_runs()
    path = tmp_path_factory.mktemp("selections") / "selections.csv"
    write_csv(path, selections.selections_table(runs))
    return Tables(runs=runs, epochs=pd.DataFrame(), selections=pd.read_csv(path))


@pytest.mark.parametrize("name", list(selections.LORA_SELECTIONS))
def test_each_adapter_selection_is_statistics_choice(stored, name):
    by = selections.group_keys(name, stored.runs)
    expected = statistics.best_lora_settings(stored.runs, by)
    rows = chosen_settings(stored, name)
    keys = selections.merge_keys(name, stored.runs)
    pd.testing.assert_frame_equal(rows[keys], expected[keys].reset_index(drop=True))
    np.testing.assert_allclose(rows["mean"], expected["mean"], rtol=1e-15)
    assert (rows["settings_searched"] == expected["settings_searched"]).all()
    runs = chosen_runs(stored, name)
    assert sorted(runs["run_id"]) == sorted(statistics.best_lora_runs(stored.runs, by)["run_id"])


def test_the_full_selection_is_statistics_choice(stored):
    expected = statistics.best_full(stored.runs)
    rows = chosen_settings(stored, selections.FULL)
    pd.testing.assert_frame_equal(rows[["dataset", "lr"]], expected[["dataset", "lr"]])
    np.testing.assert_allclose(rows["std"], expected["std"], rtol=1e-15)
    runs = chosen_runs(stored, selections.FULL)
    assert sorted(runs["run_id"]) == sorted(statistics.best_full_runs(stored.runs)["run_id"])


def test_a_selection_differs_between_groupings(stored):
    """The groupings are not all one choice, so a figure reading the wrong one would show."""
    rank = chosen_runs(stored, "rank")
    scaling = chosen_runs(stored, "scaling_rank")
    assert set(rank["run_id"]) < set(scaling["run_id"])
