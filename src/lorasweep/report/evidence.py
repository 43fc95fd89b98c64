"""The report's three sections on the newer evidence: learning rate, learning vs forgetting, and
intruder dimensions. Every number comes from the tables; a section says what its study needs
when the config does not provide it."""

from __future__ import annotations

import html

import pandas as pd

from lorasweep.analysis import forgetting
from lorasweep.analysis.evidence_findings import INTRUDER_EPSILON, intruder_means
from lorasweep.analysis.learning_rate import CURVE_KEYS, ratio_spread
from lorasweep.models import registry


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, border=0, na_rep="")


def _curve_name(row) -> str:
    if registry.is_full(row["method"]):
        return "full FT"
    rule = registry.scaling_label(row["scaling"]) if pd.notna(row["scaling"]) else ""
    label = registry.method(row["method"]).label
    return f"{label} r={int(row['rank'])}, {rule}, α={row['alpha']:g}"


def _spread_text(ratios: pd.Series) -> str:
    geo, low, high = ratio_spread(ratios)
    return "" if pd.isna(geo) else f"{geo:.3g}× ({low:.3g}–{high:.3g}×)"


def learning_rate_section(optima: pd.DataFrame | None) -> list[str]:
    """Each curve's optimal learning rate and LoRA's ratio to full FT's, with the spread of
    the per-seed ratios."""
    head = "<h2>Learning rate: LoRA against full fine-tuning</h2>"
    if optima is None or optima.empty:
        return [head, "<p>Not tested: sweep <code>grid.lr</code> and "
                "<code>full_finetune.lr</code> over several values.</p>"]  # fmt: skip
    seeds = optima[optima["seed"].notna()]
    spread = seeds.groupby(CURVE_KEYS, dropna=False)["ratio_to_full"].agg(_spread_text)
    mean = optima[optima["seed"].isna()].join(spread.rename("per seed"), on=CURVE_KEYS)
    edge = mean["at_edge"].astype(bool).map({True: " (grid edge)", False: ""})
    shown = pd.DataFrame(
        {
            "dataset": mean["dataset"],
            "curve": [_curve_name(row) for _, row in mean.iterrows()],
            "learning rates": mean["lrs"],
            "optimal lr": mean["optimal_lr"].map("{:.3g}".format) + edge,
            "lowest final val MSE": mean["min_loss"].map("{:.4g}".format),
            "LoRA / full FT": mean["ratio_to_full"].map(lambda v: f"{v:.3g}×", na_action="ignore"),
            "per seed": mean["per seed"],
        }
    )
    return [
        head,
        "<p>Each curve's optimum is the vertex of the parabola through the lowest point of the "
        "mean-over-seeds curve of final validation MSE and its two neighbours, in (log lr, log "
        "loss); at the edge of the grid it is only a bound and is left out of the findings. "
        "The ratio is LoRA's optimum over full fine-tuning's on the same dataset; 'per seed' "
        "gives the geometric mean and range of the same ratio seed by seed.</p>",
        _table(shown),
    ]


def forgetting_section(runs: pd.DataFrame, epochs: pd.DataFrame) -> list[str]:
    """Least forgetting of LoRA at each rank and of full FT at the matched target loss."""
    head = "<h2>Learning against forgetting</h2>"
    matched = forgetting.matched_forgetting(forgetting.checkpoints(runs, epochs))
    if matched.empty:
        return [head, "<p>Not tested: give a <code>lowrank</code> dataset a <code>source</code> "
                "task and enable full fine-tuning.</p>"]  # fmt: skip
    shown = pd.DataFrame(
        {
            "dataset": matched["dataset"],
            "LoRA rank": matched["rank"],
            "matched target val MSE": matched["matched_val_loss"].map("{:.4g}".format),
            "LoRA forgetting": matched["lora_forgetting"].map("{:.3g}".format),
            "full FT forgetting": matched["full_forgetting"].map("{:.3g}".format),
            "LoRA / full FT": (matched["lora_forgetting"] / matched["full_forgetting"]).map(
                "{:.3g}".format
            ),
        }
    )
    return [
        head,
        "<p>Forgetting is the source-task MSE minus its value before fine-tuning. For LoRA at "
        "each rank (all its learning rates and scaling rules pooled) and for full "
        "fine-tuning (all learning rates), the least forgetting among the checkpoints (epochs, "
        "means over seeds) whose target validation MSE is at most the matched level: the best "
        "target loss both reach.</p>",
        _table(shown),
    ]


def intruders_section(runs: pd.DataFrame, intruders: pd.DataFrame | None) -> list[str]:
    """Mean intruder counts at ε = 0.5 by method, scaling rule and rank, and the truth's."""
    head = "<h2>Intruder dimensions</h2>"
    means = intruder_means(runs, intruders) if intruders is not None else pd.DataFrame()
    if means.empty:
        return [head, "<p>No completed runs.</p>"]
    shown = pd.DataFrame(
        {
            "dataset": means["dataset"],
            "method": [
                "full FT"
                if registry.is_full(m)
                else f"{registry.method(m).label} r={int(r)}, {registry.scaling_label(s)}"
                for m, r, s in zip(means["method"], means["rank"], means["scaling"], strict=True)
            ],
            "intruders": [
                f"{m:.2g} ± {s:.2g}" for m, s in zip(means["mean"], means["std"], strict=True)
            ],  # fmt: skip
            "seeds": means["count"],
        }
    )
    truth = intruders[intruders["run_id"].isna() & (intruders["epsilon"] == INTRUDER_EPSILON)]
    reference = "".join(
        f" The true W₀ + ΔW* of <b>{html.escape(d)}</b> has {n:g}."
        for d, n in truth.groupby("dataset")["intruders"].mean().items()
    )
    return [
        head,
        f"<p>Intruders among the top 10 left singular vectors of W₀ + ΔW at ε = "
        f"{INTRUDER_EPSILON:g} (<code>intruders.csv</code> has ε = 0.4, 0.5 and 0.6), mean ± sd "
        f"over seeds, at the best settings of each rank and full fine-tuning's best learning "
        f"rate.{reference}</p>",
        _table(shown),
    ]


def evidence_sections(
    runs: pd.DataFrame,
    epochs: pd.DataFrame,
    optima: pd.DataFrame | None,
    intruders: pd.DataFrame | None,
) -> list[str]:
    """The three sections, in order."""
    return [
        *learning_rate_section(optima),
        *forgetting_section(runs, epochs),
        *intruders_section(runs, intruders),
    ]
