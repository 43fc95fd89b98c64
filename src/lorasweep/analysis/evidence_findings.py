"""The newer evidence on LoRA against full fine-tuning, checked against this run's tables, with
every range fixed here before any data is seen:

- "LoRA Without Regret" (Schulman et al., Thinking Machines 2025, Fig. 2): LoRA's optimal
  learning rate is 3–30× full fine-tuning's; under α/r it varies less than 2× across ranks
  ≥ 4; under α/√r it drifts with rank (at least 2×).
- "LoRA Learns Less and Forgets Less" (Biderman et al. 2024, Fig. 4): at matched target loss,
  LoRA forgets less of the source task (matching rule in :mod:`lorasweep.analysis.forgetting`).
- "LoRA vs Full Fine-tuning: An Illusion of Equivalence" (Shuttleworth et al. 2024): LoRA
  introduces intruder dimensions, full fine-tuning does not.

Learning-rate optima come from the mean-over-seeds curve (``lr_optima.csv`` rows with an empty
seed); one at the edge of the grid is only a bound, so it is left out of every check.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lorasweep.analysis import forgetting, statistics
from lorasweep.analysis.findings import NOT_REPRODUCED, NOT_TESTED, REPRODUCED, Finding
from lorasweep.analysis.intruders import TOP_K
from lorasweep.analysis.learning_rate import CURVE_KEYS, OPTIMA_COLUMNS, ratio_spread
from lorasweep.models import registry

LR_RATIO_RANGE = (3.0, 30.0)
"""LoRA's optimal learning rate over full fine-tuning's, as LoRA Without Regret reports (~10×)."""
RANK_SPREAD = 2.0
"""Largest over smallest optimal learning rate across ranks: below it the optimum 'barely
depends on rank', at or above it the optimum 'drifts'."""
MIN_RANK = 4
INTRUDER_EPSILON = 0.5
"""PEFT's default ε (with top_k = 10)."""
LORA_INTRUDERS_MIN = 1.0
"""LoRA 'introduces' intruders: at least one on average (over seeds and layers) at some rank."""
FULL_INTRUDERS_MAX = 0.5
"""Full fine-tuning 'does not': fewer than 0.5 on average, so most seeds have none."""


def _verdict(ok: bool) -> str:
    return REPRODUCED if ok else NOT_REPRODUCED


def _mean_curves(optima: pd.DataFrame | None) -> pd.DataFrame:
    """The optima of the mean-over-seeds curves that the grid brackets."""
    if optima is None or optima.empty:
        return pd.DataFrame(columns=OPTIMA_COLUMNS)
    mean = optima[optima["seed"].isna()]
    return mean[~mean["at_edge"].astype(bool)]


def lr_ratio(optima: pd.DataFrame | None) -> Finding:
    low, high = LR_RATIO_RANGE
    statement = (
        f"LoRA's optimal learning rate is {low:g}–{high:g}× full fine-tuning's (LoRA Without "
        "Regret, Fig. 2: about 10× under α/r)."
    )
    curves = _mean_curves(optima)
    full = curves[registry.full_rows(curves["method"])].set_index("dataset")["optimal_lr"]
    lora = curves[
        (registry.adapter_rows(curves["method"]))
        & (curves["scaling"] == registry.REFERENCE_SCALING.name)
    ]
    lora = lora[lora["dataset"].isin(full.index)]
    if lora.empty:
        return Finding(
            "lr_ratio", statement, NOT_TESTED,
            "needs LoRA (α/r) and full fine-tuning swept over learning rates that bracket "
            "both optima",
        )  # fmt: skip
    per_seed = optima[
        optima["seed"].notna() & (optima["scaling"] == registry.REFERENCE_SCALING.name)
    ]
    parts, oks = [], []
    for dataset, group in lora.groupby("dataset", sort=True):
        oks.append(bool(group["ratio_to_full"].between(low, high).all()))
        mean, smallest, largest = ratio_spread(
            per_seed.loc[per_seed["dataset"] == dataset, "ratio_to_full"]
        )
        parts.append(
            f"{dataset}: full FT's optimum is {full[dataset]:.3g}; LoRA/full "
            f"{_ranked(group, 'ratio_to_full', '{:.3g}×')}; over seeds and ranks the ratio's "
            f"geometric mean is {mean:.3g}×, range {smallest:.3g}–{largest:.3g}×"
        )
    return Finding("lr_ratio", statement, _verdict(all(oks)), "; ".join(parts) + ".")


