"""The report's sections on the oracle gaps and the newer evidence: where the gap comes from,
learning rate, learning vs forgetting, and intruder dimensions. Every number comes from the
tables; a section says what its study needs when the config does not provide it."""

from __future__ import annotations

import html

import pandas as pd

from lorasweep.analysis.evidence_findings import INTRUDER_EPSILON
from lorasweep.analysis.learning_rate import CURVE_KEYS, ratio_spread
from lorasweep.models import registry


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, border=0, na_rep="")


def _curve_name(row) -> str:
    if registry.is_full(row["method"]):
        return "full FT"
    parts = [registry.method(row["method"]).label]
    if pd.notna(row["rank"]):
        parts[0] += f" r={int(row['rank'])}"
    if pd.notna(row["scaling"]):
        parts.append(registry.scaling_label(row["scaling"]))
    if pd.notna(row["alpha"]):
        parts.append(f"α={row['alpha']:g}")
    return ", ".join(parts)


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


def forgetting_section(matched: pd.DataFrame | None) -> list[str]:
    """Least forgetting of LoRA at each rank and of full FT at the matched target loss, from
    ``forgetting.csv``, beside what estimation theory predicts for the least-squares fits."""
    head = "<h2>Learning against forgetting</h2>"
    pooled = matched[matched["unit"] == "pooled"] if matched is not None else pd.DataFrame()
    if pooled.empty:
        return [head, "<p>Not tested: give a <code>lowrank</code> dataset a <code>source</code> "
                "task and enable full fine-tuning.</p>"]  # fmt: skip
    g = "{:.3g}".format
    shown = pd.DataFrame(
        {
            "dataset": pooled["dataset"],
            "LoRA rank": pooled["rank"],
            "matched target val MSE": pooled["matched_val_loss"].map("{:.4g}".format),
            "LoRA forgetting": pooled["lora_forgetting"].map(g),
            "predicted (rank-r fit)": pooled["predicted_lora"].map(g, na_action="ignore"),
            "full FT forgetting": pooled["full_forgetting"].map(g),
            "predicted (OLS)": pooled["predicted_full"].map(g, na_action="ignore"),
            "LoRA / full FT": (pooled["lora_forgetting"] / pooled["full_forgetting"]).map(g),
        }
    )
    return [
        head,
        "<p>Forgetting is the source-task MSE minus its value before fine-tuning. For LoRA at "
        "each rank (all its learning rates and scaling rules pooled) and for full "
        "fine-tuning (all learning rates), the least forgetting among the checkpoints (epochs, "
        "means over seeds) whose target validation MSE is at most the matched level: the best "
        "target loss both reach. 'Predicted' is what estimation theory gives for the "
        "least-squares fit of the same form on the same n samples (reduced-rank regression at "
        "rank r, OLS for full FT): leak·‖ΔW*_r‖²/d_out for learning the task plus what fitting "
        "the noise costs, σ²·tr(Σ_src Σ_tgt⁻¹)/(n − d − 2) for OLS (docs/science.md). The "
        "finding's interval comes from the per-unit rows of <code>forgetting.csv</code>.</p>",
        _table(shown),
    ]


def intruders_section(means: pd.DataFrame | None, intruders: pd.DataFrame | None) -> list[str]:
    """Mean intruder counts at ε = 0.5 and their null controls by method, scaling rule and
    rank (``intruder_means.csv``), and the truth's."""
    head = "<h2>Intruder dimensions</h2>"
    if means is None or means.empty:
        return [head, "<p>No completed runs.</p>"]
    means = means[means["epsilon"] == INTRUDER_EPSILON]
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
            "null control": [
                f"{m:.2g} ± {s:.2g}"
                for m, s in zip(means["null_mean"], means["null_std"], strict=True)
            ],
            "runs": means["count"],
        }
    )
    reference = ""
    if intruders is not None and not intruders.empty:
        truth = intruders[intruders["run_id"].isna() & (intruders["epsilon"] == INTRUDER_EPSILON)]
        reference = "".join(
            f" The true W₀ + ΔW* of <b>{html.escape(d)}</b> has {n:g}."
            for d, n in truth.groupby("dataset")["intruders"].mean().items()
        )
    return [
        head,
        f"<p>Intruders among the top 10 left singular vectors of W₀ + ΔW at ε = "
        f"{INTRUDER_EPSILON:g} (<code>intruder_means.csv</code> has ε = 0.4, 0.5 and 0.6), mean "
        f"± sd over seeds and replicates, at the best settings of each rank and full "
        f"fine-tuning's best learning rate. The null control is W₀ plus a random perturbation "
        f"with the singular values of the run's ΔW (its rank and Frobenius norm) and random "
        f"singular vectors: what size and rank alone produce.{reference}</p>",
        _table(shown),
    ]


def gaps_section(gaps: pd.DataFrame | None) -> list[str]:
    """The gap decomposition of ``gaps.csv``, means over task replicates, in units of σ²."""
    head = "<h2>Where the gap comes from</h2>"
    if gaps is None or gaps.empty:
        return [head, "<p>Not tested: needs a single-layer <code>lowrank</code> dataset.</p>"]
    noiseless = sorted(gaps.loc[gaps["noise_floor"] <= 0, "dataset"].unique())
    gaps = gaps[gaps["noise_floor"] > 0]
    left_out = (
        f"<p>Left out (σ² = 0, so no unit of σ²): {html.escape(', '.join(noiseless))}.</p>"
        if noiseless
        else ""
    )
    if gaps.empty:
        return [head, "<p>Not tested: needs a noisy single-layer <code>lowrank</code> dataset.</p>",
                left_out]  # fmt: skip
    keys = ["dataset", "method", "rank"]
    parts = ["total_gap", "optimisation", "approximation", "estimation"]
    mean = gaps.groupby(keys, dropna=False, sort=False)[[*parts, "noise_floor"]].mean()
    mean = mean.reset_index()
    shown = pd.DataFrame(
        {
            "dataset": mean["dataset"],
            "method": [
                "full FT" if registry.is_full(m) else f"{registry.method(m).label} r={int(r)}"
                for m, r in zip(mean["method"], mean["rank"], strict=True)
            ],
            **{
                f"{part.replace('_', ' ')} / σ²": (mean[part] / mean["noise_floor"]).map(
                    "{:+.3g}".format
                )
                for part in parts
            },
        }
    )
    return [
        head,
        "<p>The excess population risk of the best runs, R(run) − σ², split exactly into "
        "optimisation (the run against the closed-form least-squares fit of its own form on "
        "the same training split: reduced-rank regression at its rank, OLS for full FT), "
        "approximation (the rank-r fit against OLS; negative where the rank constraint removes "
        "more noise than signal) and estimation (OLS against the population optimum), means "
        "over task replicates of <code>gaps.csv</code>, in units of σ².</p>",
        _table(shown),
        left_out,
    ]


def evidence_sections(
    optima: pd.DataFrame | None,
    intruders: pd.DataFrame | None,
    matched: pd.DataFrame | None = None,
    intruder_means: pd.DataFrame | None = None,
    gaps: pd.DataFrame | None = None,
) -> list[str]:
    """The four sections, in order: gaps, learning rate, forgetting, intruders."""
    return [
        *gaps_section(gaps),
        *learning_rate_section(optima),
        *forgetting_section(matched),
        *intruders_section(intruder_means, intruders),
    ]
