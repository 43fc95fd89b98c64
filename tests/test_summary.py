"""The summary tables hold their columns whatever ran, and findings.csv the deciding interval."""

from lorasweep.analysis import summary
from lorasweep.analysis.findings import small_rank_suffices
from tests.test_findings import efficiency_runs


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