def _ranked(group: pd.DataFrame, column: str, fmt: str) -> str:
    return ", ".join(
        f"r = {int(r)}: {fmt.format(v)}" for r, v in zip(group["rank"], group[column], strict=True)
    )


def _rank_spreads(optima: pd.DataFrame | None, scaling: str) -> list[tuple[str, pd.DataFrame]]:
    """(dataset, curves) per group of ``scaling`` curves that differ only in rank, with at
    least two ranks ≥ :data:`MIN_RANK` whose optimum the grid brackets."""
    curves = _mean_curves(optima)
    lora = curves[(registry.adapter_rows(curves["method"])) & (curves["scaling"] == scaling)]
    lora = lora[lora["rank"] >= MIN_RANK]
    keys = ["dataset", *(k for k in CURVE_KEYS if k not in ("dataset", "method", "rank",
                                                            "scaling"))]  # fmt: skip
    return [
        (key[0], group.sort_values("rank"))
        for key, group in lora.groupby(keys, dropna=False, sort=True)
        if group["rank"].nunique() >= 2
    ]


def _rank_finding(claim: str, statement: str, optima, scaling: str, holds) -> Finding:
    """The verdict of a claim about how the optimum spreads across ranks ≥ :data:`MIN_RANK`
    under ``scaling``: ``holds(spread)`` on every group that can test it."""
    groups = _rank_spreads(optima, scaling)
    if not groups:
        return Finding(
            claim, statement, NOT_TESTED,
            f"needs two ranks ≥ {MIN_RANK} under {registry.scaling_label(scaling)} with bracketed "
            "learning-rate optima",
        )  # fmt: skip
    parts, oks = [], []
    for dataset, group in groups:
        spread = float(group["optimal_lr"].max() / group["optimal_lr"].min())
        oks.append(holds(spread))
        optimum = _ranked(group, "optimal_lr", "{:.3g}")
        alpha = group["alpha"].iloc[0]
        parts.append(f"{dataset}, α = {alpha:g}: optimum {optimum}, a {spread:.2f}× spread")
    return Finding(claim, statement, _verdict(all(oks)), "; ".join(parts) + ".")


def lr_rank_free_under_standard(optima: pd.DataFrame | None) -> Finding:
    statement = (
        f"Under α/r, LoRA's optimal learning rate varies less than {RANK_SPREAD:g}× across ranks "
        f"≥ {MIN_RANK} (LoRA Without Regret)."
    )
    return _rank_finding(
        "lr_rank_standard", statement, optima, "standard", lambda s: s < RANK_SPREAD
    )


def lr_drifts_under_rslora(optima: pd.DataFrame | None) -> Finding:
    statement = (
        f"Under α/√r, LoRA's optimal learning rate drifts with rank (at least {RANK_SPREAD:g}× "
        f"across ranks ≥ {MIN_RANK})."
    )
    return _rank_finding("lr_rank_rslora", statement, optima, "rslora", lambda s: s >= RANK_SPREAD)


def forgets_less(runs: pd.DataFrame, epochs: pd.DataFrame) -> Finding:
    statement = (
        "At matched target loss, LoRA forgets less of the source task than full fine-tuning "
        "(Biderman et al. 2024, Fig. 4), at every rank: least forgetting at the best target "
        "loss both reach, over all learning rates and epochs."
    )
    matched = forgetting.matched_forgetting(forgetting.checkpoints(runs, epochs))
    if matched.empty:
        return Finding(
            "forgetting", statement, NOT_TESTED,
            "needs a dataset with a source task, and both LoRA and full fine-tuning",
        )  # fmt: skip
    parts, oks = [], []
    for dataset, group in matched.groupby("dataset", sort=True):
        oks.append(bool((group["lora_forgetting"] < group["full_forgetting"]).all()))
        ranks = ", ".join(
            f"r = {row.rank} at {row.matched_val_loss:.3g}: {row.lora_forgetting:.3g} vs "
            f"{row.full_forgetting:.3g}"
            for row in group.itertuples()
        )
        parts.append(f"{dataset}, forgetting LoRA vs full FT: {ranks}")
    return Finding("forgetting", statement, _verdict(all(oks)), "; ".join(parts) + ".")


