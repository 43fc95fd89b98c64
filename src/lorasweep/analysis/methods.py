"""The method comparison: every method against full fine-tuning, each at its own best setting
and learning rate, with the ground truth's measures, and the findings it decides.

An *arm* is a method at one budget on one dataset: (dataset, method, rank, targets), the rank
empty for full fine-tuning and for a method without one (IA3). Each arm picks the setting (its
learning rate, and for LoRA and DoRA also α, the scaling rule, init and LoRA+ ratio) with the
lowest mean final validation loss over the units (task replicates × seeds; a diverged run
counts as infinitely bad), and is reported on the test split at that setting. Its search
budget, settings and learning rates, is in the table beside it.

The claims and their thresholds, fixed before any data were seen:

- ``dora_low_rank``: DoRA beats LoRA at low rank (Liu et al. 2024, arXiv 2402.09353): at the
  lowest rank both ran, the paired test-loss difference DoRA − LoRA is below 0.
- ``variants_within``: after tuning, LoRA variants land within 2 % of each other (Learning Rate
  Matters, arXiv 2602.04998): every LoRA variant's paired relative test-loss difference to
  LoRA at the same rank lies in [−2 %, +2 %].
- ``pissa_lr``: PiSSA's best learning rate is below LoRA's (same paper): the per-unit ratio of
  PiSSA's optimal rate to the kaiming init's, at the same rank and other settings, is below 1.
- ``multiplicative``: a multiplicative or rotational method cannot learn an additive low-rank
  shift (derived from the ground truth): on a single-layer ``lowrank`` task its test loss stays
  at least 25 % above the noise floor σ².
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lorasweep.analysis import statistics
from lorasweep.analysis.findings import (
    Arms,
    Check,
    Finding,
    from_checks,
    interval_check,
    n_replicates,
    unit_column,
)
from lorasweep.analysis.intervals import bootstrap_mean
from lorasweep.models import registry

ARM_KEYS = ["dataset", "method", "rank", "targets"]
SETTING_KEYS = ["alpha", "scaling", "init", "lr_ratio", "bias", "settings"]
"""What an arm searches besides its learning rate (empty where a method has no such axis)."""
VARIANT_TOLERANCE = 0.02
MULTIPLICATIVE_EXCESS = 0.25
REFERENCE_INIT = registry.INIT_RECORDS[0].name
"""The init PiSSA's learning rate is compared with (kaiming, PEFT's default)."""

METHOD_COLUMNS = [
    "dataset", "method", "label", "trained_by", "rank", "targets", "lr", "alpha", "scaling",
    "init", "settings_searched", "lrs_searched", "n_units", "n_replicates", "val_loss",
    "test_loss", "test_ci_low", "test_ci_high", "noise_floor", "excess_over_floor",
    "trainable_params", "train_state_bytes", "step_seconds", "delta_error", "phi_true",
    "additive_shift",
]  # fmt: skip


def compares_methods(methods: pd.Series) -> bool:
    """Whether ``methods`` (a table's method column) holds several adapter methods, or one
    trained through PEFT: where the method comparison's findings and section appear."""
    names = set(methods[registry.adapter_rows(methods)])
    return len(names) > 1 or any(registry.method(n).through_peft for n in names)


def _present(runs: pd.DataFrame, keys: list[str]) -> list[str]:
    return [k for k in keys if k in runs]


def _settings_of(runs: pd.DataFrame) -> list[str]:
    return _present(runs, [*SETTING_KEYS, "lr"])


def _units(runs: pd.DataFrame) -> list[str]:
    return _present(runs, ["task_seed", "seed"])


def arm_choices(runs: pd.DataFrame) -> pd.DataFrame:
    """Each arm's chosen setting: one row per arm with its setting's columns, ``val_loss`` (the
    mean over units it was chosen on), and the arm's ``settings_searched`` and
    ``lrs_searched``."""
    keys, settings = _present(runs, ARM_KEYS), _settings_of(runs)
    scored = runs.assign(score=runs["final_val_loss"].where(runs["status"] == "ok", math.inf))
    scored["score"] = scored["score"].fillna(math.inf)
    means = scored.groupby([*keys, *settings], dropna=False)["score"].mean().reset_index()
    rows = []
    for _, group in means.groupby(keys, dropna=False):
        best = group.sort_values(["score", *settings], kind="stable").iloc[0]
        rows.append(
            {
                **best.drop("score").to_dict(),
                "val_loss": best["score"],
                "settings_searched": len(group),
                "lrs_searched": group["lr"].nunique(),
            }
        )
    return pd.DataFrame(rows)


def chosen_runs(runs: pd.DataFrame, choices: pd.DataFrame) -> pd.DataFrame:
    """The runs (every unit) at each arm's chosen setting."""
    keys = _present(runs, [*ARM_KEYS, *SETTING_KEYS, "lr"])
    return statistics.completed(runs).merge(choices[keys], on=keys, how="inner")


def matching(frame: pd.DataFrame, values: dict) -> pd.DataFrame:
    """Rows of ``frame`` whose columns equal ``values``, a missing value matching a missing
    one."""
    keep = pd.Series(True, index=frame.index)
    for column, value in values.items():
        keep &= frame[column].isna() if pd.isna(value) else (frame[column] == value)
    return frame[keep.fillna(False).astype(bool)]


def _relative_errors(geometry: pd.DataFrame | None) -> pd.Series:
    """Per run: √(Σ ‖ΔW − ΔW*‖²) / √(Σ ‖ΔW*‖²) over its rows, and NaN where ΔW* = 0."""
    if geometry is None or geometry.empty or "error_norm" not in geometry:
        return pd.Series(dtype=float)
    squares = geometry.assign(e=geometry["error_norm"] ** 2, t=geometry["truth_norm"] ** 2)
    sums = squares.groupby("run_id")[["e", "t"]].sum()
    return np.sqrt(sums["e"]) / np.sqrt(sums["t"].where(sums["t"] > 0))


def method_table(
    runs: pd.DataFrame, timings: pd.DataFrame | None, geometry: pd.DataFrame | None
) -> pd.DataFrame:
    """``methods.csv``: every arm (module docstring) at its chosen setting, with its test loss
    and 95 % interval over units (task replicates where there are several, else seeds), its
    excess over σ², trainable parameters, training-state bytes, seconds per optimizer step,
    the relative error of its merged ΔW against ΔW* and φ to ΔW*'s input subspace (means
    over units), and whether the method can represent an additive shift."""
    if runs.empty:
        return pd.DataFrame(columns=METHOD_COLUMNS)
    choices = arm_choices(runs)
    chosen = chosen_runs(runs, choices)
    errors = _relative_errors(geometry)
    chosen = chosen.assign(delta_error=chosen["run_id"].map(errors))
    if geometry is not None and "phi_true_right" in geometry:
        chosen["phi_true"] = chosen["run_id"].map(
            geometry.groupby("run_id")["phi_true_right"].mean()
        )
    if timings is not None and "mean_step_seconds" in timings:
        chosen["step_seconds"] = chosen["run_id"].map(
            timings.set_index("run_id")["mean_step_seconds"]
        )
    rows = []
    keys = _present(runs, ARM_KEYS)
    for _, choice in choices.iterrows():
        part = matching(chosen, {k: choice[k] for k in keys})
        rows.append(_arm_row(choice, part))
    table = pd.DataFrame(rows).reindex(columns=METHOD_COLUMNS)
    order = {m.name: i for i, m in enumerate(registry.METHOD_RECORDS)}
    table["_order"] = table["method"].map(order)
    table = table.sort_values(["dataset", "_order", "rank", "targets"], na_position="first",
                              kind="stable")  # fmt: skip
    return table.drop(columns="_order").reset_index(drop=True)


def _arm_row(choice: pd.Series, part: pd.DataFrame) -> dict:
    record = registry.method(choice["method"])
    value = statistics.reported_column(part) if len(part) else "final_val_loss"
    unit = unit_column(part)
    losses = part.groupby(unit)[value].mean() if len(part) else pd.Series(dtype=float)
    interval = bootstrap_mean(losses.to_numpy()) if len(losses) else None
    floor = part["noise_floor"].iloc[0] if len(part) and "noise_floor" in part else math.nan
    excess = interval.estimate / floor - 1 if interval and floor > 0 else math.nan
    mean = lambda column: float(part[column].mean()) if column in part and len(part) else math.nan  # noqa: E731
    return {
        **{k: choice.get(k) for k in ["dataset", "method", "rank", "targets", "lr", "alpha",
                                      "scaling", "init", "settings_searched", "lrs_searched"]},
        "label": record.label,
        "trained_by": "PEFT" if record.through_peft else "engine",
        "n_units": interval.n if interval else 0,
        "n_replicates": n_replicates(part) if len(part) else 0,
        "val_loss": choice["val_loss"],
        "test_loss": interval.estimate if interval else math.nan,
        "test_ci_low": interval.low if interval and interval.n > 1 else math.nan,
        "test_ci_high": interval.high if interval and interval.n > 1 else math.nan,
        "noise_floor": floor,
        "excess_over_floor": excess,
        "trainable_params": part["trainable_params"].iloc[0] if len(part) else math.nan,
        "train_state_bytes": part["train_state_bytes"].iloc[0] if len(part) else math.nan,
        "step_seconds": mean("step_seconds"),
        "delta_error": mean("delta_error"),
        "phi_true": mean("phi_true"),
        "additive_shift": record.additive_shift,
    }  # fmt: skip


def _paired(chosen: pd.DataFrame, a: dict, b: dict) -> pd.DataFrame:
    """Per unit, the reported loss of arm ``a`` and of arm ``b`` (columns ``a`` and ``b``),
    on the units both have."""
    value, unit = statistics.reported_column(chosen), unit_column(chosen)

    def losses(match: dict) -> pd.Series:
        return matching(statistics.completed(chosen), match).groupby(unit)[value].mean()

    return pd.concat({"a": losses(a), "b": losses(b)}, axis=1).dropna()


def _by_target_set(chosen: pd.DataFrame):
    """((dataset, targets), rows) of each dataset's target set (targets empty on one layer)."""
    if "targets" not in chosen:
        chosen = chosen.assign(targets=math.nan)
    return chosen.groupby(["dataset", "targets"], dropna=False)


def dora_beats_lora(runs: pd.DataFrame, chosen: pd.DataFrame) -> Finding:
    """``dora_low_rank`` (module docstring)."""
    statement = "DoRA beats LoRA at low rank: a lower test loss at the lowest rank both ran."
    checks = []
    lora, dora = registry.LORA.name, registry.DORA.name
    for (dataset, targets), group in _by_target_set(chosen):
        ranks = sorted(set(group.loc[group["method"] == lora, "rank"].dropna())
                       & set(group.loc[group["method"] == dora, "rank"].dropna()))  # fmt: skip
        if not ranks:
            continue
        rank = ranks[0]
        pairs = _paired(group, {"method": dora, "rank": rank}, {"method": lora, "rank": rank})
        if pairs.empty:
            continue
        where = f"{dataset}" + ("" if pd.isna(targets) else f", targets {targets}")
        text = f"{where}, r = {rank}: DoRA − LoRA test MSE {(pairs['a'] - pairs['b']).mean():+.3g}"
        difference = pairs["a"] - pairs["b"]
        checks.append(interval_check(where, text, difference, 0.0, True, unit_column(group),
                                     replicates=n_replicates(group)))  # fmt: skip
    return from_checks("dora_low_rank", statement, checks, "needs LoRA and DoRA at one rank")


def variants_within(runs: pd.DataFrame, chosen: pd.DataFrame) -> Finding:
    """``variants_within`` (module docstring)."""
    statement = (
        f"After tuning, LoRA variants are within {VARIANT_TOLERANCE:.0%} of LoRA's test loss "
        "at the same rank."
    )
    variants = [m.name for m in registry.METHOD_RECORDS if m.lora_variant]
    lora = registry.LORA.name
    checks = []
    for (dataset, targets), group in _by_target_set(chosen):
        for rank in sorted(group.loc[group["method"] == lora, "rank"].dropna().unique()):
            for name in variants:
                pairs = _paired(
                    group, {"method": name, "rank": rank}, {"method": lora, "rank": rank}
                )
                if pairs.empty:
                    continue
                where = f"{dataset}" + ("" if pd.isna(targets) else f", targets {targets}")
                relative = pairs["a"] / pairs["b"] - 1
                label = registry.method(name).label
                text = f"{where}, {label} r = {rank}: {100 * relative.mean():+.1f} % against LoRA"
                checks.append(
                    interval_check(where, text, relative, VARIANT_TOLERANCE, True,
                                   unit_column(group), show=lambda x: f"{100 * x:+.1f} %",
                                   replicates=n_replicates(group),
                                   within=(-VARIANT_TOLERANCE, VARIANT_TOLERANCE))
                )  # fmt: skip
    return from_checks("variants_within", statement, checks,
                       "needs LoRA and another LoRA variant at one rank")  # fmt: skip


def pissa_lower_rate(runs: pd.DataFrame) -> Finding:
    """``pissa_lr`` (module docstring): per unit, the ratio of the learning rates with the
    lowest validation loss, PiSSA's over the reference init's, at each rank and other setting
    both ran; judged on the mean of log₁₀ ratios (a ratio's CI is 10^(its ends))."""
    statement = "PiSSA's best learning rate is below LoRA's (kaiming init) at the same settings."
    pissa = next(i.name for i in registry.INIT_RECORDS if i.replaces_base)
    lora = statistics.completed(runs[registry.factor_rows(runs["method"])])
    checks = []
    if lora.empty or not {pissa, REFERENCE_INIT} <= set(lora["init"].dropna()):
        return from_checks("pissa_lr", statement, checks, "needs PiSSA and kaiming runs over lr")
    unit = unit_column(lora)
    fixed = _present(lora, ["dataset", "method", "rank", "targets", "alpha", "scaling",
                            "lr_ratio", "bias"])  # fmt: skip
    for key, group in lora.groupby(fixed, dropna=False):
        if group["lr"].nunique() < 2:
            continue
        best = (group.groupby(["init", *_units(group), "lr"])["final_val_loss"].mean()
                .reset_index().sort_values("final_val_loss")
                .groupby(["init", *_units(group)]).head(1))  # fmt: skip
        by_unit = best.groupby(["init", unit])["lr"].apply(
            lambda s: float(np.exp(np.log(s).mean()))
        )
        if pissa not in by_unit.index.get_level_values(0) or REFERENCE_INIT not in by_unit:
            continue
        ratio = np.log10(by_unit[pissa] / by_unit[REFERENCE_INIT]).dropna()
        if ratio.empty:
            continue
        fields = dict(zip(fixed, key, strict=True))
        where = fields["dataset"]
        text = (f"{where}, {registry.method(fields['method']).label} r = {fields['rank']}: "
                f"PiSSA's best rate {10 ** ratio.mean():.3g}× kaiming's")  # fmt: skip
        checks.append(interval_check(where, text, ratio, 0.0, True, unit,
                                     show=lambda x: f"{10 ** x:.3g}×",
                                     replicates=n_replicates(group)))  # fmt: skip
    return from_checks("pissa_lr", statement, checks, "needs PiSSA and kaiming runs over lr")


def multiplicative_cannot(runs: pd.DataFrame, chosen: pd.DataFrame) -> Finding:
    """``multiplicative`` (module docstring)."""
    statement = (
        "A multiplicative or rotational method (IA3, OFT, HRA) cannot learn an additive "
        f"low-rank shift: its test loss stays at least {MULTIPLICATIVE_EXCESS:.0%} above σ²."
    )
    checks: list[Check] = []
    names = [m.name for m in registry.METHOD_RECORDS if m.adapter and not m.additive_shift]
    single = chosen[(chosen["dataset_kind"] == "lowrank") & (chosen["noise_floor"] > 0)]
    value = statistics.reported_column(single) if len(single) else "final_val_loss"
    for (dataset, method, rank), group in single[single["method"].isin(names)].groupby(
        ["dataset", "method", "rank"], dropna=False
    ):
        unit = unit_column(group)
        excess = group.groupby(unit)[value].mean() / group["noise_floor"].iloc[0] - 1
        label = registry.method(method).label + ("" if pd.isna(rank) else f" r = {rank}")
        text = f"{dataset}, {label}: {100 * excess.mean():+.0f} % above σ²"
        arms = Arms({label: (int(group["settings_searched"].iloc[0]),
                             int(group["lrs_searched"].iloc[0]))}, comparison=False)  # fmt: skip
        checks.append(interval_check(dataset, text, excess, MULTIPLICATIVE_EXCESS, False, unit,
                                     show=lambda x: f"{100 * x:+.0f} %", arms=arms,
                                     replicates=n_replicates(group)))  # fmt: skip
    return from_checks("multiplicative", statement, checks,
                       "needs IA3, OFT or HRA on a lowrank dataset with noise σ > 0")  # fmt: skip


def method_findings(runs: pd.DataFrame) -> list[Finding]:
    """The method comparison's findings, each tested where the config ran what it needs."""
    if runs.empty:
        return []
    choices = arm_choices(runs)
    chosen = chosen_runs(runs, choices).merge(
        choices[[*_present(runs, ARM_KEYS), "settings_searched", "lrs_searched"]],
        on=_present(runs, ARM_KEYS),
        how="left",
    )
    return [
        dora_beats_lora(runs, chosen),
        variants_within(runs, chosen),
        pissa_lower_rate(runs),
        multiplicative_cannot(runs, chosen),
    ]
