"""The newer papers' measures on hand-made cases with a known answer."""

import math

import pandas as pd
import pytest
import torch

from lorasweep.analysis import evidence_findings as evidence
from lorasweep.analysis import forgetting
from lorasweep.analysis.findings import NOT_REPRODUCED, NOT_TESTED, REPRODUCED
from lorasweep.analysis.intervals import INCONCLUSIVE
from lorasweep.analysis.intruders import intruder_counts
from lorasweep.analysis.learning_rate import (
    OPTIMA_COLUMNS,
    lr_optima,
    optimal_learning_rate,
    ratio_spread,
)
from tests.helpers import as_stored

GRID = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]


@pytest.mark.parametrize("true_lr", [2e-4, 1e-3, 4.2e-3, 1.5e-2])
def test_optimum_of_a_u_curve_is_recovered_between_grid_points(true_lr):
    losses = [0.01 * 10 ** (0.7 * (math.log10(lr) - math.log10(true_lr)) ** 2) for lr in GRID]
    lr, at_edge = optimal_learning_rate(GRID, losses)
    assert lr == pytest.approx(true_lr, rel=1e-9)
    assert not at_edge


HALF_DECADES = [10 ** (k / 2) for k in range(-10, -1)]
"""1e-5 … 3e-2 in half-decade steps, as config/regret.yaml sweeps learning rates."""


def cliff_curve(true_lr: float, gentle: float, steep: float) -> list[float]:
    """Final loss against learning rate that falls as a power law up to ``true_lr`` and then
    rises off an exponential cliff, as training does towards divergence: skewed, and no
    parabola in (log lr, log loss)."""
    losses = []
    for lr in HALF_DECADES:
        u = math.log10(lr / true_lr)
        rise = min(steep * (10**u - 1), 700.0)
        losses.append(0.01 * (10 ** (-gentle * u) if u <= 0 else math.exp(rise)))
    return losses


@pytest.mark.parametrize(("gentle", "steep"), [(0.3, 4.0), (0.1, 10.0), (1.0, 6.0)])
@pytest.mark.parametrize("true_lr", [2.2e-4, 1e-3, 1.9e-3, 4.5e-3])
def test_optimum_of_a_skewed_cliff_curve_is_within_half_a_grid_step(true_lr, gentle, steep):
    losses = cliff_curve(true_lr, gentle, steep)
    best = min(range(len(losses)), key=losses.__getitem__)
    assert 2 <= best <= len(losses) - 3, "two grid points on each side of the lowest"
    lr, at_edge = optimal_learning_rate(HALF_DECADES, losses)
    half_step = 0.25
    assert abs(math.log10(lr / true_lr)) <= half_step, (lr, true_lr)
    assert not at_edge


def test_optimum_at_the_grid_edge_is_flagged():
    losses = [1.0, 0.5, 0.3, 0.2, 0.15, 0.1]
    assert optimal_learning_rate(GRID, losses) == (GRID[-1], True)
    assert optimal_learning_rate(GRID, losses[::-1]) == (GRID[0], True)


def test_diverged_points_count_as_infinite_loss():
    losses = [0.5, 0.2, 0.1, 0.3, math.nan, math.inf]
    lr, at_edge = optimal_learning_rate(GRID, losses)
    assert 3e-4 < lr < 3e-3 and not at_edge


def _diagonal_base(d):
    return torch.diag(torch.linspace(2.0, 1.0, d, dtype=torch.float64))


def test_no_intruders_in_the_base_itself_or_a_small_in_subspace_update():
    w0 = torch.randn(24, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert set(intruder_counts(w0, w0).values()) == {0}
    u, s, vh = torch.linalg.svd(w0, full_matrices=False)
    nudged = w0 + 0.05 * s[0] * torch.outer(u[:, 0], vh[0])
    assert set(intruder_counts(w0, nudged).values()) == {0}


def _hadamard(d: int) -> torch.Tensor:
    """A d×d Sylvester–Hadamard matrix (entries ±1, orthogonal columns; d a power of 2)."""
    hadamard = torch.tensor([[1.0]], dtype=torch.float64)
    while hadamard.shape[0] < d:
        hadamard = torch.cat(
            [torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)]
        )
    return hadamard


