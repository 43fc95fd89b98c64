"""Check the papers' claims against this run's tables, one generated sentence per claim.

Each :class:`Finding` carries a verdict: ``reproduced``, ``not reproduced``, ``inconclusive`` or
``not tested by this config`` (when the grid lacks what the claim needs). The thresholds are part
of each claim's statement, fixed here before any data are seen. Where the claim is about a
quantity measured per run, the verdict comes from its 95 % bootstrap interval over independent
units (:mod:`lorasweep.analysis.intervals`): task replicates where the config has several, else
the seeds of one task; the interval straddling the threshold is inconclusive.

Every arm (rank, method, scaling rule, target set) is judged at its own best settings, learning
rate included, chosen on the validation loss; the quality claims are then judged on the test
loss of those runs. Each check names every arm's search budget (settings tried). Where an arm
was trained at one learning rate only, its evidence says so (:data:`UNTUNED`) and no winner is
claimed: a comparison between arms is inconclusive, and a comparison against a fixed level (σ²)
keeps a reproduced verdict (the untuned arm met the level anyway) but turns not reproduced into
inconclusive (tuning might have met it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lorasweep.analysis import statistics
from lorasweep.analysis.intervals import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    Interval,
    bootstrap_mean,
    decide,
    decide_within,
    nearest_bound,
)
from lorasweep.models import registry

NOT_TESTED = "not tested by this config"

SMALL_R_TOLERANCE = 0.05
PLATEAU_TOLERANCE = 0.05
SUBSPACE_THRESHOLD = 0.5
UNTUNED = "one learning rate, not tuned"
STANDARD, RSLORA = registry.scaling("standard").name, registry.scaling("rslora").name
"""The two scaling rules the rsLoRA claim compares."""


@dataclass(frozen=True)
class Check:
    """One dataset's test of a claim: its evidence sentence and verdict, with the interval and
    threshold that decided it where it has one."""

    dataset: str
    text: str
    verdict: str
    interval: Interval | None = None
    threshold: float | None = None
    n_replicates: int | None = None
    budget: str = ""
    """Each compared arm's number of settings searched, ``lora r4: 6; full: 2``."""


@dataclass(frozen=True)
class Finding:
    claim: str
    statement: str
    verdict: str
    evidence: str
    deciding: Check | None = None
    """The check whose verdict is the finding's (the first such dataset)."""


def _verdict(ok: bool) -> str:
    return REPRODUCED if ok else NOT_REPRODUCED


def unit_column(frame: pd.DataFrame) -> str:
    """What a statistic resamples: task replicates where there are several, else seeds."""
    if "task_seed" in frame and frame["task_seed"].nunique() >= 2:
        return "task_seed"
    return "seed"


def _unit_words(unit: str, n: int) -> str:
    return f"{n} task replicate(s)" if unit == "task_seed" else f"{n} seed(s)"


def per_unit(frame: pd.DataFrame, value: str, unit: str) -> pd.Series:
    """The mean of ``value`` per unit (a replicate's seeds averaged)."""
    return frame.groupby(unit, sort=True)[value].mean()


@dataclass(frozen=True)
class Arms:
    """The arms one check compares: each arm's settings searched and learning rates among them
    (``{"lora r4": (6, 3)}``), and whether the check compares them with each other (else with a
    fixed level)."""

    searched: dict
    comparison: bool = True

    @property
    def budget(self) -> str:
        return "; ".join(f"{arm}: {n}" for arm, (n, _) in self.searched.items())

    @property
    def untuned(self) -> list[str]:
        return [arm for arm, (_, lrs) in self.searched.items() if lrs < 2]

    def cap(self, verdict: str) -> str:
        """The verdict once an untuned arm is accounted for (module docstring)."""
        if not self.untuned or verdict == INCONCLUSIVE:
            return verdict
        if self.comparison or verdict == NOT_REPRODUCED:
            return INCONCLUSIVE
        return verdict

    def note(self) -> str:
        if not self.untuned:
            return ""
        tail = ", so no winner is claimed" if self.comparison else ""
        return f"; {', '.join(self.untuned)}: {UNTUNED}{tail}"


