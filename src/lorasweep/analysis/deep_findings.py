"""The deep models' claims, checked against this run's tables (verdicts as in
:mod:`lorasweep.analysis.findings`; thresholds fixed here, not tuned to the data).

- ``deep_floor``: LoRA on every shifted module at r ≥ task rank reaches σ² within the report
  tolerance.
- ``deep_budget``: at an equal parameter budget, spreading rank over more matrix types reaches a
  lower loss than concentrating it on one (LoRA paper, Table 5).

Each target set is judged at its own best settings (learning rate included) on validation, and
the claims on the test loss of those runs, over a 95 % bootstrap interval over units.
- ``deep_regret``: with the shift in the MLP, attention-only LoRA stays measurably above MLP-only
  and all-layer LoRA, and MLP-only is close to all-layer LoRA (Thinking Machines, "LoRA Without
  Regret", 2025).
"""

from __future__ import annotations

import pandas as pd

from lorasweep.analysis import statistics
from lorasweep.analysis.findings import (
    Arms,
    Finding,
    _pct,
    _reported,
    arm_budget,
    from_checks,
    interval_check,
    n_replicates,
    per_unit,
    unit_column,
)
from lorasweep.models import registry
from lorasweep.models.names import linear_modules, select
from lorasweep.options import DEEP_KINDS

REGRET_GAP = 0.25
"""Attention-only LoRA is "measurably above" when its loss is at least this much higher."""
MLP_CLOSE = 0.10
"""MLP-only LoRA is "close to" all-layer LoRA within this relative difference."""
BUDGET_KEYS = ["dataset", "budget", "trainable_params"]
"""What one fixed-budget comparison holds equal: the dataset, rank × matrix types and the
trainable parameter count, and every LoRA setting but the targets."""


def deep_lora(runs: pd.DataFrame) -> pd.DataFrame:
    """The completed LoRA runs of deep models."""
    lora = statistics.completed(runs[registry.factor_rows(runs["method"])])
    return lora[lora["dataset_kind"].isin(DEEP_KINDS)]