def test_a_large_update_orthogonal_to_every_base_direction_gives_k_intruders():
    d, k = 16, 3
    w0 = _diagonal_base(d)
    spread = _hadamard(d) / math.sqrt(d)
    update = sum(100.0 * (k - j) * torch.outer(spread[:, j], spread[:, j + 5]) for j in range(k))
    counts = intruder_counts(w0, w0 + update, top_k=k)
    assert set(counts.values()) == {k}


@pytest.mark.peft
def test_intruder_counts_match_peft_on_the_same_weights():
    """PEFT's reduce_intruder_dimension logs how many intruders each LoRA layer has."""
    peft = pytest.importorskip("peft")
    from peft.tuners.lora.intruders import reduce_intruder_dimension

    gen = torch.Generator().manual_seed(3)
    base = torch.nn.Sequential()
    base.add_module("layer", torch.nn.Linear(32, 32, bias=False))
    model = peft.get_peft_model(
        base, peft.LoraConfig(r=4, lora_alpha=4, target_modules=["layer"], init_lora_weights=False)
    )
    layer = model.base_model.model.layer
    with torch.no_grad():
        layer.base_layer.weight.copy_(torch.randn(32, 32, generator=gen))
        layer.lora_A["default"].weight.copy_(3 * torch.randn(4, 32, generator=gen))
        layer.lora_B["default"].weight.copy_(3 * torch.randn(32, 4, generator=gen))
    w0 = layer.base_layer.weight.detach().double()
    fine_tuned = w0 + layer.get_delta_weight("default").detach().double()
    messages = []
    reduce_intruder_dimension(model, logging_sink=messages.append)
    logged = 0 if "No intruders" in messages[0] else int(messages[0].rsplit(" ", 1)[1])
    ours = intruder_counts(w0, fine_tuned, top_k=10, epsilons=[0.5])[0.5]
    assert ours == logged


# --- learning-rate optima and their ratio, from runs.csv-shaped tables ---------------------


def u_curve_runs(optimum_by_curve: dict, seeds=(0, 1, 2), grid=GRID, diverge_above=None):
    """runs.csv rows whose final loss is a log-log parabola around each curve's optimum;
    ``optimum_by_curve`` maps (method, rank, scaling) to a function of the seed."""
    rows = []
    for (method, rank, scaling), optimum in optimum_by_curve.items():
        for seed in seeds:
            for lr in grid:
                loss = 0.01 * 10 ** (0.7 * (math.log10(lr) - math.log10(optimum(seed))) ** 2)
                diverged = diverge_above is not None and lr > diverge_above
                rows.append(
                    {"run_id": f"{method}{rank}{scaling}{lr}s{seed}", "dataset": "d",
                     "method": method, "rank": rank, "alpha": 32.0 if rank else math.nan,
                     "scaling": scaling, "init": "kaiming" if rank else None,
                     "lr_ratio": 1.0 if rank else math.nan, "lr": lr, "seed": seed,
                     "status": "diverged" if diverged else "ok",
                     "final_val_loss": math.nan if diverged else loss}
                )  # fmt: skip
    return as_stored(pd.DataFrame(rows))


def test_lr_optima_recover_each_curve_and_the_ratio_per_seed():
    runs = u_curve_runs(
        {
            ("full", None, None): lambda s: 1e-3 * (1.1**s),
            ("lora", 4, "standard"): lambda s: 1e-2 * (1.1**s),
            ("lora", 16, "standard"): lambda s: 5e-3,
        }
    )
    optima = lr_optima(runs)
    per_seed = optima[optima["seed"].notna()].set_index(["method", "rank", "seed"])
    assert per_seed.loc[("full", pd.NA, 2), "optimal_lr"].item() == pytest.approx(1.21e-3)
    assert per_seed.loc[("lora", 4, 1), "optimal_lr"] == pytest.approx(1.1e-2)
    assert per_seed.loc[("lora", 4, 1), "ratio_to_full"] == pytest.approx(10.0)
    assert per_seed.loc[("lora", 16, 2), "ratio_to_full"] == pytest.approx(5 / 1.21)
    assert not optima["at_edge"].any() and (optima["lrs"] == len(GRID)).all()
    mean = optima[optima["seed"].isna()].set_index("rank", drop=False)
    assert mean.loc[4, "ratio_to_full"] == pytest.approx(10.0, rel=0.02)
    geometric, low, high = ratio_spread(per_seed.loc[("lora", 16), "ratio_to_full"])
    assert (low, high) == pytest.approx((5 / 1.21, 5.0))
    assert geometric == pytest.approx(5 / 1.1)


