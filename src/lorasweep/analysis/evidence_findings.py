"""The newer evidence on LoRA against full fine-tuning, checked against this run's tables, with
every range fixed here before any data is seen:

- "LoRA Without Regret" (Schulman et al., Thinking Machines 2025, Fig. 2): LoRA's optimal
  learning rate is 3–30× full fine-tuning's; under α/r it varies less than 2× across ranks
  ≥ 4; under α/√r it drifts with rank (at least 2×).
- "LoRA Learns Less and Forgets Less" (Biderman et al. 2024, Fig. 4): at matched target loss,
  LoRA forgets less of the source task (matching rule in :mod:`lorasweep.analysis.forgetting`).
- "LoRA vs Full Fine-tuning: An Illusion of Equivalence" (Shuttleworth et al. 2024): LoRA
  introduces intruder dimensions, full fine-tuning does not.

A curve can test a learning-rate claim when the optimum of its mean-over-seeds curve
(``lr_optima.csv`` rows with an empty seed) lies inside the grid; its verdict then comes from the
95 % bootstrap interval over units (task replicates, else seeds; :func:`findings.unit_column`) of
the per-unit optima, in log₁₀, each unit's optimum at the edge of the grid left out (it is only a
bound).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from lorasweep.analysis import statistics
from lorasweep.analysis.findings import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    NOT_TESTED,
    REPRODUCED,
    Arms,
    Check,
    Finding,
    from_checks,
    interval_check,
    per_unit,
    unit_column,
)
from lorasweep.analysis.intervals import Interval
from lorasweep.analysis.intruders import TOP_K
from lorasweep.analysis.learning_rate import CURVE_KEYS, OPTIMA_COLUMNS
from lorasweep.models import registry

LR_RATIO_RANGE = (3.0, 30.0)
"""LoRA's optimal learning rate over full fine-tuning's, as LoRA Without Regret reports (~10×)."""
RANK_SPREAD = 2.0
"""Largest over smallest optimal learning rate across ranks: below it the optimum 'barely
depends on rank', at or above it the optimum 'drifts'."""
MIN_RANK = 4
INTRUDER_EPSILON = 0.5
"""PEFT's default ε (with top_k = 10)."""
LORA_INTRUDERS_MIN = 0.5
"""LoRA 'introduces' intruders: more than 0.5 beyond its null control on average (over units
and layers) at some rank. Counts are whole numbers, so the threshold sits between 0 and 1: one
intruder more than the control on every unit is the claim, and an interval of exactly 1 must
not read as a tie with its threshold."""
FULL_INTRUDERS_MAX = 0.5
"""Full fine-tuning 'does not': fewer than 0.5 beyond its null control on average."""


def _verdict(ok: bool) -> str:
    return REPRODUCED if ok else NOT_REPRODUCED


def _mean_curves(optima: pd.DataFrame | None) -> pd.DataFrame:
    """The optima of the mean-over-seeds curves that the grid brackets."""
    if optima is None or optima.empty:
        return pd.DataFrame(columns=OPTIMA_COLUMNS)
    mean = optima[optima["seed"].isna()]
    return mean[~mean["at_edge"].astype(bool)]


