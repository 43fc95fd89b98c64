"""The findings can come out either way: they are computed, not asserted."""

import pandas as pd

from lorasweep.analysis import findings
from tests.helpers import as_stored


def lowrank_runs(losses_by_rank: dict[int, float], task_rank=4, floor=0.01) -> pd.DataFrame:
    rows = []
    for rank, loss in losses_by_rank.items():
        for seed in (0, 1):
            rows.append(
                {
                    "run_id": f"r{rank}_s{seed}", "dataset": "d", "method": "lora", "rank": rank,
                    "alpha": 8.0, "scaling": "standard", "init": "kaiming", "lr": 1e-3,
                    "lr_ratio": 1.0, "bias": "none", "seed": seed, "status": "ok",
                    "final_val_loss": loss,
                    "dataset_kind": "lowrank", "task_rank": task_rank, "noise_floor": floor,
                }
            )  # fmt: skip
    return as_stored(pd.DataFrame(rows))


def test_small_rank_claim_reproduced_or_not():
    ok = findings.small_rank_suffices(lowrank_runs({2: 0.05, 4: 0.0103, 8: 0.0101}))
    assert ok.verdict == findings.REPRODUCED and "+3.0 %" in ok.evidence
    bad = findings.small_rank_suffices(lowrank_runs({2: 0.05, 4: 0.02, 8: 0.0101}))
    assert bad.verdict == findings.NOT_REPRODUCED
    untested = findings.small_rank_suffices(lowrank_runs({1: 0.05, 2: 0.03}))
    assert untested.verdict == findings.NOT_TESTED


def test_large_rank_claim_fails_when_loss_keeps_falling():
    plateau = findings.large_rank_wasted(lowrank_runs({4: 0.0103, 16: 0.0101, 64: 0.0102}))
    assert plateau.verdict == findings.REPRODUCED
    falling = findings.large_rank_wasted(lowrank_runs({4: 0.03, 16: 0.015, 64: 0.0101}))
    assert falling.verdict == findings.NOT_REPRODUCED


def test_subspace_claim_uses_phi_at_i_j_1():
    pairs = pd.DataFrame(
        {"comparison": "rank", "dataset": "d", "rank_a": 8, "rank_b": 64, "seed_a": [0, 1],
         "seed_b": [0, 1], "i": 1, "j": 1, "phi": [0.2, 0.3]}
    )  # fmt: skip
    assert findings.subspaces_overlap(pairs).verdict == findings.NOT_REPRODUCED
    assert findings.subspaces_overlap(pairs.assign(phi=[0.9, 0.8])).verdict == findings.REPRODUCED
    assert findings.subspaces_overlap(None).verdict == findings.NOT_TESTED


def test_rslora_claim_compares_learning_speed_at_the_largest_rank():
    runs = pd.concat(
        [lowrank_runs({1: 0.05, 64: 0.01}).assign(scaling=s, run_id=lambda d, s=s: d["run_id"] + s)
         for s in ("standard", "rslora")]
    )  # fmt: skip
    epochs = []
    for run_id in runs["run_id"]:
        slow = run_id.endswith("standard") and run_id.startswith("r64")
        for epoch in range(4):
            epochs.append(
                {"run_id": run_id, "epoch": epoch, "val_loss": (0.5 if slow else 0.1) / (epoch + 1)}
            )
    verdict = findings.rslora_learns_faster(runs, pd.DataFrame(epochs)).verdict
    assert verdict == findings.REPRODUCED
    flipped = [
        dict(e, val_loss=e["val_loss"] * (25 if "rslora" in e["run_id"] else 1)) for e in epochs
    ]
    assert (
        findings.rslora_learns_faster(runs, pd.DataFrame(flipped)).verdict
        == findings.NOT_REPRODUCED
    )


def test_efficiency_claim_names_the_first_rank_within_tolerance():
    table = pd.DataFrame(
        {"dataset": "d", "method": ["lora", "lora", "lora", "full"], "rank": [1, 4, 16, pd.NA],
         "final_val_loss": [0.05, 0.0104, 0.0101, 0.01], "trainable_params": [10, 40, 160, 1000],
         "params_vs_full": [0.01, 0.04, 0.16, 1.0], "state_vs_full": [0.01, 0.04, 0.16, 1.0]}
    )  # fmt: skip
    ok = findings.efficiency(table, tolerance=0.05)
    assert ok.verdict == findings.REPRODUCED and "r = 4 reaches" in ok.evidence
    assert "r = 16 reaches" in findings.efficiency(table, tolerance=0.02).evidence
    assert findings.efficiency(table, tolerance=0.0).verdict == findings.NOT_REPRODUCED
    lora_only = table[table["method"] == "lora"]
    assert findings.efficiency(lora_only, tolerance=0.05).verdict == findings.NOT_TESTED