def arm_budget(row: pd.Series) -> tuple[int, int]:
    """(settings searched, learning rates searched) of a :func:`statistics.best_lora_settings`
    or :func:`statistics.best_full` row."""
    return int(row["settings_searched"]), int(row["lrs_searched"])


def n_replicates(frame: pd.DataFrame) -> int:
    return max(int(frame["task_seed"].nunique()), 1) if "task_seed" in frame else 1


def interval_check(
    dataset: str,
    text: str,
    values: pd.Series,
    threshold: float,
    holds_below: bool,
    unit: str,
    show=lambda x: f"{x:.4g}",
    arms: Arms | None = None,
    replicates: int | None = None,
    within: tuple[float, float] | None = None,
) -> Check:
    """A check whose verdict is :func:`~lorasweep.analysis.intervals.decide` on the bootstrap
    interval of ``values`` (one per unit), or :func:`~lorasweep.analysis.intervals.decide_within`
    the range ``within``; ``show`` formats the interval's ends; ``arms`` (the compared arms'
    search budgets) may cap the verdict at inconclusive."""
    interval = bootstrap_mean(values.to_numpy())
    words = _unit_words(unit, interval.n)
    span = (
        f"95 % CI {show(interval.low)} to {show(interval.high)} over {words}"
        if interval.n > 1
        else f"one {words.split(' ', 1)[1].rstrip('(s)')} only, no interval"
    )
    if within is not None:
        verdict = decide_within(interval, *within)
        threshold = nearest_bound(interval.estimate, *within)
    else:
        verdict = decide(interval, threshold, holds_below)
    note, budget = "", ""
    if arms is not None:
        verdict, note, budget = arms.cap(verdict), arms.note(), arms.budget
        span += f"; settings searched: {budget}"
    return Check(dataset, f"{text} [{span}]{note}", verdict, interval, threshold, replicates,
                 budget)  # fmt: skip


def combine(verdicts: list[str]) -> str:
    """Not reproduced if any dataset refutes the claim, else inconclusive if any cannot tell,
    else reproduced."""
    for outcome in (NOT_REPRODUCED, INCONCLUSIVE):
        if outcome in verdicts:
            return outcome
    return REPRODUCED


def from_checks(claim: str, statement: str, checks: list[Check], missing: str) -> Finding:
    """The finding over every dataset that could test it; not tested (``missing`` says why)
    when none could."""
    if not checks:
        return Finding(claim, statement, NOT_TESTED, missing)
    verdict = combine([c.verdict for c in checks])
    deciding = next(c for c in checks if c.verdict == verdict)
    evidence = "; ".join(c.text for c in checks) + "."
    return Finding(claim, statement, verdict, evidence, deciding)


def _per_dataset(claim: str, statement: str, parts: list, oks: list, missing: str) -> Finding:
    """:func:`from_checks` for point comparisons: ``oks`` says whether each part holds."""
    checks = [Check("", text, _verdict(ok)) for text, ok in zip(parts, oks, strict=True)]
    return from_checks(claim, statement, checks, missing)


def _pct(x: float) -> str:
    return f"{100 * x:+.1f} %"


def small_rank_suffices(runs: pd.DataFrame) -> Finding:
    statement = (
        f"Small r suffices: LoRA at r ≥ task rank is within {SMALL_R_TOLERANCE:.0%} of the "
        "noise floor (LoRA paper, Table 6)."
    )
    best = statistics.best_lowrank_lora(runs)
    lora = statistics.completed_lora(runs)
    unit, value = unit_column(lora), statistics.reported_column(lora)
    checks = []
    for dataset, method, group in _by_dataset_and_method(best):
        k, floor = int(group["task_rank"].iloc[0]), float(group["noise_floor"].iloc[0])
        at_or_above = group[group["rank"] >= k]
        if at_or_above.empty or floor <= 0:
            continue
        row = at_or_above.sort_values("rank").iloc[0]
        chosen = statistics.select_runs(lora, row.to_frame().T, _setting_keys(lora))
        excess = per_unit(chosen, value, unit) / floor - 1
        mean, sd = _reported(row, value)
        text = (
            f"{dataset}: {method}at r = {row['rank']} (task rank {k}; settings chosen on "
            "validation) "
            f"the final {statistics.split_name(value)} MSE is {mean:.4g} ± {sd:.2g}, "
            f"{_pct(excess.mean())} from σ² = {floor:.4g}"
        )
        arms = Arms({f"{row['method']} r{row['rank']}": arm_budget(row)}, comparison=False)
        checks.append(
            interval_check(dataset, text, excess, SMALL_R_TOLERANCE, True, unit, show=_pct,
                           arms=arms, replicates=n_replicates(chosen))
        )  # fmt: skip
    return from_checks(
        "small_r",
        statement,
        checks,
        "needs a lowrank dataset with noise σ > 0 and r ≥ its task rank",
    )


