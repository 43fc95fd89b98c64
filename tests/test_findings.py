"""The findings can come out either way: they are computed, not asserted. Each interval-backed
finding is tested reproduced, not reproduced and inconclusive on hand-made tables."""

import pandas as pd
import pytest

from lorasweep.analysis import findings, statistics, summary
from lorasweep.analysis.intervals import INCONCLUSIVE
from tests.helpers import as_stored

SEED_OFFSETS = (-1.0, 0.0, 1.0)
WORSE_LR = 1e-2
"""Every arm of the hand-made tables also runs at this learning rate, at twice the loss, so
each arm is tuned over two learning rates and picks 1e-3."""


def lowrank_runs(
    losses_by_rank: dict, task_rank=4, floor=0.01, spread=0.0, lrs=(1e-3, WORSE_LR), test=1.0
) -> pd.DataFrame:
    """LoRA runs of one lowrank dataset, three seeds per rank and learning rate, each seed's
    final validation loss ``loss · (1 + spread · offset)`` around the rank's ``loss`` at lr 1e-3
    (twice that at any other lr), its test loss ``test`` × the validation loss."""
    rows = []
    for rank, loss in losses_by_rank.items():
        for lr in lrs:
            level = loss if lr == 1e-3 else 2 * loss
            for seed, offset in enumerate(SEED_OFFSETS):
                rows.append(
                    {
                        "run_id": f"r{rank}_lr{lr:g}_s{seed}", "dataset": "d", "method": "lora",
                        "rank": rank, "alpha": 8.0, "scaling": "standard", "init": "kaiming",
                        "lr": lr, "lr_ratio": 1.0, "bias": "none", "seed": seed, "status": "ok",
                        "final_val_loss": level * (1 + spread * offset),
                        "final_test_loss": test * level * (1 + spread * offset),
                        "dataset_kind": "lowrank", "task_rank": task_rank, "noise_floor": floor,
                        "trainable_params": 10 * rank, "total_params": 1000,
                        "train_state_bytes": 160 * rank, "adapter_bytes": 40 * rank,
                    }
                )  # fmt: skip
    return as_stored(pd.DataFrame(rows))


def test_small_rank_claim_in_every_outcome():
    ok = findings.small_rank_suffices(lowrank_runs({2: 0.05, 4: 0.0103, 8: 0.0101}))
    assert ok.verdict == findings.REPRODUCED and "+3.0 %" in ok.evidence
    assert ok.deciding.interval.n == 3 and ok.deciding.threshold == findings.SMALL_R_TOLERANCE
    bad = findings.small_rank_suffices(lowrank_runs({2: 0.05, 4: 0.02, 8: 0.0101}))
    assert bad.verdict == findings.NOT_REPRODUCED
    straddles = findings.small_rank_suffices(lowrank_runs({4: 0.0105}, spread=0.05))
    assert straddles.verdict == INCONCLUSIVE and "95 % CI" in straddles.evidence
    untested = findings.small_rank_suffices(lowrank_runs({1: 0.05, 2: 0.03}))
    assert untested.verdict == findings.NOT_TESTED


def test_small_rank_claim_selects_on_validation_and_is_judged_on_test():
    """Validation says +1 %, the held-out test split +10 %: the verdict follows the test."""
    result = findings.small_rank_suffices(lowrank_runs({4: 0.0101}, test=1.089))
    assert result.verdict == findings.NOT_REPRODUCED and "final test MSE" in result.evidence
    assert result.deciding.interval.estimate == pytest.approx(0.0101 * 1.089 / 0.01 - 1)
    assert result.deciding.budget == "lora r4: 2" and result.deciding.n_replicates == 1


def test_an_untuned_arm_keeps_a_met_level_but_claims_no_failure_and_no_winner():
    one_lr = {"lrs": (1e-3,)}
    met = findings.small_rank_suffices(lowrank_runs({4: 0.0101}, **one_lr))
    assert met.verdict == findings.REPRODUCED and findings.UNTUNED in met.evidence
    missed = findings.small_rank_suffices(lowrank_runs({4: 0.02}, **one_lr))
    assert missed.verdict == INCONCLUSIVE and "lora r4: one learning rate" in missed.evidence
    plateau = findings.large_rank_wasted(lowrank_runs({4: 0.0103, 16: 0.0101}, **one_lr))
    assert plateau.verdict == INCONCLUSIVE and "no winner is claimed" in plateau.evidence
    tuned = findings.large_rank_wasted(lowrank_runs({4: 0.0103, 16: 0.0101}))
    assert tuned.verdict == findings.REPRODUCED and findings.UNTUNED not in tuned.evidence


