"""The deep models' findings can come out either way: each is computed from hand-made tables."""

import itertools

import pandas as pd

from lorasweep.analysis import deep_findings, findings
from lorasweep.analysis.intervals import INCONCLUSIVE
from tests.helpers import as_stored

TYPES = {"attention": "q+k+v+o", "mlp": "up+down", "all": "q+k+v+o+up+down", "q": "q",
         "q|v": "q+v"}  # fmt: skip
WIDTHS = {"q": 16, "k": 16, "v": 16, "o": 16, "up": 24, "down": 24}
"""d_in + d_out of each matrix type of a transformer with d_model 8 and d_ff 16 (1 block)."""


def deep_runs(
    losses: dict[tuple[str, int], float], shifted="mlp", floor=0.01, lrs=(0.01, 0.03)
) -> pd.DataFrame:
    """LoRA runs of one transformer, two seeds each, with final losses by (targets, rank) at lr
    0.01 (twice that at any other lr of ``lrs``), validation and test alike."""
    rows = []
    for (targets, rank), loss in losses.items():
        types = TYPES[targets]
        covers = set(TYPES[shifted].split("+")) <= set(types.split("+"))
        for seed, lr in itertools.product((0, 1), lrs):
            level = loss * (1 + 0.01 * seed) * (1 if lr == 0.01 else 2)
            rows.append(
                {
                    "run_id": f"{targets}_r{rank}_lr{lr:g}_s{seed}", "dataset": "tf",
                    "method": "lora", "rank": rank, "alpha": 8.0, "scaling": "standard",
                    "init": "kaiming", "lr": lr, "lr_ratio": 1.0, "seed": seed, "status": "ok",
                    "final_val_loss": level, "final_test_loss": level,
                    "dataset_kind": "transformer",
                    "task_rank": 2, "noise_floor": floor, "targets": targets,
                    "adapted_types": types, "shifted": shifted, "d_model": 8, "n_layers": 1,
                    "n_heads": 2, "d_ff": 16,
                    "trainable_params": rank * sum(WIDTHS[t] for t in types.split("+")),
                    "optimal_val_loss": floor if covers and rank >= 2 else None,
                }
            )  # fmt: skip
    return as_stored(pd.DataFrame(rows))


def test_floor_reached_or_not_at_the_smallest_covering_rank():
    ok = deep_findings.floor_reached(
        deep_runs({("mlp", 1): 0.2, ("mlp", 2): 0.0103, ("all", 2): 0.0101, ("attention", 8): 0.3}),
        tolerance=0.05,
    )
    assert ok.verdict == findings.REPRODUCED
    assert "targets mlp at r = 2" in ok.evidence and "+3.5 %" in ok.evidence
    straddles = deep_findings.floor_reached(deep_runs({("mlp", 2): 0.0104}), tolerance=0.05)
    assert straddles.verdict == INCONCLUSIVE, "the seeds' +4.0 % and +5.0 % straddle 5 %"
    assert "attention" not in ok.evidence, "attention does not cover the shift in the MLP"
    bad = deep_findings.floor_reached(
        deep_runs({("mlp", 2): 0.02, ("mlp", 4): 0.0101, ("all", 2): 0.0101}), tolerance=0.05
    )
    assert bad.verdict == findings.NOT_REPRODUCED
    untested = deep_findings.floor_reached(deep_runs({("attention", 8): 0.3}), tolerance=0.05)
    assert untested.verdict == findings.NOT_TESTED


def test_a_zero_noise_floor_leaves_the_dataset_out_of_the_floor_finding():
    noiseless = deep_runs({("mlp", 2): 0.0001, ("all", 2): 0.0001}, floor=0.0)
    result = deep_findings.floor_reached(noiseless, tolerance=0.05)
    assert result.verdict == findings.NOT_TESTED and "inf" not in result.evidence


def test_budget_spread_beats_concentration_or_not():
    budget = {("q", 8): 0.9, ("q|v", 4): 0.5, ("attention", 2): 0.0105}
    spread = deep_findings.budget_spread_wins(deep_runs(budget, shifted="attention"))
    assert spread.verdict == findings.REPRODUCED
    assert "rank × types = 8 (128 trainable parameters)" in spread.evidence
    assert "q+k+v+o at r = 2" in spread.evidence and "against q at r = 8" in spread.evidence
    concentrated = deep_findings.budget_spread_wins(
        deep_runs({**budget, ("attention", 2): 0.95}, shifted="attention")
    )
    assert concentrated.verdict == findings.NOT_REPRODUCED
    table = deep_findings.budget_comparisons(deep_runs(budget, shifted="attention"))
    assert list(table["targets"]) == ["q", "q|v", "attention"]
    assert table["comparison"].nunique() == 1
    unequal = deep_runs({("q", 8): 0.9, ("mlp", 4): 0.5}, shifted="attention")
    assert deep_findings.budget_spread_wins(unequal).verdict == findings.NOT_TESTED