def _by_dataset_and_method(best: pd.DataFrame):
    """(dataset, prefix, rows) of best-settings rows per dataset and adapter method: the prefix
    names the method (``"DoRA: "``) where a dataset has several, and is empty otherwise."""
    if best.empty:
        return
    for dataset, rows in best.groupby("dataset", sort=True):
        methods = rows["method"].unique()
        for method in sorted(methods):
            prefix = f"{registry.method(method).label}: " if len(methods) > 1 else ""
            yield dataset, prefix, rows[rows["method"] == method]


def _setting_keys(lora: pd.DataFrame) -> list[str]:
    return ["dataset", "rank", *statistics.settings_in(lora)]


def _reported(row: pd.Series, value: str) -> tuple[float, float]:
    """Mean and sd of a best-settings row on the reported split."""
    if value == statistics.REPORT:
        return float(row["test_mean"]), float(row["test_std"])
    return float(row["mean"]), float(row["std"])


def large_rank_wasted(runs: pd.DataFrame) -> Finding:
    statement = (
        "Large r is wasted: the loss stops improving past the task rank (no rank above it "
        f"improves on it by more than {PLATEAU_TOLERANCE:.0%})."
    )
    best = statistics.best_lowrank_lora(runs)
    lora = statistics.completed_lora(runs)
    unit, value = unit_column(lora), statistics.reported_column(lora)
    checks = []
    for dataset, method, group in _by_dataset_and_method(best):
        k = int(group["task_rank"].iloc[0])
        at_or_above = group[group["rank"] >= k].sort_values("rank")
        if len(at_or_above) < 2:
            continue
        knee = at_or_above.iloc[0]
        beyond = at_or_above.iloc[1:]
        top = beyond.loc[beyond["mean"].idxmin()]
        keys = _setting_keys(lora)
        knee_runs = statistics.select_runs(lora, knee.to_frame().T, keys)
        top_runs = statistics.select_runs(lora, top.to_frame().T, keys)
        gain = (1 - per_unit(top_runs, value, unit) / per_unit(knee_runs, value, unit)).dropna()
        knee_loss, top_loss = _reported(knee, value)[0], _reported(top, value)[0]
        below = group[group["rank"] < k]
        drop = ""
        if not below.empty:
            low = below.sort_values("rank").iloc[0]
            drop = (
                f", after falling {_reported(low, value)[0] / knee_loss:.1f}× from "
                f"r = {low['rank']}"
            )
        text = (
            f"{dataset}: {method}from r = {knee['rank']} ({knee_loss:.4g}) to the best larger "
            "rank on "
            f"validation, r = {top['rank']} ({top_loss:.4g}), the final "
            f"{statistics.split_name(value)} MSE improves by "
            f"{100 * (1 - top_loss / knee_loss):.1f} %{drop}"
        )
        arms = Arms({f"{knee['method']} r{knee['rank']}": arm_budget(knee),
                     f"{top['method']} r{top['rank']}": arm_budget(top)})  # fmt: skip
        checks.append(
            interval_check(dataset, text, gain, PLATEAU_TOLERANCE, True, unit, show=_pct,
                           arms=arms, replicates=n_replicates(knee_runs))
        )  # fmt: skip
    return from_checks("large_r", statement, checks, "needs two ranks at or above a task rank")


