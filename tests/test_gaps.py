"""The oracle gap decomposition (lorasweep.analysis.gaps) on hand-made tables."""

import pandas as pd
import pytest

from lorasweep.analysis.gaps import PARTS, gap_table
from tests.helpers import as_stored

SIGMA2 = 0.01


def tables():
    """Two task replicates, two seeds each: LoRA at r = 2 (two α, the better one chosen) and
    r = 8, full FT at one learning rate; oracles of both replicates."""
    runs = []
    for task_seed in (0, 1):
        for seed in (0, 1):
            common = {"dataset": "d", "dataset_kind": "lowrank", "status": "ok", "seed": seed,
                      "task_seed": task_seed, "noise_floor": SIGMA2, "lr": 1e-3}  # fmt: skip
            shift = 0.001 * task_seed + 0.0001 * seed
            for rank, alpha, loss in ((2, 4.0, 0.013), (2, 16.0, 0.02), (8, 4.0, 0.0115)):
                runs.append({**common, "run_id": f"l{rank}a{alpha:g}t{task_seed}s{seed}",
                             "method": "lora", "rank": rank, "alpha": alpha,
                             "scaling": "standard", "init": "kaiming", "lr_ratio": 1.0,
                             "bias": "none", "final_val_loss": loss,
                             "population_loss": loss + shift})  # fmt: skip
            runs.append({**common, "run_id": f"f_t{task_seed}s{seed}", "method": "full",
                         "bias": "none", "final_val_loss": 0.0125,
                         "population_loss": 0.0125 + shift})  # fmt: skip
    oracles = pd.DataFrame(
        [
            {"dataset": "d", "task_seed": t, "oracle": "oracle_full", "rank": None,
             "bias": "lora_only", "population_loss": 0.0107 + 0.001 * t}
            for t in (0, 1)
        ]
        + [
            {"dataset": "d", "task_seed": t, "oracle": "oracle_lora", "rank": r,
             "bias": b, "population_loss": loss + 0.001 * t}
            for t in (0, 1)
            for r, b, loss in ((2, "none", 0.0125), (8, "none", 0.0102), (8, "lora_only", 0.5))
        ]
    )  # fmt: skip
    return as_stored(pd.DataFrame(runs)), oracles


def test_parts_sum_to_the_total_gap_and_each_is_its_difference():
    table = gap_table(*tables())
    assert len(table) == 6
    pairs = zip(table["method"], table["rank"], strict=True)
    kinds = [(m, None if pd.isna(r) else int(r)) for m, r in pairs]
    assert list(dict.fromkeys(kinds)) == [("full", None), ("lora", 2), ("lora", 8)]
    total = table[list(PARTS)].sum(axis=1)
    assert total.tolist() == pytest.approx(table["total_gap"].tolist())
    row = table[(table["method"] == "lora") & (table["rank"] == 8) & (table["task_seed"] == 1)]
    row = row.iloc[0]
    assert row["population_loss"] == pytest.approx(0.0115 + 0.001 + 0.00005)
    assert row["optimisation"] == pytest.approx(0.0115 + 0.00005 - 0.0102)
    assert row["approximation"] == pytest.approx(0.0102 - 0.0107), "rank-8 oracle, frozen bias"
    assert row["estimation"] == pytest.approx(0.0107 + 0.001 - SIGMA2)
    assert row["seeds"] == 2


def test_best_settings_are_decomposed_and_full_ft_has_no_approximation_term():
    table = gap_table(*tables())
    rank2 = table[(table["method"] == "lora") & (table["rank"] == 2)]
    assert rank2["population_loss"].tolist() == pytest.approx([0.01305, 0.01405])
    full = table[table["method"] == "full"]
    assert (full["approximation"] == 0).all()
    assert full["oracle_loss"].tolist() == pytest.approx([0.0107, 0.0117])


def test_no_oracles_no_rows():
    runs, _ = tables()
    assert gap_table(runs, None).empty
    assert gap_table(runs, pd.DataFrame(columns=["dataset"])).empty


def test_the_report_leaves_noise_free_datasets_out_of_the_gaps_in_units_of_sigma_squared():
    from lorasweep.report.evidence import gaps_section

    row = dict(method="full", rank=None, total_gap=1.0, optimisation=1.0, approximation=0.0,
               estimation=0.0)  # fmt: skip
    gaps = pd.DataFrame([{**row, "dataset": "quiet", "noise_floor": 0.0},
                         {**row, "dataset": "noisy", "noise_floor": 0.5}])  # fmt: skip
    text = "\n".join(gaps_section(gaps))
    assert "+2" in text and "inf" not in text and "nan" not in text
    assert "Left out (σ² = 0, so no unit of σ²): quiet." in text
    assert "Not tested" in "\n".join(gaps_section(gaps[gaps["dataset"] == "quiet"]))