def test_a_seed_that_diverges_makes_the_mean_curve_infinite_there():
    runs = u_curve_runs({("lora", 4, "standard"): lambda s: 1e-3}, diverge_above=1e-2)
    optima = lr_optima(runs)
    assert optima["optimal_lr"].tolist() == pytest.approx([1e-3] * 4)
    assert optima["min_loss"].tolist() == pytest.approx([0.01] * 4)
    assert lr_optima(runs[runs["lr"] == 1e-3]).empty, "one learning rate is no curve"


def optima_table(ratio: float, rank_optima: dict, at_edge=False) -> pd.DataFrame:
    """A hand-made lr_optima.csv: full FT's optimum 1e-3; LoRA's under each scaling rule at
    each rank from ``rank_optima`` ({scaling: {rank: optimum}}), mean curves and 2 seeds."""
    rows = [{"dataset": "d", "method": "full", "optimal_lr": 1e-3}]
    for scaling, by_rank in rank_optima.items():
        for rank, optimum in by_rank.items():
            rows.append({"dataset": "d", "method": "lora", "rank": rank, "alpha": 32.0,
                         "scaling": scaling, "init": "kaiming", "lr_ratio": 1.0,
                         "optimal_lr": optimum * ratio})  # fmt: skip
    mean = pd.DataFrame(rows).assign(seed=pd.NA, lrs=7, at_edge=at_edge, min_loss=0.01)
    seeds = [mean.assign(seed=s, optimal_lr=mean["optimal_lr"] * (1 + 0.1 * s)) for s in (0, 1)]
    table = pd.concat([mean, *seeds], ignore_index=True).reindex(columns=OPTIMA_COLUMNS)
    table["seed"] = pd.array(table["seed"], dtype="Int64")
    full = table[table["method"] == "full"].set_index("seed", drop=False)["optimal_lr"]
    table["ratio_to_full"] = [
        lr / full[full.index.isna()].iloc[0] if pd.isna(s) else lr / full[s]
        for lr, s in zip(table["optimal_lr"], table["seed"], strict=True)
    ]
    table.loc[table["method"] == "full", "ratio_to_full"] = math.nan
    return table


FLAT = {4: 1e-3, 16: 1.2e-3, 64: 0.9e-3}
DRIFTING = {4: 2e-3, 16: 1e-3, 64: 0.4e-3}


def test_lr_ratio_finding_both_ways_and_untested_at_the_grid_edge():
    assert evidence.lr_ratio(optima_table(10, {"standard": FLAT})).verdict == REPRODUCED
    assert evidence.lr_ratio(optima_table(1.5, {"standard": FLAT})).verdict == NOT_REPRODUCED
    assert evidence.lr_ratio(optima_table(50, {"standard": FLAT})).verdict == NOT_REPRODUCED
    edge = optima_table(10, {"standard": FLAT}, at_edge=True)
    assert evidence.lr_ratio(edge).verdict == NOT_TESTED
    assert evidence.lr_ratio(None).verdict == NOT_TESTED
    assert "10×" in evidence.lr_ratio(optima_table(10, {"standard": FLAT})).evidence


def test_lr_ratio_interval_over_units_and_inconclusive_where_it_straddles_the_range():
    """Seed 1's LoRA optima are 4× seed 0's: per-seed ratios 2.5× and 10× straddle 3×."""
    table = optima_table(2.5, {"standard": FLAT})
    seed_one = (table["method"] == "lora") & (table["seed"] == 1)
    table.loc[seed_one, "optimal_lr"] *= 4
    result = evidence.lr_ratio(table)
    assert result.verdict == INCONCLUSIVE and "95 % CI" in result.evidence
    interval = result.deciding.interval
    assert interval.n == 2 and interval.low == pytest.approx(2.5)
    assert interval.high == pytest.approx(10.0) and result.deciding.threshold == pytest.approx(3)
    assert interval.estimate == pytest.approx(5.0), "the geometric mean of 2.5× and 10×"
    assert result.deciding.budget == "lora r4: 7; full: 7"