def best_by_targets(lora: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, target set and rank: the best other settings' mean, sd and seed count."""
    best = statistics.best_lora_settings(lora, ["dataset", "targets", "rank"])
    if best.empty:
        return best
    floors = lora.groupby("dataset")[["noise_floor", "task_rank"]].first()
    return best.join(floors, on="dataset")


def _method_prefix(best: pd.DataFrame, dataset: str, method: str) -> str:
    """The adapter method's label and a space where ``dataset`` has rows of several methods in
    ``best``, else nothing (a check's text as with one method)."""
    if best.loc[best["dataset"] == dataset, "method"].nunique() > 1:
        return f"{registry.method(method).label} "
    return ""


def floor_reached(runs: pd.DataFrame, tolerance: float) -> Finding:
    """Rows whose ``optimal_val_loss`` is σ² are those whose targets include every shifted
    module at r ≥ task rank (the ground truth decided this when the run was trained); each
    such target set is judged at its smallest such rank, with its best other settings."""
    statement = (
        f"Deep models: LoRA on every shifted module at r ≥ task rank reaches σ² within "
        f"{tolerance:.0%}."
    )
    lora = deep_lora(runs)
    best = best_by_targets(lora[lora["optimal_val_loss"].notna() & (lora["noise_floor"] > 0)])
    unit, value = unit_column(lora), statistics.reported_column(lora)
    keys = ["dataset", "targets", "rank", *statistics.settings_in(lora)]
    checks = []
    groups = best.groupby(["dataset", "method", "targets"]) if len(best) else []
    for (dataset, method, targets), group in groups:
        row = group.sort_values("rank").iloc[0]
        chosen = statistics.select_runs(lora, row.to_frame().T, keys)
        excess = per_unit(chosen, value, unit) / row["noise_floor"] - 1
        mean, sd = _reported(row, value)
        text = (
            f"{dataset}, {_method_prefix(best, dataset, method)}targets {targets} at "
            f"r = {row['rank']} (task rank "
            f"{row['task_rank']}; settings chosen on validation): final "
            f"{statistics.split_name(value)} MSE {mean:.4g} ± {sd:.2g}, {_pct(excess.mean())} "
            f"from σ² = {row['noise_floor']:.4g}"
        )
        arms = Arms({f"{targets} r{row['rank']}": arm_budget(row)}, comparison=False)
        checks.append(
            interval_check(dataset, text, excess, tolerance, True, unit, show=_pct, arms=arms,
                           replicates=n_replicates(chosen))
        )  # fmt: skip
    missing = "needs noise σ > 0 and LoRA on every shifted module at r ≥ task rank"
    return from_checks("deep_floor", statement, checks, missing)


def budget_comparisons(runs: pd.DataFrame) -> pd.DataFrame:
    """Fixed-budget comparisons: target sets of one dataset with the same rank × number of
    matrix types (what ``rank_budget`` holds fixed), the same trainable parameter count and
    the same other settings but the learning rate, among at least two numbers of matrix types;
    each target set at its own best learning rate (lowest mean final validation loss). One row
    per target set: ``types``, ``budget``, ``comparison`` (its group's number), the seed
    statistics of the final validation loss (``mean``, ``std``, ``count``), the test loss
    (``test_mean``, ``test_std``) and the search budget (``settings_searched``,
    ``lrs_searched``)."""
    lora = deep_lora(runs)
    if lora.empty:
        return pd.DataFrame()
    types = lora["adapted_types"].str.count(r"\+") + 1
    lora = lora.assign(types=types, budget=lora["rank"] * types)
    held = [*BUDGET_KEYS, *(s for s in statistics.settings_in(lora) if s not in ("targets", "lr"))]
    stats = statistics._best_of(lora, [*held, "targets", "adapted_types", "types", "rank"], ["lr"])
    if stats.empty:
        return pd.DataFrame()
    spread = stats.groupby(held, dropna=False)["types"].transform("nunique")
    stats = stats[spread >= 2].copy()
    stats["comparison"] = stats.groupby(held, dropna=False).ngroup()
    return stats.sort_values(["comparison", "types", "targets"]).reset_index(drop=True)


def budget_spread_wins(runs: pd.DataFrame) -> Finding:
    """In every comparison, per unit: the worst target set with the most matrix types over the
    best with the fewest, minus 1, on the reported (test) loss; the claim holds when its
    interval lies below 0."""
    statement = (
        "Deep models: at an equal parameter budget, spreading rank over more matrix types "
        "reaches a lower loss than concentrating it on one (LoRA paper, Table 5)."
    )
    table = budget_comparisons(runs)
    lora = deep_lora(runs)
    unit, value = unit_column(lora), statistics.reported_column(lora)
    keys = ["dataset", "targets", "rank", *statistics.settings_in(lora)]
    checks = []
    for _, group in table.groupby("comparison") if len(table) else []:
        spread = group[group["types"] == group["types"].max()]
        concentrated = group[group["types"] == group["types"].min()]

        def units(rows: pd.DataFrame) -> pd.DataFrame:
            return pd.concat(
                [per_unit(statistics.select_runs(lora, r.to_frame().T, keys), value, unit)
                 .rename(r["targets"]) for _, r in rows.iterrows()], axis=1,
            )  # fmt: skip

        ratio = (units(spread).max(axis=1) / units(concentrated).min(axis=1) - 1).dropna()
        first = group.iloc[0]

        def listing(rows: pd.DataFrame) -> str:
            return ", ".join(
                f"{r['adapted_types']} at r = {r['rank']}: {_reported(r, value)[0]:.4g}"
                for _, r in rows.iterrows()
            )

        text = (
            f"{first['dataset']}, rank × types = {first['budget']} "
            f"({first['trainable_params']:,} trainable parameters), final "
            f"{statistics.split_name(value)} MSE, each target set at its best learning rate: "
            f"{listing(spread)}; against {listing(concentrated)}; worst spread over best "
            f"concentrated {_pct(ratio.mean())}"
        )
        arms = Arms({f"{r['targets']} r{r['rank']}": arm_budget(r)
                     for _, r in pd.concat([spread, concentrated]).iterrows()})  # fmt: skip
        checks.append(
            interval_check(first["dataset"], text, ratio, 0.0, True, unit, show=_pct, arms=arms,
                           replicates=n_replicates(lora))
        )  # fmt: skip
    missing = "needs a rank_budget block over target sets"
    return from_checks("deep_budget", statement, checks, missing)


def shift_in_mlp_only(row: pd.Series) -> bool:
    """Whether a transformer dataset's teacher shifts MLP modules only (from its runs row)."""
    if row["dataset_kind"] != "transformer":
        return False
    network = {
        "name": row["dataset"],
        "kind": "transformer",
        **{key: int(row[key]) for key in ("d_model", "n_layers", "n_heads", "d_ff")},
    }
    return all(m.group == "mlp" for m in select(linear_modules(network), row["shifted"]))


def attention_only_regrets(runs: pd.DataFrame) -> Finding:
    """At each rank ≥ task rank where the presets ``attention``, ``mlp`` and ``all`` all ran
    (each at its own best settings on validation), on each transformer whose shift is in the
    MLP only, two checks on the reported (test) loss, per unit: attention over the better of
    the others, minus 1, at least :data:`REGRET_GAP`; MLP over all, minus 1, within
    ±:data:`MLP_CLOSE`."""
    statement = (
        f"Deep models: with the shift in the MLP, attention-only LoRA stays at least "
        f"{REGRET_GAP:.0%} above MLP-only and all-layer LoRA, and MLP-only is within "
        f"{MLP_CLOSE:.0%} of all-layer LoRA (LoRA Without Regret)."
    )
    lora = deep_lora(runs)
    lora = lora[lora["targets"].isin(["attention", "mlp", "all"])]
    lora = lora[lora["rank"] >= lora["task_rank"]]
    datasets = [d for d, group in lora.groupby("dataset") if shift_in_mlp_only(group.iloc[0])]
    lora = lora[lora["dataset"].isin(datasets)]
    best = best_by_targets(lora)
    unit, value = unit_column(lora), statistics.reported_column(lora)
    keys = ["dataset", "targets", "rank", *statistics.settings_in(lora)]
    checks = []
    groups = best.groupby(["dataset", "method", "rank"]) if not best.empty else []
    for (dataset, method, rank), group in groups:
        rows = group.set_index("targets")
        if len(rows) < 3:
            continue
        units = pd.concat(
            {t: per_unit(statistics.select_runs(lora, rows.loc[[t]].reset_index(), keys), value,
                         unit) for t in ("attention", "mlp", "all")}, axis=1,
        ).dropna()  # fmt: skip
        above = (units["attention"] / units[["mlp", "all"]].min(axis=1) - 1).rename(None)
        close = (units["mlp"] / units["all"] - 1).rename(None)
        loss = {t: _reported(rows.loc[t], value)[0] for t in ("attention", "mlp", "all")}
        arms = Arms({f"{t} r{rank}": arm_budget(rows.loc[t]) for t in ("attention", "mlp", "all")})
        split = statistics.split_name(value)
        replicates = n_replicates(lora[lora["dataset"] == dataset])
        checks.append(
            interval_check(
                dataset,
                f"{dataset} at {_method_prefix(best, dataset, method)}r = {rank}, final {split} "
                f"MSE: attention {loss['attention']:.4g} "
                f"({_pct(above.mean())} above the better of the others)",
                above, REGRET_GAP, False, unit, show=_pct, arms=arms, replicates=replicates,
            )
        )  # fmt: skip
        checks.append(
            interval_check(
                dataset,
                f"mlp {loss['mlp']:.4g} ({_pct(close.mean())} from all), all {loss['all']:.4g}",
                close, MLP_CLOSE, True, unit, show=_pct, arms=arms, replicates=replicates,
                within=(-MLP_CLOSE, MLP_CLOSE),
            )
        )  # fmt: skip
    missing = (
        "needs a transformer shifted in its MLP and the targets attention, mlp and all at a "
        "rank ≥ its task rank"
    )
    return from_checks("deep_regret", statement, checks, missing)


def deep_findings(runs: pd.DataFrame, tolerance: float) -> list[Finding]:
    """The deep models' findings, or none where the config has no deep dataset."""
    if not runs["dataset_kind"].isin(DEEP_KINDS).any():
        return []
    return [
        floor_reached(runs, tolerance),
        budget_spread_wins(runs),
        attention_only_regrets(runs),
    ]
