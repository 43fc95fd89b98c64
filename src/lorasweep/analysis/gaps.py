"""``gaps.csv``: where the gap between a trained layer and the best possible one comes from, on
the single-layer ``lowrank`` tasks, in exact population risk (:mod:`lorasweep.tasks.population`).

For the runs at the best settings of each rank (and full FT's best learning rate), per task
replicate, with R the population risk and σ² the risk of the population optimum W₀ + ΔW*:

    R(run) − σ² = [R(run) − R(oracle)]            optimisation: training vs its closed-form fit
                + [R(oracle) − R(oracle_full)]    approximation: the rank-r constraint
                + [R(oracle_full) − σ²]           estimation: n finite samples

where the oracle is the least-squares fit of the run's own form on the same training split
(``oracles.csv``: reduced-rank regression at the run's rank and bias setting for LoRA, OLS for
full FT, whose approximation term is 0). The identity is exact; the approximation term is
negative where the rank constraint removes more estimation noise than signal (r ≥ task rank).
"""

from __future__ import annotations

import pandas as pd

from lorasweep.analysis import statistics
from lorasweep.models import registry

COLUMNS = ["dataset", "task_seed", "method", "rank", "bias", "seeds", "population_loss",
           "oracle_loss", "oracle_full_loss", "noise_floor", "total_gap", "optimisation",
           "approximation", "estimation"]  # fmt: skip
PARTS = ("optimisation", "approximation", "estimation")


def gap_table(runs: pd.DataFrame, oracles: pd.DataFrame | None) -> pd.DataFrame:
    """``gaps.csv`` (module docstring): one row per dataset, task seed and method/rank whose
    runs have a population risk and whose oracles are in ``oracles``."""
    if oracles is None or oracles.empty or "population_loss" not in runs:
        return pd.DataFrame(columns=COLUMNS)
    runs = runs[runs["dataset_kind"] == "lowrank"].assign(
        task_seed=runs["task_seed"].fillna(0).astype(int)
    )
    chosen = pd.concat(
        [statistics.best_lora_runs(runs, ["dataset", "rank"]), statistics.best_full_runs(runs)],
        ignore_index=True,
    )
    chosen = chosen[chosen["population_loss"].notna()]
    if chosen.empty:
        return pd.DataFrame(columns=COLUMNS)
    chosen = chosen.assign(
        bias=chosen["bias"].where(registry.factor_rows(chosen["method"]), "lora_only")
    )
    keys = ["dataset", "task_seed", "method", "rank", "bias"]
    grouped = chosen.groupby(keys, dropna=False, sort=True)
    table = grouped.agg(
        seeds=("run_id", "size"),
        population_loss=("population_loss", "mean"),
        noise_floor=("noise_floor", "first"),
    ).reset_index()
    oracles = oracles.assign(task_seed=oracles["task_seed"].fillna(0).astype(int))
    lora = oracles[oracles["oracle"] == "oracle_lora"][["dataset", "task_seed", "rank", "bias",
                                                        "population_loss"]]  # fmt: skip
    full = oracles[oracles["oracle"] == "oracle_full"].set_index(["dataset", "task_seed"])
    full_loss = full["population_loss"].rename("oracle_full_loss")
    table = table.join(full_loss, on=["dataset", "task_seed"])
    table["rank"] = pd.array(table["rank"], dtype="Int64")
    lora = lora.assign(rank=pd.array(lora["rank"], dtype="Int64"))
    table = table.merge(
        lora.rename(columns={"population_loss": "oracle_lora_loss"}),
        on=["dataset", "task_seed", "rank", "bias"],
        how="left",
    )
    is_full = registry.full_rows(table["method"])
    table["oracle_loss"] = table["oracle_lora_loss"].where(~is_full, table["oracle_full_loss"])
    table = table.dropna(subset=["oracle_loss", "oracle_full_loss"])
    table["total_gap"] = table["population_loss"] - table["noise_floor"]
    table["optimisation"] = table["population_loss"] - table["oracle_loss"]
    table["approximation"] = table["oracle_loss"] - table["oracle_full_loss"]
    table["estimation"] = table["oracle_full_loss"] - table["noise_floor"]
    table = table.reindex(columns=COLUMNS)
    order = ["dataset", "task_seed", "method", "rank"]
    return table.sort_values(order, na_position="last", kind="stable").reset_index(drop=True)