def test_rank_spread_is_inconclusive_where_the_units_disagree():
    """Seed 0 drifts 2.5× across ranks, seed 1 is flat: the interval straddles 2×."""
    table = optima_table(10, {"standard": {4: 1e-3, 16: 1e-3}, "rslora": {4: 1e-3, 16: 1e-3}})
    drift = (table["seed"] == 0) & (table["rank"] == 16)
    table.loc[drift, "optimal_lr"] *= 2.5
    assert evidence.lr_rank_free_under_standard(table).verdict == INCONCLUSIVE
    assert evidence.lr_drifts_under_rslora(table).verdict == INCONCLUSIVE


def test_rank_dependence_findings_both_ways():
    flat = optima_table(10, {"standard": FLAT, "rslora": FLAT})
    drifting = optima_table(10, {"standard": DRIFTING, "rslora": DRIFTING})
    assert evidence.lr_rank_free_under_standard(flat).verdict == REPRODUCED
    assert evidence.lr_rank_free_under_standard(drifting).verdict == NOT_REPRODUCED
    assert evidence.lr_drifts_under_rslora(drifting).verdict == REPRODUCED
    assert evidence.lr_drifts_under_rslora(flat).verdict == NOT_REPRODUCED
    below_four = optima_table(10, {"standard": {1: 1e-3, 2: 5e-3, 4: 1e-3}})
    assert evidence.lr_rank_free_under_standard(below_four).verdict == NOT_TESTED
    assert (
        evidence.lr_drifts_under_rslora(optima_table(10, {"standard": FLAT})).verdict == NOT_TESTED
    )


# --- forgetting at matched target loss ------------------------------------------------------


def trajectories(lora_forgets: float, full_forgets: float, ranks=(4, 16)):
    """runs.csv and epochs.csv of a dataset with a source task: each run's target loss falls
    from 1 to 0.1 over 4 epochs while its source loss rises by ``*_forgets`` per epoch."""
    runs, epochs = [], []
    curves = [("full", None, full_forgets)] + [("lora", r, lora_forgets) for r in ranks]
    for method, rank, per_epoch in curves:
        for seed in (0, 1):
            run_id = f"{method}{rank}_s{seed}"
            runs.append({"run_id": run_id, "dataset": "d", "method": method, "rank": rank,
                         "alpha": 8.0, "scaling": "standard", "init": "kaiming", "lr": 1e-3,
                         "lr_ratio": 1.0, "seed": seed, "status": "ok",
                         "forgetting": 4 * per_epoch})  # fmt: skip
            for epoch in range(5):
                epochs.append({"run_id": run_id, "epoch": epoch, "val_loss": 10 ** (-epoch / 4),
                               "source_loss": 0.01 + epoch * per_epoch})  # fmt: skip
    return as_stored(pd.DataFrame(runs)), pd.DataFrame(epochs)


def test_frontier_is_the_least_forgetting_at_or_below_each_target_loss():
    points = pd.DataFrame({"val_loss": [0.5, 0.2, 0.3, 0.1], "forgetting": [0.1, 0.4, 0.05, 0.6]})
    steps = forgetting.frontier(points)
    assert steps["val_loss"].tolist() == [0.1, 0.2, 0.3, 0.5]
    assert steps["forgetting"].tolist() == [0.6, 0.4, 0.05, 0.05]
    assert forgetting.least_forgetting(points, 0.25) == 0.4
    assert math.isnan(forgetting.least_forgetting(points, 0.05))


def test_matched_forgetting_of_hand_made_trajectories():
    runs, epochs = trajectories(lora_forgets=0.001, full_forgets=0.004)
    matched = forgetting.matched_forgetting(forgetting.checkpoints(runs, epochs))
    assert matched["rank"].tolist() == [4, 16]
    assert matched["matched_val_loss"].tolist() == pytest.approx([0.1, 0.1])
    assert matched["lora_forgetting"].tolist() == pytest.approx([0.004, 0.004])
    assert matched["full_forgetting"].tolist() == pytest.approx([0.016, 0.016])