def test_one_seed_gives_no_interval_and_no_verdict_but_inconclusive():
    one_seed = lowrank_runs({4: 0.0101})
    one_seed = one_seed[one_seed["seed"] == 0]
    result = findings.small_rank_suffices(one_seed)
    assert result.verdict == INCONCLUSIVE and "no interval" in result.evidence


def test_task_replicates_are_the_unit_where_there_are_several():
    runs = pd.concat(
        [lowrank_runs({4: loss}).assign(task_seed=t) for t, loss in enumerate([0.0101, 0.0102])]
    )
    assert findings.unit_column(runs) == "task_seed"
    assert findings.small_rank_suffices(runs).deciding.interval.n == 2
    assert findings.unit_column(lowrank_runs({4: 0.0101})) == "seed"


def test_large_rank_claim_in_every_outcome():
    plateau = findings.large_rank_wasted(lowrank_runs({4: 0.0103, 16: 0.0101, 64: 0.0102}))
    assert plateau.verdict == findings.REPRODUCED
    falling = findings.large_rank_wasted(lowrank_runs({4: 0.03, 16: 0.015, 64: 0.0101}))
    assert falling.verdict == findings.NOT_REPRODUCED
    runs = lowrank_runs({4: 0.0106, 16: 0.0101})
    noisy_top = (runs["rank"] == 16) & (runs["lr"] == 1e-3)
    runs.loc[noisy_top, ["final_val_loss", "final_test_loss"]] = [[0.0094] * 2, [0.0101] * 2,
                                                                   [0.0108] * 2]  # fmt: skip
    assert findings.large_rank_wasted(runs).verdict == INCONCLUSIVE


def test_subspace_claim_uses_phi_at_i_j_1_in_every_outcome():
    pairs = pd.DataFrame(
        {"comparison": "rank", "dataset": "d", "rank_a": 8, "rank_b": 64, "seed_a": [0, 1, 2],
         "seed_b": [0, 1, 2], "i": 1, "j": 1, "phi": [0.2, 0.3, 0.25]}
    )  # fmt: skip
    assert findings.subspaces_overlap(pairs).verdict == findings.NOT_REPRODUCED
    high = pairs.assign(phi=[0.9, 0.8, 0.85])
    assert findings.subspaces_overlap(high).verdict == findings.REPRODUCED
    straddles = pairs.assign(phi=[0.2, 0.9, 0.5])
    assert findings.subspaces_overlap(straddles).verdict == INCONCLUSIVE
    assert findings.subspaces_overlap(None).verdict == findings.NOT_TESTED


def test_subspace_claim_counts_task_replicates_as_its_units():
    """Two replicates of three seed pairs each: the interval is over the two replicates' mean φ,
    and the evidence and findings.csv say so."""
    pairs = pd.DataFrame(
        {"comparison": "rank", "dataset": "d", "rank_a": 8, "rank_b": 64,
         "run_a": [f"t{t}_s{s}" for t in (0, 1) for s in (0, 1, 2)], "seed_a": [0, 1, 2] * 2,
         "seed_b": [0, 1, 2] * 2, "i": 1, "j": 1, "phi": [0.8, 0.9, 0.85, 0.9, 0.95, 0.9]}
    )  # fmt: skip
    runs = pd.DataFrame({"run_id": pairs["run_a"], "task_seed": [0, 0, 0, 1, 1, 1]})
    finding = findings.subspaces_overlap(pairs, runs)
    assert finding.deciding.interval.n == 2 and finding.deciding.n_replicates == 2
    assert "2 task replicate(s)" in finding.evidence and "seed" not in finding.evidence
    replicate_means = [(0.8 + 0.9 + 0.85) / 3, (0.9 + 0.95 + 0.9) / 3]
    assert finding.deciding.interval.estimate == pytest.approx(sum(replicate_means) / 2)
    row = summary.findings_table([finding]).iloc[0]
    assert (row["n_units"], row["n_replicates"]) == (2, 2)


def rslora_tables(slow_standard: float, noise: tuple = (0.0, 0.0, 0.0), **kwargs):
    """Both rules at r = 1 and r = 64; at r = 64 the α/r runs' losses are ``slow_standard`` ×
    the α/√r runs', times 1 + each seed's ``noise`` (at every learning rate: an lr of
    :data:`WORSE_LR` is worse on final loss, and its curve is ten times slower still)."""
    runs = pd.concat(
        [lowrank_runs({1: 0.05, 64: 0.01}, **kwargs).assign(
            scaling=s, run_id=lambda d, s=s: d["run_id"] + s) for s in ("standard", "rslora")]
    )  # fmt: skip
    epochs = []
    for run_id, seed, lr in zip(runs["run_id"], runs["seed"], runs["lr"], strict=True):
        slow = run_id.endswith("standard") and run_id.startswith("r64")
        factor = slow_standard * (1 + noise[seed]) if slow else 1.0
        factor *= 10.0 if lr == WORSE_LR else 1.0
        for epoch in range(4):
            epochs.append(
                {"run_id": run_id, "epoch": epoch, "val_loss": 0.1 * factor / (epoch + 1)}
            )
    return runs, pd.DataFrame(epochs)