def rslora_learns_faster(runs: pd.DataFrame, epochs: pd.DataFrame) -> Finding:
    """Learning speed is the mean of log₁₀ validation loss over epochs 1…E (lower is faster);
    α/√r vs α/r is compared at the largest rank for every shared (α, init, λ), each rule at its
    own best learning rate there (lowest mean final validation loss), paired per unit."""
    statement = "rsLoRA: α/√r makes large ranks learn faster than α/r (Kalajdzievski 2023)."
    lora = statistics.completed_lora(runs)
    lora = lora[lora["scaling"].isin(["standard", "rslora"])]
    if lora["scaling"].nunique() < 2 or lora["rank"].nunique() < 2:
        return Finding("rslora", statement, NOT_TESTED, "needs both scaling rules and two ranks")
    curve = epochs[epochs["epoch"] >= 1].assign(log_loss=lambda e: np.log10(e["val_loss"]))
    speed = curve.groupby("run_id")["log_loss"].mean().rename("speed")
    lora = lora.join(speed, on="run_id")
    keys = ["dataset", *(k for k in statistics.settings_in(lora) if k not in ("scaling", "lr"))]
    unit = unit_column(lora)
    checks = []
    for dataset, group in lora.groupby("dataset", sort=True):
        top = group["rank"].max()
        at_top = group[group["rank"] == top]
        by_lr = (
            at_top.groupby([*keys, "scaling", "lr"], dropna=False)[statistics.SELECT]
            .mean()
            .reset_index()
        )
        best_lr = by_lr.loc[by_lr.groupby([*keys, "scaling"], dropna=False)[statistics.SELECT]
                            .idxmin()]  # fmt: skip
        chosen = at_top.merge(best_lr[[*keys, "scaling", "lr"]], on=[*keys, "scaling", "lr"])
        table = (
            chosen.groupby([*keys, unit, "scaling"], dropna=False)["speed"]
            .mean()
            .unstack("scaling")
            .dropna()
        )
        if table.empty or not {STANDARD, RSLORA} <= set(table.columns):
            continue
        difference = (table["rslora"] - table["standard"]).groupby(unit).mean()
        settings = table.groupby(keys, dropna=False).mean()
        faster = settings["rslora"] < settings["standard"]
        text = (
            f"{dataset}, r = {top}, each rule at its own best learning rate: α/√r is faster in "
            f"{int(faster.sum())} of {len(settings)} settings (mean log₁₀ validation MSE over "
            f"epochs {settings['rslora'].mean():.3f} vs {settings['standard'].mean():.3f} "
            f"under α/r; difference {difference.mean():+.3f})"
        )
        searched = {
            f"{registry.scaling_label(rule)} r{top}": (
                len(by_lr[by_lr["scaling"] == rule]),
                int(at_top.loc[at_top["scaling"] == rule, "lr"].nunique()),
            )
            for rule in ("standard", "rslora")
        }
        checks.append(
            interval_check(dataset, text, difference, 0.0, True, unit, show="{:+.3f}".format,
                           arms=Arms(searched), replicates=n_replicates(chosen))
        )  # fmt: skip
    return from_checks("rslora", statement, checks, "no shared settings under both rules")


def subspaces_overlap(pairs: pd.DataFrame | None, runs: pd.DataFrame | None = None) -> Finding:
    """Judged on φ(1, 1) per unit: per task replicate (its seeds' pairs averaged) where ``runs``
    gives two or more replicates of the pairs' runs, else per seed pair."""
    statement = (
        "Subspaces: the top directions of A at a low and a high rank overlap "
        f"(φ > {SUBSPACE_THRESHOLD} for i = j = 1; LoRA paper Fig. 3 compares r = 8 and r = 64)."
    )
    if pairs is None or pairs.empty or not (pairs["comparison"] == "rank").any():
        return Finding("subspaces", statement, NOT_TESTED, "needs two ranks with saved adapters")
    top = pairs[(pairs["comparison"] == "rank") & (pairs["i"] == 1) & (pairs["j"] == 1)]
    if runs is not None and "task_seed" in runs and "run_a" in top:
        replicate = runs[["run_id", "task_seed"]].rename(columns={"run_id": "run_a"})
        top = top.merge(replicate, on="run_a", how="left")
    checks = []
    for dataset, group in top.groupby("dataset", sort=True):
        unit = unit_column(group)
        phi = per_unit(group, "phi", unit) if unit == "task_seed" else group["phi"]
        spread = f" ± {phi.std(ddof=1):.2g}" if len(phi) > 1 else ""
        text = (
            f"{dataset}: φ(A_r={group['rank_a'].iloc[0]}, A_r={group['rank_b'].iloc[0]}, 1, 1) = "
            f"{phi.mean():.3f}{spread}"
        )
        checks.append(
            interval_check(
                dataset,
                text,
                phi,
                SUBSPACE_THRESHOLD,
                False,
                unit,
                "{:.3f}".format,
                replicates=n_replicates(group),
            )
        )
    return from_checks("subspaces", statement, checks, "no rank comparison")