def seeded_trajectories(lora_forgets: list[float], full_forgets: list[float]):
    """:func:`trajectories` with per-seed forgetting rates: seed s of LoRA (every rank) forgets
    ``lora_forgets[s]`` per epoch, of full FT ``full_forgets[s]``."""
    frames = [trajectories(lo, fu) for lo, fu in zip(lora_forgets, full_forgets, strict=True)]
    runs, epochs = [], []
    for seed, (r, e) in enumerate(frames):
        keep = r[r["seed"] == 0].assign(seed=seed)
        keep = keep.assign(run_id=keep["run_id"].str.replace("_s0", f"_s{seed}"))
        e = e[e["run_id"].str.endswith("_s0")]
        runs.append(keep)
        epochs.append(e.assign(run_id=e["run_id"].str.replace("_s0", f"_s{seed}")))
    return as_stored(pd.concat(runs, ignore_index=True)), pd.concat(epochs, ignore_index=True)


def forgetting_verdict(lora_forgets, full_forgets) -> str:
    from lorasweep.tables.forgetting import forgetting_table

    table = forgetting_table(*seeded_trajectories(lora_forgets, full_forgets), datasets={})
    return evidence.forgets_less(table).verdict


def test_forgetting_finding_in_every_outcome():
    from lorasweep.analysis.findings import INCONCLUSIVE

    assert forgetting_verdict([0.001, 0.0011, 0.0009], [0.004, 0.0041, 0.0039]) == REPRODUCED
    assert forgetting_verdict([0.004, 0.0041, 0.0039], [0.001, 0.0011, 0.0009]) == NOT_REPRODUCED
    assert forgetting_verdict([0.001, 0.004, 0.002], [0.003, 0.001, 0.004]) == INCONCLUSIVE
    runs, epochs = seeded_trajectories([0.001] * 2, [0.004] * 2)
    from lorasweep.tables.forgetting import forgetting_table

    no_source = forgetting_table(runs.assign(forgetting=math.nan), epochs, datasets={})
    assert evidence.forgets_less(no_source).verdict == NOT_TESTED
    assert evidence.forgets_less(None).verdict == NOT_TESTED


def test_forgetting_table_has_pooled_and_per_unit_rows_and_the_prediction():
    from lorasweep.tables.forgetting import forgetting_table
    from lorasweep.tasks import synthetic

    runs, epochs = seeded_trajectories([0.001, 0.002], [0.004, 0.003])
    runs = runs.assign(bias="none")
    source = synthetic.SourceSpec(n=8, top_directions=4, leak=0.1)
    spec = synthetic.DatasetSpec(name="d", kind="lowrank", in_features=16, out_features=16,
                                 n_train=64, n_val=8, noise_std=0.1, task_rank=2,
                                 source=source)  # fmt: skip
    table = forgetting_table(runs, epochs, {"d": synthetic.generate(spec)})
    assert table["unit"].tolist() == ["pooled", "pooled", "seed", "seed", "seed", "seed"]
    per_seed = table[table["unit"] == "seed"]
    assert per_seed["seed"].tolist() == [0, 0, 1, 1] and per_seed["rank"].tolist() == [4, 16] * 2
    assert per_seed["lora_forgetting"].tolist() == pytest.approx([0.004, 0.004, 0.008, 0.008])
    assert per_seed["full_forgetting"].tolist() == pytest.approx([0.016, 0.016, 0.012, 0.012])
    assert table["predicted_full"].notna().all()
    assert (table["predicted_lora_noise"] < table["predicted_full_noise"]).all()
    finding = evidence.forgets_less(table)
    assert finding.verdict == REPRODUCED
    assert "estimation theory predicts" in finding.evidence
    assert finding.deciding.interval.n == 2


def test_matching_waits_for_the_worse_method_to_reach_its_best():
    runs, epochs = trajectories(lora_forgets=0.001, full_forgets=0.002)
    full = epochs["run_id"].str.startswith("full")
    epochs.loc[full, "val_loss"] = epochs.loc[full, "val_loss"] * 3
    matched = forgetting.matched_forgetting(forgetting.checkpoints(runs, epochs))
    assert matched["matched_val_loss"].tolist() == pytest.approx([0.3, 0.3])
    assert matched["full_forgetting"].tolist() == pytest.approx([0.008, 0.008])
    # LoRA's first checkpoint at or below 0.3 is epoch 3 (target loss 10^(−3/4) ≈ 0.18)
    assert matched["lora_forgetting"].tolist() == pytest.approx([0.003, 0.003])


# --- intruder dimensions: the finding, and the table from run folders -----------------------