def test_rslora_claim_compares_learning_speed_at_the_largest_rank_in_every_outcome():
    assert findings.rslora_learns_faster(*rslora_tables(5.0)).verdict == findings.REPRODUCED
    assert findings.rslora_learns_faster(*rslora_tables(0.2)).verdict == findings.NOT_REPRODUCED
    straddles = findings.rslora_learns_faster(*rslora_tables(1.0, noise=(-0.5, 0.0, 2.0)))
    assert straddles.verdict == INCONCLUSIVE


def test_rslora_compares_each_rule_at_its_own_best_learning_rate():
    """α/r is best at lr 1e-3 and α/√r at 1e-2 (its 1e-3 runs made worse): each rule's own
    best lr is compared, so α/√r's slow 1e-2 curve decides, and the claim fails."""
    runs, epochs = rslora_tables(1.0)
    rs_small_lr = (runs["scaling"] == "rslora") & (runs["lr"] == 1e-3)
    runs.loc[rs_small_lr, "final_val_loss"] *= 4
    result = findings.rslora_learns_faster(runs, epochs)
    assert result.verdict == findings.NOT_REPRODUCED and "own best learning rate" in result.evidence
    assert result.deciding.budget == "α/r r64: 2; α/√r r64: 2"
    untuned = findings.rslora_learns_faster(*rslora_tables(5.0, lrs=(1e-3,)))
    assert untuned.verdict == INCONCLUSIVE and findings.UNTUNED in untuned.evidence


def efficiency_runs(lora_losses: dict, full_loss=0.01, spread=0.0, **kwargs) -> pd.DataFrame:
    lora = lowrank_runs(lora_losses, spread=spread, **kwargs)
    full = lowrank_runs({1: full_loss}, **kwargs).assign(
        method="full", run_id=lambda d: "full" + d["run_id"], trainable_params=1000,
        train_state_bytes=16000, adapter_bytes=4000,
    )  # fmt: skip
    return as_stored(pd.concat([lora, full], ignore_index=True))


@pytest.mark.parametrize(
    ("losses", "spread", "tolerance", "verdict", "text"),
    [
        ({1: 0.05, 4: 0.0102, 16: 0.0101}, 0.0, 0.05, findings.REPRODUCED, "r = 4, the lowest"),
        ({1: 0.05, 4: 0.0102, 16: 0.0101}, 0.0, 0.015, findings.REPRODUCED, "r = 16, the lowest"),
        ({1: 0.05, 4: 0.0102, 16: 0.0101}, 0.0, 0.0, findings.NOT_REPRODUCED, "no rank"),
        ({1: 0.05, 4: 0.0104}, 0.05, 0.05, INCONCLUSIVE, "r = 4, the lowest"),
    ],
)
def test_efficiency_claim_at_the_first_rank_within_tolerance(
    losses, spread, tolerance, verdict, text
):
    runs = efficiency_runs(losses, spread=spread)
    table = statistics.efficiency_table(runs)
    result = findings.efficiency(runs, table, tolerance=tolerance)
    assert result.verdict == verdict and text in result.evidence
    lora_only = table[table["method"] == "lora"]
    assert findings.efficiency(runs, lora_only, tolerance).verdict == findings.NOT_TESTED


def test_efficiency_is_judged_on_test_with_each_arms_budget():
    """On validation r = 4 is within 2 % of full FT; on test it is 20 % above: not reproduced.
    At one learning rate per arm, no winner is claimed."""
    runs = efficiency_runs({4: 0.0102})
    lora = runs["method"] == "lora"
    runs.loc[lora, "final_test_loss"] *= 1.2 / 1.02
    table = statistics.efficiency_table(runs)
    assert list(table.columns) == statistics.EFFICIENCY_COLUMNS
    assert table["test_loss_vs_full"].iloc[0] == pytest.approx(1.2)
    assert table["val_loss_vs_full"].iloc[0] == pytest.approx(1.02)
    result = findings.efficiency(runs, table, tolerance=0.05)
    assert result.verdict == findings.NOT_REPRODUCED and "final test MSE" in result.evidence
    assert result.deciding.budget == "lora r4: 2; full: 2"
    untuned = efficiency_runs({4: 0.0102}, lrs=(1e-3,))
    result = findings.efficiency(untuned, statistics.efficiency_table(untuned), tolerance=0.05)
    assert result.verdict == INCONCLUSIVE and "lora r4, full: one learning rate" in result.evidence