def _unit_optima(optima: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The per-unit rows of ``optima`` whose optimum the grid brackets, and the unit: task
    replicates where there are several, else seeds."""
    rows = optima[optima["seed"].notna() & ~optima["at_edge"].astype(bool)]
    several = "task_seed" in optima and optima["task_seed"].dropna().nunique() >= 2
    return rows, "task_seed" if several else "seed"


def _log_check(dataset: str, text: str, logs: pd.Series, unit: str, arms: Arms, **decide):
    """:func:`interval_check` on log₁₀ values (one per unit), its interval and threshold
    reported back on the linear scale (a geometric mean with its interval)."""
    replicates = len(logs) if unit == "task_seed" else 1
    check = interval_check(dataset, text, logs, decide.pop("threshold", 0.0), unit=unit,
                           show=lambda x: f"{10**x:.3g}×", arms=arms, replicates=replicates,
                           **decide)  # fmt: skip
    i = check.interval
    linear = Interval(10**i.estimate, 10**i.low, 10**i.high, i.n)
    return dataclasses.replace(check, interval=linear, threshold=10**check.threshold)


def _lr_arms(rows: pd.DataFrame) -> Arms:
    """The compared curves' numbers of learning rates tried (the whole search of each)."""
    return Arms({_curve_arm(r): (int(r["lrs"]), int(r["lrs"])) for _, r in rows.iterrows()})


def _curve_arm(row: pd.Series) -> str:
    return f"{row['method']} r{int(row['rank'])}" if registry.is_adapter(row["method"]) else "full"


def lr_ratio(optima: pd.DataFrame | None) -> Finding:
    """One check per bracketed α/r LoRA curve: the geometric mean over units of its optimum over
    full fine-tuning's on the same unit, inside :data:`LR_RATIO_RANGE`."""
    low, high = LR_RATIO_RANGE
    statement = (
        f"LoRA's optimal learning rate is {low:g}–{high:g}× full fine-tuning's (LoRA Without "
        "Regret, Fig. 2: about 10× under α/r)."
    )
    curves = _mean_curves(optima)
    full = curves[registry.full_rows(curves["method"])].set_index("dataset")
    lora = curves[
        (registry.factor_rows(curves["method"]))
        & (curves["scaling"] == registry.REFERENCE_SCALING.name)
    ]
    lora = lora[lora["dataset"].isin(full.index)]
    if lora.empty:
        return Finding(
            "lr_ratio", statement, NOT_TESTED,
            "needs LoRA (α/r) and full fine-tuning swept over learning rates that bracket "
            "both optima",
        )  # fmt: skip
    units, unit = _unit_optima(optima)
    full_units = units[registry.full_rows(units["method"])].set_index(["dataset", unit])[
        "optimal_lr"
    ]
    keys = [k for k in CURVE_KEYS if k in optima.columns]
    checks = []
    for _, curve in lora.sort_values(["dataset", "rank"]).iterrows():
        dataset = curve["dataset"]
        mine = units.merge(curve[keys].to_frame().T.astype(object), on=keys, how="inner")
        mine = mine[[(dataset, u) in full_units.index for u in mine[unit]]]
        if mine.empty:
            continue
        theirs = [full_units[(dataset, u)] for u in mine[unit]]
        logs = pd.Series(np.log10(mine["optimal_lr"].to_numpy(float) / np.asarray(theirs, float)),
                         index=mine[unit].to_numpy()).groupby(level=0).mean()  # fmt: skip
        text = (
            f"{dataset}, r = {int(curve['rank'])}, α = {curve['alpha']:g}: full FT's optimum "
            f"{full.loc[dataset, 'optimal_lr']:.3g}, LoRA's {curve['optimal_lr']:.3g} "
            f"(mean curves), LoRA/full {curve['ratio_to_full']:.3g}×; per unit the ratio's "
            f"geometric mean is {10 ** logs.mean():.3g}×"
        )
        full_lrs = int(full.loc[[dataset], "lrs"].iloc[0])
        arms = Arms({_curve_arm(curve): (int(curve["lrs"]),) * 2, "full": (full_lrs,) * 2})
        checks.append(
            _log_check(dataset, text, logs, unit, arms,
                       holds_below=True, within=(math.log10(low), math.log10(high)))
        )  # fmt: skip
    return from_checks("lr_ratio", statement, checks, "no LoRA curve has a bracketed optimum "
                       "on a unit where full fine-tuning's is bracketed too")  # fmt: skip


def _ranked(group: pd.DataFrame, column: str, fmt: str) -> str:
    return ", ".join(
        f"r = {int(r)}: {fmt.format(v)}" for r, v in zip(group["rank"], group[column], strict=True)
    )


GROUP_KEYS = [k for k in CURVE_KEYS if k not in ("method", "rank", "scaling")]
"""What one across-rank group of curves holds fixed besides the method and the scaling rule."""


def _rank_spreads(optima: pd.DataFrame | None, scaling: str) -> list[tuple[str, pd.DataFrame]]:
    """(dataset, curves) per group of ``scaling`` curves that differ only in rank, with at
    least two ranks ≥ :data:`MIN_RANK` whose optimum the grid brackets."""
    curves = _mean_curves(optima)
    lora = curves[(registry.factor_rows(curves["method"])) & (curves["scaling"] == scaling)]
    lora = lora[lora["rank"] >= MIN_RANK]
    return [
        (key[0], group.sort_values("rank"))
        for key, group in lora.groupby(GROUP_KEYS, dropna=False, sort=True)
        if group["rank"].nunique() >= 2
    ]


def _unit_spreads(optima: pd.DataFrame, group: pd.DataFrame) -> tuple[pd.Series, str]:
    """log₁₀ of largest over smallest bracketed optimum across the group's ranks, per unit
    with at least two such ranks."""
    units, unit = _unit_optima(optima)
    first = group.iloc[0]
    mine = units[(registry.factor_rows(units["method"])) & (units["scaling"] == first["scaling"])]
    mine = mine[mine["rank"].isin(group["rank"])]
    for key in GROUP_KEYS:
        mine = mine[mine[key].isna()] if pd.isna(first[key]) else mine[mine[key] == first[key]]
    logs = np.log10(mine["optimal_lr"].astype(float))
    per_rank = logs.groupby([mine[unit], mine["rank"]]).mean()
    per_unit = per_rank.groupby(level=0).agg(["max", "min", "size"])
    per_unit = per_unit[per_unit["size"] >= 2]
    return per_unit["max"] - per_unit["min"], unit


def _rank_finding(claim: str, statement: str, optima, scaling: str, holds_below: bool) -> Finding:
    """The verdict of a claim that the optimum's spread across ranks ≥ :data:`MIN_RANK` under
    ``scaling`` is below :data:`RANK_SPREAD` (``holds_below``) or at least it, per group."""
    groups = _rank_spreads(optima, scaling)
    if not groups:
        return Finding(
            claim, statement, NOT_TESTED,
            f"needs two ranks ≥ {MIN_RANK} under {registry.scaling_label(scaling)} with bracketed "
            "learning-rate optima",
        )  # fmt: skip
    checks = []
    for dataset, group in groups:
        spread = float(group["optimal_lr"].max() / group["optimal_lr"].min())
        logs, unit = _unit_spreads(optima, group)
        if logs.empty:
            continue
        optimum = _ranked(group, "optimal_lr", "{:.3g}")
        alpha = group["alpha"].iloc[0]
        text = (
            f"{dataset}, α = {alpha:g}: optimum {optimum} (mean curves), a {spread:.2f}× spread; "
            f"per unit the spread's geometric mean is {10 ** logs.mean():.2f}×"
        )
        checks.append(
            _log_check(dataset, text, logs, unit, _lr_arms(group),
                       threshold=math.log10(RANK_SPREAD), holds_below=holds_below)
        )  # fmt: skip
    return from_checks(claim, statement, checks, "no unit has two ranks with bracketed optima")


def lr_rank_free_under_standard(optima: pd.DataFrame | None) -> Finding:
    statement = (
        f"Under α/r, LoRA's optimal learning rate varies less than {RANK_SPREAD:g}× across ranks "
        f"≥ {MIN_RANK} (LoRA Without Regret)."
    )
    return _rank_finding("lr_rank_standard", statement, optima, "standard", holds_below=True)


def lr_drifts_under_rslora(optima: pd.DataFrame | None) -> Finding:
    statement = (
        f"Under α/√r, LoRA's optimal learning rate drifts with rank (at least {RANK_SPREAD:g}× "
        f"across ranks ≥ {MIN_RANK})."
    )
    return _rank_finding("lr_rank_rslora", statement, optima, "rslora", holds_below=False)


def forgets_less(matched: pd.DataFrame | None) -> Finding:
    """Decided on ``forgetting.csv`` (:mod:`lorasweep.tables.forgetting`): per dataset and rank,
    the paired difference LoRA − full FT of matched forgetting over independent units, claimed
    below 0; its evidence names what the least-squares fits of the same size would forget."""
    statement = (
        "At matched target loss, LoRA forgets less of the source task than full fine-tuning "
        "(Biderman et al. 2024, Fig. 4), at every rank: least forgetting at the best target "
        "loss both reach, over all learning rates and epochs; the 95 % interval of LoRA − full "
        "FT, paired by task replicate (else seed), lies below 0."
    )
    missing = "needs a dataset with a source task, and both LoRA and full fine-tuning"
    if matched is None or matched.empty:
        return Finding("forgetting", statement, NOT_TESTED, missing)
    pooled = matched[matched["unit"] == "pooled"].set_index(["dataset", "rank"])
    units = matched[matched["unit"] != "pooled"]
    checks = []
    for (dataset, rank), group in units.groupby(["dataset", "rank"], sort=True):
        group = group.dropna(subset=["lora_forgetting", "full_forgetting"])
        if group.empty:
            continue
        unit = str(group["unit"].iloc[0])
        difference = (group["lora_forgetting"] - group["full_forgetting"]).set_axis(
            group[unit].to_numpy()
        )
        text = (
            f"{dataset}, r = {int(rank)}: LoRA {group['lora_forgetting'].mean():.3g} vs full FT "
            f"{group['full_forgetting'].mean():.3g}, difference {difference.mean():.3g}"
        )
        if (dataset, rank) in pooled.index and pd.notna(
            pooled.loc[(dataset, rank), "predicted_lora"]
        ):
            row = pooled.loc[(dataset, rank)]
            text += (
                f"; estimation theory predicts {row['predicted_lora']:.3g} vs "
                f"{row['predicted_full']:.3g} for the least-squares fits (noise alone "
                f"{row['predicted_lora_noise']:.3g} vs {row['predicted_full_noise']:.3g})"
            )  # fmt: skip
        checks.append(interval_check(dataset, text, difference, 0.0, True, unit, _show))
    return from_checks("forgetting", statement, checks, missing)


def _show(x: float) -> str:
    return f"{x:.3g}"


def intruder_runs(
    runs: pd.DataFrame, intruders: pd.DataFrame, epsilon: float = INTRUDER_EPSILON
) -> pd.DataFrame:
    """The selected runs (all seeds) with their intruder count and its null control (each
    averaged over the run's layers) at ``epsilon``: LoRA at the best settings of each dataset,
    scaling rule and rank, full fine-tuning at its best learning rate."""
    at_eps = intruders[np.isclose(intruders["epsilon"], epsilon)].dropna(subset=["run_id"])
    per_run = at_eps.groupby("run_id")[["intruders", "null_intruders"]].mean()
    runs = runs.drop(columns=["intruders", "null_intruders"], errors="ignore")
    runs = runs.join(per_run, on="run_id", how="inner")
    frames = [statistics.best_lora_runs(runs, ["dataset", "scaling", "rank"]),
              statistics.best_full_runs(runs)]  # fmt: skip
    frames = [f for f in frames if not f.empty]
    if not frames:
        return runs.iloc[:0]
    return pd.concat(frames, ignore_index=True)


MEAN_COLUMNS = ["dataset", "method", "scaling", "rank", "epsilon", "mean", "std", "count",
                "null_mean", "null_std"]  # fmt: skip


def intruder_means(runs: pd.DataFrame, intruders: pd.DataFrame | None) -> pd.DataFrame:
    """``intruder_means.csv``: mean ± sd over seeds (and replicates) of the intruder count and
    of its null control, per dataset, method, scaling rule, rank and ε, at the runs
    :func:`intruder_runs` selects. ``rank`` and ``scaling`` are empty for full FT."""
    if intruders is None or intruders.empty or "null_intruders" not in intruders:
        return pd.DataFrame(columns=MEAN_COLUMNS)
    frames = []
    for epsilon in sorted(intruders["epsilon"].unique()):
        chosen = intruder_runs(runs, intruders, epsilon)
        if chosen.empty:
            continue
        keys = ["dataset", "method", "scaling", "rank"]
        counts = statistics.seed_stats(chosen, keys, "intruders")
        nulls = statistics.seed_stats(chosen, keys, "null_intruders")
        nulls = nulls.rename(columns={"mean": "null_mean", "std": "null_std"})
        frames.append(counts.merge(nulls.drop(columns="count"), on=keys, how="left")
                      .assign(epsilon=epsilon))  # fmt: skip
    if not frames:
        return pd.DataFrame(columns=MEAN_COLUMNS)
    table = pd.concat(frames, ignore_index=True).reindex(columns=MEAN_COLUMNS)
    table["rank"] = pd.array(table["rank"], dtype="Int64")
    return table


def _at_some_rank(checks: list[Check]) -> Check:
    """LoRA "introduces intruders at some rank": reproduced if some rank's check is, not
    reproduced if every rank's is not, else inconclusive; the check returned is the rank
    with the largest estimate among those of that verdict."""
    verdicts = {c.verdict for c in checks}
    verdict = REPRODUCED if REPRODUCED in verdicts else (
        NOT_REPRODUCED if verdicts == {NOT_REPRODUCED} else INCONCLUSIVE)  # fmt: skip
    return max((c for c in checks if c.verdict == verdict), key=lambda c: c.interval.estimate)


def lora_introduces_intruders(runs: pd.DataFrame, intruders: pd.DataFrame | None) -> Finding:
    statement = (
        f"LoRA introduces intruder dimensions where full fine-tuning does not (Shuttleworth et "
        f"al. 2024): at ε = {INTRUDER_EPSILON:g} among the top {TOP_K} singular vectors, LoRA "
        f"at its best settings has more than {LORA_INTRUDERS_MIN:g} intruders more than its "
        f"null control (W₀ plus a random perturbation of the same rank and size) at some rank, "
        f"full FT fewer than {FULL_INTRUDERS_MAX:g} more than its own; 95 % intervals of the "
        "paired excess over task replicates (else seeds)."
    )
    missing = "needs LoRA and full fine-tuning runs"
    if intruders is None or intruders.empty or "null_intruders" not in intruders:
        return Finding("intruders", statement, NOT_TESTED, missing)
    chosen = intruder_runs(runs, intruders)
    if chosen.empty or not (
        registry.factor_rows(chosen["method"]).any() and registry.full_rows(chosen["method"]).any()
    ):
        return Finding("intruders", statement, NOT_TESTED, missing)
    chosen = chosen.assign(excess=chosen["intruders"] - chosen["null_intruders"])
    at_eps = intruders[np.isclose(intruders["epsilon"], INTRUDER_EPSILON)]
    truth = at_eps[at_eps["run_id"].isna()].groupby("dataset")["intruders"].mean()
    checks = []
    for dataset, group in chosen.groupby("dataset", sort=True):
        lora = group[registry.factor_rows(group["method"])]
        full = group[registry.full_rows(group["method"])]
        if lora.empty or full.empty:
            continue
        unit = unit_column(group)
        name = (
            f"{dataset} (the true W₀ + ΔW* has {truth[dataset]:g})" if dataset in truth else dataset
        )
        ranked = []
        for (scaling, rank), members in lora.groupby(["scaling", "rank"], sort=True):
            text = (
                f"{name}: LoRA r = {int(rank)} ({registry.scaling_label(scaling)}) has "
                f"{members['intruders'].mean():.2g}, its null "
                f"{members['null_intruders'].mean():.2g}, excess "
                f"{members['excess'].mean():.2g}"
            )
            values = per_unit(members, "excess", unit)
            ranked.append(interval_check(dataset, text, values, LORA_INTRUDERS_MIN, False, unit,
                                         _show))  # fmt: skip
        checks.append(_at_some_rank(ranked))
        text = (
            f"{dataset}: full FT has {full['intruders'].mean():.2g}, its null "
            f"{full['null_intruders'].mean():.2g}, excess {full['excess'].mean():.2g}"
        )
        values = per_unit(full, "excess", unit)
        checks.append(interval_check(dataset, text, values, FULL_INTRUDERS_MAX, True, unit, _show))
    return from_checks("intruders", statement, checks, "no dataset has both methods")


def evidence_findings(
    runs: pd.DataFrame,
    optima: pd.DataFrame | None,
    intruders: pd.DataFrame | None,
    matched: pd.DataFrame | None,
) -> list[Finding]:
    """The five findings of this module, in the report's order."""
    return [
        lr_ratio(optima),
        lr_rank_free_under_standard(optima),
        lr_drifts_under_rslora(optima),
        forgets_less(matched),
        lora_introduces_intruders(runs, intruders),
    ]