def intruder_tables(lora_counts: dict, full_count, lora_null=0, full_null=0, seeds=(0, 1)):
    """runs.csv and intruders.csv: LoRA at each rank with ``lora_counts[rank]`` intruders at
    ε = 0.5 (a number, or one per seed), full FT with ``full_count``; their null controls
    ``lora_null`` and ``full_null``."""

    def at(value, i):
        return value[i] if isinstance(value, list | tuple) else value

    runs, rows = [], []
    for method, rank, count, null in [("full", None, full_count, full_null)] + [
        ("lora", r, c, lora_null) for r, c in lora_counts.items()
    ]:
        for i, seed in enumerate(seeds):
            run_id = f"{method}{rank}_s{seed}"
            runs.append({"run_id": run_id, "dataset": "d", "method": method, "rank": rank,
                         "alpha": 8.0 if rank else math.nan, "scaling": "standard" if rank
                         else None, "init": "kaiming" if rank else None, "lr": 1e-3,
                         "lr_ratio": 1.0 if rank else math.nan, "seed": seed, "status": "ok",
                         "final_val_loss": 0.01})  # fmt: skip
            for eps in (0.4, 0.5, 0.6):
                rows.append({"dataset": "d", "task_seed": 0, "run_id": run_id,
                             "layer": "linear", "top_k": 10, "epsilon": eps,
                             "intruders": at(count, i), "null_intruders": at(null, i)})  # fmt: skip
    rows.append({"dataset": "d", "task_seed": 0, "run_id": math.nan, "layer": "linear",
                 "top_k": 10, "epsilon": 0.5, "intruders": 0, "null_intruders": 0})  # fmt: skip
    return as_stored(pd.DataFrame(runs)), pd.DataFrame(rows)


def test_intruder_finding_in_every_outcome():
    from lorasweep.analysis.findings import INCONCLUSIVE

    finding = evidence.lora_introduces_intruders(*intruder_tables({1: 3, 8: 1, 64: 0}, 0))
    assert finding.verdict == REPRODUCED
    assert "the true W₀ + ΔW* has 0" in finding.evidence
    assert finding.deciding.interval.estimate == 3
    full_too = evidence.lora_introduces_intruders(*intruder_tables({1: 3, 64: 0}, 2))
    assert full_too.verdict == NOT_REPRODUCED
    lora_none = evidence.lora_introduces_intruders(*intruder_tables({1: 0, 64: 0}, 0))
    assert lora_none.verdict == NOT_REPRODUCED
    as_null = evidence.lora_introduces_intruders(*intruder_tables({1: 3, 8: 3}, 0, lora_null=3))
    assert as_null.verdict == NOT_REPRODUCED, "as many as the null control is no excess"
    full_like_null = evidence.lora_introduces_intruders(*intruder_tables({1: 4}, 2, 1, 2))
    assert full_like_null.verdict == REPRODUCED
    one_more = evidence.lora_introduces_intruders(*intruder_tables({1: 1, 8: 1}, 0))
    assert one_more.verdict == REPRODUCED, "one more than the control on every seed"
    spread = intruder_tables({1: [0, 3, 0, 1]}, 0, seeds=(0, 1, 2, 3))
    assert evidence.lora_introduces_intruders(*spread).verdict == INCONCLUSIVE
    runs, table = intruder_tables({1: 3}, 0)
    lora_only = runs[runs["method"] == "lora"]
    assert evidence.lora_introduces_intruders(lora_only, table).verdict == NOT_TESTED


def test_intruder_means_table_holds_counts_and_null_controls_per_epsilon():
    runs, table = intruder_tables({1: 3, 8: 1}, 0, lora_null=1)
    means = evidence.intruder_means(runs, table)
    assert sorted(means["epsilon"].unique()) == [0.4, 0.5, 0.6]
    at = means[means["epsilon"] == 0.5].set_index("method")
    assert at.loc["full", "mean"] == 0 and at.loc["full", "count"] == 2
    lora = means[(means["epsilon"] == 0.5) & (means["method"] == "lora")]
    assert lora["rank"].tolist() == [1, 8] and lora["mean"].tolist() == [3, 1]
    assert lora["null_mean"].tolist() == [1, 1]