def test_budget_spread_is_inconclusive_where_the_seeds_disagree_and_untuned_claims_no_winner():
    runs = deep_runs({("q", 8): 0.5, ("attention", 2): 0.5}, shifted="attention")
    at_best = runs["lr"] == 0.01
    spread_runs = at_best & (runs["targets"] == "attention")
    runs.loc[spread_runs, "final_test_loss"] = runs.loc[spread_runs, "seed"].map({0: 0.4, 1: 0.6})
    result = deep_findings.budget_spread_wins(runs)
    assert result.verdict == INCONCLUSIVE and result.deciding.interval.n == 2
    assert result.deciding.budget == "attention r2: 2; q r8: 2"
    one_lr = deep_runs({("q", 8): 0.9, ("attention", 2): 0.0105}, shifted="attention", lrs=(0.01,))
    untuned = deep_findings.budget_spread_wins(one_lr)
    assert untuned.verdict == INCONCLUSIVE and findings.UNTUNED in untuned.evidence


def test_attention_only_regrets_or_not():
    sweep = {("attention", 2): 0.2, ("mlp", 2): 0.0102, ("all", 2): 0.0101,
             ("attention", 4): 0.19, ("mlp", 4): 0.0101, ("all", 4): 0.0101,
             ("attention", 1): 0.0101, ("mlp", 1): 0.05, ("all", 1): 0.04}  # fmt: skip
    regret = deep_findings.attention_only_regrets(deep_runs(sweep))
    assert regret.verdict == findings.REPRODUCED
    assert "tf at r = 2" in regret.evidence and "r = 1" not in regret.evidence
    close = deep_findings.attention_only_regrets(deep_runs({**sweep, ("attention", 4): 0.012}))
    assert close.verdict == findings.NOT_REPRODUCED, "attention within 25 % at r = 4"
    far = deep_findings.attention_only_regrets(deep_runs({**sweep, ("mlp", 2): 0.013}))
    assert far.verdict == findings.NOT_REPRODUCED, "MLP-only 29 % from all-layer LoRA"
    elsewhere = deep_findings.attention_only_regrets(deep_runs(sweep, shifted="attention"))
    assert elsewhere.verdict == findings.NOT_TESTED, "the shift is not in the MLP"


def test_attention_only_is_inconclusive_where_the_seeds_disagree_and_without_tuning():
    sweep = {("attention", 2): 0.2, ("mlp", 2): 0.0102, ("all", 2): 0.0101}
    runs = deep_runs(sweep)
    noisy = (runs["targets"] == "mlp") & (runs["lr"] == 0.01)
    runs.loc[noisy, "final_test_loss"] = runs.loc[noisy, "seed"].map({0: 0.0101, 1: 0.0122})
    result = deep_findings.attention_only_regrets(runs)
    assert result.verdict == INCONCLUSIVE, "MLP-only +0 % and +19 % from all straddle 10 %"
    assert result.deciding.interval.n == 2 and result.deciding.threshold == 0.1
    assert result.deciding.budget == "attention r2: 2; mlp r2: 2; all r2: 2"
    untuned = deep_findings.attention_only_regrets(deep_runs(sweep, lrs=(0.01,)))
    assert untuned.verdict == INCONCLUSIVE and findings.UNTUNED in untuned.evidence


def test_deep_findings_appear_only_with_a_deep_dataset():
    assert len(deep_findings.deep_findings(deep_runs({("mlp", 2): 0.0101}), 0.05)) == 3
    single = deep_runs({("mlp", 2): 0.0101}).assign(dataset_kind="lowrank")
    assert deep_findings.deep_findings(single, 0.05) == []


def test_the_deep_findings_judge_each_adapter_method_on_its_own_runs():
    """With LoRA and DoRA runs of the same sweep, each method is checked on its own runs and
    named in its check: the best settings have a row per method and target set at each rank,
    never read as one."""
    sweep = {("attention", 2): 0.2, ("mlp", 2): 0.0102, ("all", 2): 0.0101}
    lora = deep_runs(sweep)
    dora = lora.assign(method="dora", run_id="dora_" + lora["run_id"])
    both = pd.concat([lora, dora], ignore_index=True)
    regret = deep_findings.attention_only_regrets(both)
    assert regret.verdict == findings.REPRODUCED
    assert "tf at LoRA r = 2" in regret.evidence and "tf at DoRA r = 2" in regret.evidence
    floor = deep_findings.floor_reached(both, tolerance=0.05)
    assert "tf, DoRA targets mlp at r = 2" in floor.evidence
    assert "tf, LoRA targets mlp at r = 2" in floor.evidence
    assert "LoRA r" not in deep_findings.attention_only_regrets(lora).evidence