def intruder_means(
    runs: pd.DataFrame, intruders: pd.DataFrame, epsilon: float = INTRUDER_EPSILON
) -> pd.DataFrame:
    """Mean ± sd over seeds of each run's intruder count (averaged over its layers) at
    ``epsilon``: LoRA at the best settings of each dataset, scaling rule and rank, full
    fine-tuning at its best learning rate. ``rank`` is empty for full FT."""
    columns = ["dataset", "method", "scaling", "rank", "mean", "std", "count"]
    at_eps = intruders[np.isclose(intruders["epsilon"], epsilon)]
    per_run = at_eps.dropna(subset=["run_id"]).groupby("run_id")["intruders"].mean()
    if per_run.empty:
        return pd.DataFrame(columns=columns)
    runs = runs.join(per_run, on="run_id")
    lora = statistics.best_lora_runs(runs, ["dataset", "scaling", "rank"])
    full = statistics.best_full_runs(runs)
    frames = [
        statistics.seed_stats(lora, ["dataset", "method", "scaling", "rank"], "intruders"),
        statistics.seed_stats(full, ["dataset", "method"], "intruders"),
    ]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).reindex(columns=columns)


def lora_introduces_intruders(runs: pd.DataFrame, intruders: pd.DataFrame | None) -> Finding:
    statement = (
        f"LoRA introduces intruder dimensions where full fine-tuning does not (Shuttleworth et "
        f"al. 2024): at ε = {INTRUDER_EPSILON:g} among the top {TOP_K} singular vectors, LoRA at "
        f"its best settings averages ≥ {LORA_INTRUDERS_MIN:g} at some rank, full FT fewer than "
        f"{FULL_INTRUDERS_MAX:g}."
    )
    means = intruder_means(runs, intruders) if intruders is not None else pd.DataFrame()
    if means.empty or not (
        registry.adapter_rows(means["method"]).any() and registry.full_rows(means["method"]).any()
    ):
        return Finding("intruders", statement, NOT_TESTED, "needs LoRA and full fine-tuning runs")
    truth = pd.Series(dtype=float)
    if intruders is not None:
        at_eps = intruders[np.isclose(intruders["epsilon"], INTRUDER_EPSILON)]
        truth = at_eps[at_eps["run_id"].isna()].groupby("dataset")["intruders"].mean()
    parts, oks = [], []
    for dataset, group in means.groupby("dataset", sort=True):
        lora, full = (
            group[registry.adapter_rows(group["method"])],
            group[registry.full_rows(group["method"])],
        )
        if lora.empty or full.empty:
            continue
        top = lora.loc[lora["mean"].idxmax()]
        full_mean = float(full["mean"].iloc[0])
        oks.append(top["mean"] >= LORA_INTRUDERS_MIN and full_mean < FULL_INTRUDERS_MAX)
        reference = f"; the true W₀ + ΔW* has {truth[dataset]:g}" if dataset in truth else ""
        parts.append(
            f"{dataset}: LoRA at most {top['mean']:.2g} ± {top['std']:.2g} "
            f"(r = {int(top['rank'])}, {top['scaling']}), lowest {lora['mean'].min():.2g}; "
            f"full FT {full_mean:.2g} ± {float(full['std'].iloc[0]):.2g}{reference}"
        )
    if not parts:
        return Finding("intruders", statement, NOT_TESTED, "no dataset has both methods")
    return Finding("intruders", statement, _verdict(all(oks)), "; ".join(parts) + ".")


def evidence_findings(
    runs: pd.DataFrame,
    epochs: pd.DataFrame,
    optima: pd.DataFrame | None,
    intruders: pd.DataFrame | None,
) -> list[Finding]:
    """The five findings of this module, in the report's order."""
    return [
        lr_ratio(optima),
        lr_rank_free_under_standard(optima),
        lr_drifts_under_rslora(optima),
        forgets_less(runs, epochs),
        lora_introduces_intruders(runs, intruders),
    ]