def test_null_perturbation_keeps_rank_and_norm_and_is_seeded():
    from lorasweep.seeding import generator
    from lorasweep.tables.intruders import null_perturbation

    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(12, 3, generator=gen, dtype=torch.float64) @ torch.randn(
        3, 10, generator=gen, dtype=torch.float64
    )
    null = null_perturbation(delta, generator("intruder-null", "x"))
    assert torch.linalg.matrix_rank(null) == 3
    assert torch.linalg.svdvals(null) == pytest.approx(torch.linalg.svdvals(delta))
    assert torch.equal(null, null_perturbation(delta, generator("intruder-null", "x")))
    assert not torch.allclose(null, null_perturbation(delta, generator("intruder-null", "y")))


def test_intruder_table_counts_each_run_folder_per_layer(tmp_path):
    from lorasweep.io import save_tensors, write_json
    from lorasweep.tables.intruders import intruder_table
    from lorasweep.tasks import synthetic

    data = synthetic.generate(
        synthetic.DatasetSpec(name="d", kind="lowrank", in_features=16, out_features=16,
                              n_train=8, n_val=8, noise_std=0.1, task_rank=2, task_scale=0.1)
    )  # fmt: skip
    w0 = data["W0"]
    u, _, vh = torch.linalg.svd(w0.double())
    spread = u @ (_hadamard(16)[:, 1] / 4)  # |cos| = 1/4 with every left singular vector of W₀
    orthogonal = 100 * torch.outer(spread, vh[0])
    for name, weight in (("same", w0), ("far", (w0.double() + orthogonal).float())):
        folder = tmp_path / name
        write_json(folder / "metrics.json", {"run_id": name, "dataset": "d", "method": "full",
                                             "status": "ok"})  # fmt: skip
        save_tensors(folder / "weights.safetensors", {"weight": weight, "bias": data["b0"]})
    table = intruder_table([tmp_path / "same", tmp_path / "far"], {"d": data})
    assert set(table["layer"]) == {"linear"} and set(table["top_k"]) == {10}
    assert set(table["dataset"]) == {"d"} and set(table["task_seed"]) == {0}
    same = table[table["run_id"] == "same"]
    assert (same["null_intruders"] == 0).all(), "a zero update's null control is zero too"
    counts = table.set_index(["run_id", "epsilon"])["intruders"]
    assert counts[("same", 0.5)] == 0
    assert table[table["run_id"].isna()]["intruders"].tolist() == [0, 0, 0]
    direct = intruder_counts(w0, w0.double() + orthogonal)
    assert [counts[("far", eps)] for eps in (0.4, 0.5, 0.6)] == list(direct.values())
    assert counts[("far", 0.4)] == 1, "the update's one direction is an intruder"


def test_learning_rate_figure_draws_a_sweep_of_full_fine_tuning_alone():
    """A preset may sweep only full FT's learning rate (config/deep.yaml does): the figure then
    has a full-FT curve and no LoRA curve."""
    import matplotlib.pyplot as plt

    from lorasweep.figures import FIGURES
    from lorasweep.figures.registry import Tables

    rows = [
        {"dataset": "d", "method": method, "rank": rank, "lr": lr, "scaling": scaling,
         "alpha": alpha, "init": "kaiming", "seed": seed, "status": "ok",
         "final_val_loss": 1.0 + lr + seed / 10}
        for method, rank, scaling, alpha, lrs in (
            ("lora", 4, "standard", 8.0, [0.01]),
            ("full", None, None, None, [0.003, 0.01]),
        )
        for lr in lrs
        for seed in (0, 1)
    ]  # fmt: skip
    tables = Tables(runs=pd.DataFrame(rows), epochs=pd.DataFrame(), lr_optima=pd.DataFrame())
    fig = FIGURES["loss_vs_learning_rate"].draw(tables)
    labels = [label for ax in fig.axes for label in ax.get_legend_handles_labels()[1]]
    assert any("full FT" in label for label in labels)
    assert not any(label.startswith("r=") for label in labels)
    plt.close(fig)


def test_lr_optima_has_one_curve_per_task_replicate_and_seed():
    runs = u_curve_runs({("lora", 4, "standard"): lambda s: 1e-3})
    replicated = pd.concat([runs, runs.assign(task_seed=1, run_id=runs["run_id"] + "_t1")])
    optima = lr_optima(replicated)
    per_unit = optima[optima["seed"].notna()]
    assert len(per_unit) == 2 * runs["seed"].nunique()
    assert set(per_unit["task_seed"]) == {0, 1}
    assert optima.loc[optima["seed"].isna(), "task_seed"].isna().all()