def efficiency(runs: pd.DataFrame, table: pd.DataFrame, tolerance: float) -> Finding:
    """Judged at the lowest rank whose mean validation loss is within ``tolerance`` of full
    fine-tuning's (or, without one, the rank with the lowest validation loss), on the test-loss
    ratio paired per unit, each method at its own best settings."""
    statement = (
        f"Efficiency: LoRA matches full fine-tuning's loss (within {tolerance:.0%}) with far "
        "fewer trainable parameters and less optimizer state."
    )
    if table.empty or not (registry.full_rows(table["method"])).any():
        return Finding(
            "efficiency", statement, NOT_TESTED, "no full fine-tuning run completed (or none ran)"
        )
    unit, value = unit_column(runs), statistics.reported_column(runs)
    shown = statistics.reported_loss_column(table)
    split = statistics.split_name(value)
    lora_runs = statistics.best_lora_runs(runs, ["dataset", "rank"])
    full_runs = statistics.best_full_runs(runs)
    checks = []
    for dataset, rows in table.groupby("dataset", sort=True):
        full = rows[registry.full_rows(rows["method"])]
        lora = rows[registry.factor_rows(rows["method"])]
        if full.empty or lora.empty:
            continue
        ref = full.iloc[0]
        hit = statistics.first_rank_matching_full(rows, tolerance)
        row = hit if hit is not None else lora.loc[lora["final_val_loss"].idxmin()]
        mine = lora_runs[
            (lora_runs["dataset"] == dataset)
            & (lora_runs["rank"] == row["rank"])
            & (lora_runs["method"] == row["method"])
        ]
        theirs = full_runs[full_runs["dataset"] == dataset]
        ratio = (per_unit(mine, value, unit) / per_unit(theirs, value, unit) - 1).dropna()
        if hit is None:
            text = (
                f"{dataset}: on validation no rank comes within {tolerance:.0%} of full FT's "
                f"{ref['final_val_loss']:.4g} on average (best: r = {row['rank']} at "
                f"{row['final_val_loss']:.4g}); final {split} MSE {row[shown]:.4g} against "
                f"{ref[shown]:.4g}"
            )
        else:
            text = (
                f"{dataset}: r = {hit['rank']}, the lowest rank within {tolerance:.0%} on "
                f"validation, reaches a final {split} MSE of {hit[shown]:.4g} against "
                f"{ref[shown]:.4g} with {1 / hit['params_vs_full']:.1f}× fewer "
                f"trainable parameters ({hit['trainable_params']:,} vs "
                f"{ref['trainable_params']:,}) and {1 / hit['state_vs_full']:.1f}× less "
                "optimizer state"
            )
        text += f"; {split} loss over full FT's {_pct(ratio.mean())}"
        arms = Arms({statistics.arm_name(r): arm_budget(r) for r in (row, ref)})
        checks.append(
            interval_check(dataset, text, ratio, tolerance, True, unit, show=_pct, arms=arms,
                           replicates=n_replicates(mine))
        )  # fmt: skip
    return from_checks("efficiency", statement, checks, "no dataset has both methods")


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
        subspaces_overlap(pairs, runs),
        efficiency(runs, table, tolerance),
    ]
