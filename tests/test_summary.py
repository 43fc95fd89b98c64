"""The summary tables hold their columns whatever ran, and findings.csv the deciding interval."""

import pandas as pd
import pytest

from lorasweep.analysis import findings, selections, statistics, summary
from lorasweep.analysis.findings import small_rank_suffices
from lorasweep.models.registry import DORA
from lorasweep.report.html import _lora_against_full
from tests.test_findings import as_stored, efficiency_runs, lowrank_runs


def test_best_settings_keep_their_columns_when_one_method_has_no_completed_run():
    runs = efficiency_runs({4: 0.0102})
    for method in ("lora", "full"):
        others = runs[runs["method"] != method]
        table = summary.best_settings(others)
        assert list(table.columns[:3]) == ["dataset", "method", "rank"]
        assert set(table["method"]) == {"full" if method == "lora" else "lora"}


def test_the_findings_table_gives_the_deciding_interval():
    finding = small_rank_suffices(efficiency_runs({4: 0.0103}, spread=0.01))
    row = summary.findings_table([finding]).iloc[0]
    assert row["claim_id"] == "small_r" and row["dataset"] == "d"
    assert row["ci_low"] <= row["estimate"] <= row["ci_high"] and row["n_units"] == 3
    assert row["threshold"] == 0.05 and row["verdict"] == finding.verdict


def test_best_settings_are_chosen_on_validation_and_give_the_test_loss_and_the_budget():
    """At r = 4 lr 1e-3 wins on validation (0.0102 against 0.0204) though lr 1e-2 is made best
    on test: the row keeps lr 1e-3 and gives its test loss."""
    runs = efficiency_runs({4: 0.0102})
    worse = runs["lr"] == 1e-2
    runs.loc[worse, "final_test_loss"] = 0.001
    table = summary.best_settings(runs)
    assert list(table.columns[-8:]) == summary.BEST_COLUMNS[3:]
    lora = table[table["method"] == "lora"].iloc[0]
    assert lora["lr"] == 1e-3 and lora["final_val_loss"] == lora["final_test_loss"] == 0.0102
    assert (lora["settings_searched"], lora["lrs_searched"], lora["seeds"]) == (2, 2, 3)
    assert lora["n_replicates"] == 1
    full = table[table["method"] == "full"].iloc[0]
    assert full["lr"] == 1e-3 and full["final_test_loss"] == 0.01


def two_method_runs():
    """LoRA and DoRA runs of one dataset at ranks 1 and 4 (DoRA better at r = 1, LoRA at
    r = 4), and full fine-tuning."""
    lora = efficiency_runs({1: 0.05, 4: 0.0102})
    dora = lowrank_runs({1: 0.03, 4: 0.02}).assign(
        method=DORA.name,
        run_id=lambda d: "dora" + d["run_id"],
        trainable_params=lambda d: d["rank"] * 10 + 8,
    )
    return as_stored(pd.concat([lora, dora], ignore_index=True))


def test_each_adapter_method_is_an_arm_of_its_own_in_the_tables():
    """Best settings, efficiency and every adapter selection keep LoRA and DoRA apart, each
    with its own runs, so that no row or curve averages or chooses across the two."""
    runs = two_method_runs()
    best = summary.best_settings(runs)
    adapters = best[best["method"] != "full"]
    assert sorted(zip(adapters["method"], adapters["rank"], strict=True)) == [
        ("dora", 1),
        ("dora", 4),
        ("lora", 1),
        ("lora", 4),
    ]
    dora = adapters[adapters["method"] == DORA.name].set_index("rank")
    assert dora.loc[1, "final_val_loss"] == pytest.approx(0.03)
    assert dora.loc[4, "final_val_loss"] == pytest.approx(0.02)
    assert (adapters["settings_searched"] == 2).all() and (adapters["seeds"] == 3).all()
    table = statistics.efficiency_table(runs)
    rows = table[table["method"] == DORA.name].set_index("rank")
    assert list(rows.index) == [1, 4] and (rows["trainable_params"] == [18, 48]).all()
    assert rows.loc[4, "val_loss_vs_full"] == pytest.approx(2.0)
    assert set(statistics.search_budget(table).split("; ")) >= {"dora r1: 2", "lora r4: 2"}
    chosen = selections.selections_table(runs)
    for name in selections.LORA_SELECTIONS:
        rows = chosen[chosen["selection"] == name]
        assert sorted(set(rows["method"])) == ["dora", "lora"], name
    for method, picked in statistics.best_lora_runs(runs, ["dataset", "rank"]).groupby("method"):
        assert picked["run_id"].str.startswith("dora").all() == (method == DORA.name)
        assert len(picked) == 2 * 3, "each rank's best setting, three seeds, of one method"


def test_one_method_keeps_the_tables_it_had():
    """With LoRA alone, grouping by method changes no group, row or value (only where the
    ``method`` column sits, which the written tables fix)."""
    runs = efficiency_runs({1: 0.05, 4: 0.0102, 16: 0.0101}, spread=0.01)
    lora = runs[runs["method"] == "lora"]
    by_rank = statistics._best_of(lora, ["dataset", "rank"], statistics.settings_in(lora))
    grouped = statistics.best_lora_settings(runs, ["dataset", "rank"])
    pd.testing.assert_frame_equal(grouped[by_rank.columns], by_rank)


def test_the_rank_findings_judge_each_adapter_method_on_its_own_runs():
    """LoRA reaches 0.0102 at r = 4 = the task rank (2 % above σ² = 0.01), DoRA 0.02 (100 %):
    each method is its own check, named where several ran, and efficiency compares the chosen
    row's own method with full FT."""
    runs = two_method_runs()
    finding = small_rank_suffices(runs)
    assert "DoRA: at r = 4" in finding.evidence and "LoRA: at r = 4" in finding.evidence
    assert "+2.0 %" in finding.evidence and "+100.0 %" in finding.evidence
    assert "DoRA" not in small_rank_suffices(runs[runs["method"] != DORA.name]).evidence
    table = statistics.efficiency_table(runs)
    result = findings.efficiency(runs, table, tolerance=0.05)
    assert "r = 4, the lowest rank" in result.evidence and "+2.0 %" in result.evidence


def test_the_report_names_the_adapter_method_of_the_row_it_quotes():
    table = statistics.efficiency_table(two_method_runs())
    assert "; LoRA at r = 4 " in _lora_against_full(table, tolerance=0.05)
    assert "; DoRA at r = 1 " in _lora_against_full(table, tolerance=2.5)
    best = _lora_against_full(table, tolerance=0.0)
    assert "(best: LoRA r = 4 at" in best
    one = _lora_against_full(table[table["method"] != DORA.name], tolerance=0.0)
    assert "(best: r = 4 at" in one
