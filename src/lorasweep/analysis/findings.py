"""Check the papers' claims against this run's tables, one generated sentence per claim.

Each :class:`Finding` carries a verdict: ``reproduced``, ``not reproduced`` or ``not tested by
this config`` (when the grid lacks what the claim needs). The thresholds are part of each
claim's statement, not tuned to the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lorasweep.analysis import statistics
from lorasweep.analysis.intervals import NOT_REPRODUCED, REPRODUCED

NOT_TESTED = "not tested by this config"

SMALL_R_TOLERANCE = 0.05
PLATEAU_TOLERANCE = 0.05
SUBSPACE_THRESHOLD = 0.5


@dataclass(frozen=True)
class Finding:
    claim: str
    statement: str
    verdict: str
    evidence: str


def _verdict(ok: bool) -> str:
    return REPRODUCED if ok else NOT_REPRODUCED


def _per_dataset(claim: str, statement: str, parts: list, oks: list, missing: str) -> Finding:
    """Reproduced when the claim holds on every dataset that could test it, with each one's
    evidence; not tested (``missing`` says why) when none could."""
    if not parts:
        return Finding(claim, statement, NOT_TESTED, missing)
    return Finding(claim, statement, _verdict(all(oks)), "; ".join(parts) + ".")


def _pct(x: float) -> str:
    return f"{100 * x:+.1f} %"


def small_rank_suffices(runs: pd.DataFrame) -> Finding:
    statement = (
        f"Small r suffices: LoRA at r ≥ task rank is within {SMALL_R_TOLERANCE:.0%} of the "
        "noise floor (LoRA paper, Table 6)."
    )
    best = statistics.best_lowrank_lora(runs)
    parts, oks = [], []
    for dataset, group in best.groupby("dataset", sort=True) if not best.empty else []:
        k, floor = int(group["task_rank"].iloc[0]), float(group["noise_floor"].iloc[0])
        at_or_above = group[group["rank"] >= k]
        if at_or_above.empty or floor <= 0:
            continue
        row = at_or_above.sort_values("rank").iloc[0]
        excess = row["mean"] / floor - 1
        oks.append(excess <= SMALL_R_TOLERANCE)
        parts.append(
            f"{dataset}: at r = {row['rank']} (task rank {k}) the final validation MSE is "
            f"{row['mean']:.4g} ± {row['std']:.2g}, {_pct(excess)} from σ² = {floor:.4g}"
        )
    return _per_dataset(
        "small_r",
        statement,
        parts,
        oks,
        "needs a lowrank dataset with noise σ > 0 and r ≥ its task rank",
    )


def large_rank_wasted(runs: pd.DataFrame) -> Finding:
    statement = (
        "Large r is wasted: the loss stops improving past the task rank (no rank above it "
        f"improves on it by more than {PLATEAU_TOLERANCE:.0%})."
    )
    best = statistics.best_lowrank_lora(runs)
    parts, oks = [], []
    for dataset, group in best.groupby("dataset", sort=True) if not best.empty else []:
        k = int(group["task_rank"].iloc[0])
        at_or_above = group[group["rank"] >= k].sort_values("rank")
        if len(at_or_above) < 2:
            continue
        knee = at_or_above.iloc[0]
        beyond = at_or_above.iloc[1:]
        top = beyond.loc[beyond["mean"].idxmin()]
        gain = 1 - top["mean"] / knee["mean"]
        oks.append(gain <= PLATEAU_TOLERANCE)
        below = group[group["rank"] < k]
        drop = ""
        if not below.empty:
            low = below.sort_values("rank").iloc[0]
            drop = f", after falling {low['mean'] / knee['mean']:.1f}× from r = {low['rank']}"
        parts.append(
            f"{dataset}: from r = {knee['rank']} ({knee['mean']:.4g}) to the best larger rank "
            f"r = {top['rank']} ({top['mean']:.4g}) the loss improves by {100 * gain:.1f} %{drop}"
        )
    return _per_dataset("large_r", statement, parts, oks, "needs two ranks at or above a task rank")


def rslora_learns_faster(runs: pd.DataFrame, epochs: pd.DataFrame) -> Finding:
    """Learning speed is the mean of log₁₀ validation loss over epochs 1…E (lower is faster);
    α/√r vs α/r is compared at the largest rank for every shared (α, init, lr, λ)."""
    statement = "rsLoRA: α/√r makes large ranks learn faster than α/r (Kalajdzievski 2023)."
    lora = statistics.completed_lora(runs)
    lora = lora[lora["scaling"].isin(["standard", "rslora"])]
    if lora["scaling"].nunique() < 2 or lora["rank"].nunique() < 2:
        return Finding("rslora", statement, NOT_TESTED, "needs both scaling rules and two ranks")
    curve = epochs[epochs["epoch"] >= 1].assign(log_loss=lambda e: np.log10(e["val_loss"]))
    speed = curve.groupby("run_id")["log_loss"].mean().rename("speed")
    lora = lora.join(speed, on="run_id")
    keys = ["dataset", *(k for k in statistics.settings_in(lora) if k != "scaling")]
    parts, wins, total = [], 0, 0
    for dataset, group in lora.groupby("dataset", sort=True):
        top = group["rank"].max()
        at_top = group[group["rank"] == top]
        table = (
            at_top.groupby([*keys, "scaling"], dropna=False)["speed"]
            .mean()
            .unstack("scaling")
            .dropna()
        )
        if table.empty:
            continue
        faster = table["rslora"] < table["standard"]
        wins += int(faster.sum())
        total += len(table)
        parts.append(
            f"{dataset}, r = {top}: α/√r is faster in {int(faster.sum())} of {len(table)} "
            f"settings (mean log₁₀ val MSE over epochs {table['rslora'].mean():.3f} vs "
            f"{table['standard'].mean():.3f} under α/r)"
        )
    if not total:
        return Finding("rslora", statement, NOT_TESTED, "no shared settings under both rules")
    return Finding("rslora", statement, _verdict(wins > total / 2), "; ".join(parts) + ".")


def subspaces_overlap(pairs: pd.DataFrame | None) -> Finding:
    statement = (
        "Subspaces: the top directions of A at a low and a high rank overlap "
        f"(φ > {SUBSPACE_THRESHOLD} for i = j = 1; LoRA paper Fig. 3 compares r = 8 and r = 64)."
    )
    if pairs is None or pairs.empty or not (pairs["comparison"] == "rank").any():
        return Finding("subspaces", statement, NOT_TESTED, "needs two ranks with saved adapters")
    top = pairs[(pairs["comparison"] == "rank") & (pairs["i"] == 1) & (pairs["j"] == 1)]
    parts, oks = [], []
    for dataset, group in top.groupby("dataset", sort=True):
        phi = group["phi"]
        oks.append(phi.mean() > SUBSPACE_THRESHOLD)
        spread = f" ± {phi.std(ddof=1):.2g}" if len(phi) > 1 else ""
        parts.append(
            f"{dataset}: φ(A_r={group['rank_a'].iloc[0]}, A_r={group['rank_b'].iloc[0]}, 1, 1) = "
            f"{phi.mean():.3f}{spread} over {len(phi)} seed(s)"
        )
    return _per_dataset("subspaces", statement, parts, oks, "no rank comparison")


def efficiency(table: pd.DataFrame, tolerance: float) -> Finding:
    statement = (
        f"Efficiency: LoRA matches full fine-tuning's loss (within {tolerance:.0%}) with far "
        "fewer trainable parameters and less optimizer state."
    )
    if table.empty or not (table["method"] == "full").any():
        return Finding(
            "efficiency", statement, NOT_TESTED, "no full fine-tuning run completed (or none ran)"
        )
    parts, oks = [], []
    for dataset, rows in table.groupby("dataset", sort=True):
        full = rows[rows["method"] == "full"]
        if full.empty or not (rows["method"] == "lora").any():
            continue
        ref = full.iloc[0]
        hit = statistics.first_rank_matching_full(rows, tolerance)
        oks.append(hit is not None)
        if hit is None:
            parts.append(
                f"{dataset}: no rank comes within {tolerance:.0%} of {ref['final_val_loss']:.4g}"
            )
            continue
        parts.append(
            f"{dataset}: r = {hit['rank']} reaches {hit['final_val_loss']:.4g} against "
            f"{ref['final_val_loss']:.4g} with {1 / hit['params_vs_full']:.1f}× fewer trainable "
            f"parameters ({hit['trainable_params']:,} vs {ref['trainable_params']:,}) and "
            f"{1 / hit['state_vs_full']:.1f}× less optimizer state"
        )
    return _per_dataset("efficiency", statement, parts, oks, "no dataset has both methods")


def all_findings(
    runs: pd.DataFrame,
    epochs: pd.DataFrame,
    pairs: pd.DataFrame | None,
    table: pd.DataFrame,
    tolerance: float,
) -> list[Finding]:
    return [
        small_rank_suffices(runs),
        large_rank_wasted(runs),
        rslora_learns_faster(runs, epochs),
        subspaces_overlap(pairs),
        efficiency(table, tolerance),
    ]
