"""Loss against rank, parameters and epochs: the main sweep's figures."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from lorasweep.analysis import statistics
from lorasweep.figures.chosen import chosen_runs, chosen_settings, full_level
from lorasweep.figures.registry import SELECTED_TABLES, Tables, figure, varies
from lorasweep.figures.style import (
    FULL_COLOR,
    METHOD_COLORS,
    SCALING_COLORS,
    SMALL,
    THEORY_COLOR,
    band_by,
    dataset_panels,
    datasets_of,
    epoch_axis,
    errorbar,
    errorbar_by,
    legend_outside,
    line_styles,
    log_axes,
    method_parts,
    no_data,
    ordered_scalings,
    rank_colors,
    scaling_label,
    subplot_grid,
)
from lorasweep.figures.targets import target_colors, target_order
from lorasweep.models import registry
from lorasweep.options import SINGLE_LAYER_KINDS


@figure(tables=SELECTED_TABLES)
def loss_vs_params(t: Tables) -> plt.Figure:
    """Final validation loss against trainable parameters (log x): LoRA at each rank (best
    settings; one line per target set of a deep model) and full FT, with the break-even rank
    r = d_in·d_out/(d_in + d_out) marked."""
    runs = t.runs
    lora = statistics.completed_lora(runs)
    if lora.empty:
        return no_data("no completed LoRA runs")
    datasets, fig, axes = dataset_panels(lora)
    keys = ["dataset", "rank", *statistics.settings_in(lora)]
    best = chosen_settings(t, "method_targets_rank")
    params = lora[[*keys, "trainable_params"]].drop_duplicates(keys)
    best = best.merge(params.rename(columns={"trainable_params": "params"}), on=keys)
    full_best = chosen_settings(t, "full")
    full_params = (
        runs[registry.full_rows(runs["method"])].groupby("dataset")["trainable_params"].first()
    )
    for ax, dataset in zip(axes, datasets, strict=True):
        _lora_by_params(ax, best[best["dataset"] == dataset])
        full_row = full_best[full_best["dataset"] == dataset]
        if not full_row.empty:
            _full_by_params(ax, full_params[dataset], full_row)
        first = lora[lora["dataset"] == dataset].iloc[0]
        if first["dataset_kind"] in SINGLE_LAYER_KINDS:
            _break_even(ax, first)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("final validation MSE")
        ax.set_title(dataset)
    legend_outside(fig, axes)
    return fig


def _lora_by_params(ax, best: pd.DataFrame) -> None:
    """Best adapter loss against trainable parameters, each point labelled with its rank: one
    line per method (labelled by its record), or per method and target set (a deep model's) in
    the target sets' colours, a target set run at one rank as a single point."""
    lines = []
    for method, runs in best.groupby("method", sort=False):
        name = registry.method(method).label
        sets = target_order(runs["targets"]) if "targets" in runs else []
        if not sets:
            lines.append((name, METHOD_COLORS[method], runs.sort_values("params")))
            continue
        colors = target_colors(sets)
        lines += [(f"{name}, {s}", colors[s], runs[runs["targets"] == s].sort_values("params"))
                  for s in sets]  # fmt: skip
    for label, color, group in lines:
        if len(group) == 1:
            label = f"{label} (r={group['rank'].iloc[0]})"
            errorbar(ax, group["params"], group["mean"], group["std"], color, label,
                     linestyle="none")  # fmt: skip
            continue
        errorbar(ax, group["params"], group["mean"], group["std"], color, label)
        for _, row in group.iterrows():
            ax.annotate(f"r={row['rank']}", (row["params"], row["mean"]), fontsize=SMALL,
                        xytext=(2, 3), textcoords="offset points")  # fmt: skip


def _full_by_params(ax, params: int, best: pd.DataFrame) -> None:
    """Full fine-tuning's best loss as a star at its parameter count."""
    ax.errorbar(
        [params],
        best["mean"],
        yerr=best["std"],
        marker="*",
        markersize=8,
        color=FULL_COLOR,
        linestyle="none",
        label="full FT",
    )


def _break_even(ax, run: pd.Series) -> None:
    """The parameter count of full FT, where LoRA's rank reaches d_in·d_out/(d_in + d_out)."""
    d_in, d_out = int(run["in_features"]), int(run["out_features"])
    break_even = d_in * d_out / (d_in + d_out)
    ax.axvline(
        d_in * d_out,
        color=THEORY_COLOR,
        linestyle=":",
        linewidth=1,
        label=f"break-even r≈{break_even:.3g}",
    )


@figure(tables=SELECTED_TABLES)
def learning_curves(t: Tables) -> plt.Figure:
    """Validation loss per epoch for each rank (best settings per rank; each adapter method in
    its own line style where several ran), one panel per dataset and scaling rule, with the best
    full fine-tuning curve and the noise floor."""
    runs, epochs = t.runs, t.epochs
    lora = runs[registry.factor_rows(runs["method"])]
    if statistics.completed(lora).empty:
        return no_data("no completed LoRA runs")
    datasets = datasets_of(lora)
    scalings = ordered_scalings(lora["scaling"])
    colors = rank_colors(lora["rank"].dropna().unique())
    fig, axes = subplot_grid(len(datasets), len(scalings), sharey="row")
    chosen = chosen_runs(t, "scaling_rank")
    curves = epochs.merge(chosen[["run_id", "dataset", "method", "scaling", "rank"]], on="run_id")
    full_runs = chosen_runs(t, "full")
    full_curves = epochs.merge(full_runs[["run_id", "dataset"]], on="run_id")
    for i, dataset in enumerate(datasets):
        for j, scaling in enumerate(scalings):
            ax = axes[i, j]
            panel = curves[(curves["dataset"] == dataset) & (curves["scaling"] == scaling)]
            for prefix, style, part in method_parts(panel):
                for rank, group in part.groupby("rank", sort=True):
                    band_by(ax, group, "epoch", "val_loss", colors[int(rank)], f"{prefix}r={rank}",
                            **style)  # fmt: skip
            full = full_curves[full_curves["dataset"] == dataset]
            if not full.empty:
                band_by(ax, full, "epoch", "val_loss", FULL_COLOR, "full FT", linestyle="--")
            floor = statistics.noise_floor(runs, dataset)
            if floor:
                ax.axhline(floor, color=THEORY_COLOR, linestyle=":", linewidth=1, label="σ²")
            ax.set_yscale("log")
            ax.set_title(f"{dataset} · {scaling_label(scaling)}")
            epoch_axis(ax)
            if j == 0:
                ax.set_ylabel("validation MSE")
    legend_outside(fig, axes)
    return fig


@figure(tables=SELECTED_TABLES)
def loss_vs_rank(t: Tables) -> plt.Figure:
    """Final validation loss against rank per scaling rule (best other settings; per adapter
    method where several ran), with the Eckart–Young optimum for each rank, the noise floor, and
    full FT as a mean ± sd band."""
    runs = t.runs
    lora = statistics.completed_lora(runs)
    if lora.empty:
        return no_data("no completed LoRA runs")
    datasets, fig, axes = dataset_panels(lora)
    best = chosen_settings(t, "scaling_rank")
    for ax, dataset in zip(axes, datasets, strict=True):
        panel = best[best["dataset"] == dataset]
        for prefix, style, part in method_parts(panel):
            for scaling in ordered_scalings(part["scaling"]):
                group = part[part["scaling"] == scaling]
                errorbar(
                    ax,
                    group["rank"],
                    group["mean"],
                    group["std"],
                    SCALING_COLORS[scaling],
                    f"{prefix}{scaling_label(scaling)}",
                    **style,
                )
        optimum = _optimum_of(lora, panel)
        if not optimum.empty:
            ax.plot(
                optimum.index,
                optimum.values,
                color=THEORY_COLOR,
                linestyle="-.",
                linewidth=1,
                label="rank-r optimum",
            )
        full = full_level(t, dataset)
        if full:
            mean, sd = full
            ax.axhline(mean, color=FULL_COLOR, linestyle="--", linewidth=1, label="full FT")
            ax.axhspan(mean - sd, mean + sd, color=FULL_COLOR, alpha=0.12, linewidth=0)
        log_axes(ax, "LoRA rank r", "final validation MSE", dataset)
    legend_outside(fig, axes)
    return fig


def _optimum_of(lora: pd.DataFrame, best: pd.DataFrame) -> pd.Series:
    """The rank-r optimum against rank at the settings drawn: a deep model's depends on the
    target set, so each rank takes its best target set's (the lowest over scaling rules)."""
    keys = ["dataset", "rank", *statistics.settings_in(lora)]
    rows = best.merge(lora[[*keys, "optimal_val_loss"]].drop_duplicates(keys), on=keys)
    rows = rows.sort_values("mean").drop_duplicates("rank")
    return rows.set_index("rank")["optimal_val_loss"].sort_index().dropna()


@figure(when=varies("rank"))
def grad_norm_vs_rank(t: Tables) -> plt.Figure:
    """Mean gradient norm of A and of B during the first epoch against rank, per scaling rule
    (colour) and α (line style), at one init and learning rate."""
    lora = statistics.completed_lora(t.runs)
    if lora.empty:
        return no_data("no completed LoRA runs")
    lora = statistics.reference_slice(lora, vary=["rank", "scaling", "alpha"])
    lora = statistics.where_varies(lora, ["dataset", "scaling", "alpha"], "rank")
    if lora.empty:
        return no_data("fewer than two ranks")
    first = t.epochs[t.epochs["epoch"] == 1].merge(lora, on="run_id")
    alphas = sorted(first["alpha"].unique())
    style_of = line_styles(alphas)
    datasets = datasets_of(first)
    fig, axes = subplot_grid(len(datasets), 2)
    for i, dataset in enumerate(datasets):
        panel = first[first["dataset"] == dataset]
        for j, column in enumerate(("grad_norm_A", "grad_norm_B")):
            ax = axes[i, j]
            for scaling in ordered_scalings(panel["scaling"]):
                for alpha in sorted(panel["alpha"].unique()):
                    group = panel[(panel["scaling"] == scaling) & (panel["alpha"] == alpha)]
                    if group.empty:
                        continue
                    errorbar_by(
                        ax,
                        group,
                        "rank",
                        column,
                        SCALING_COLORS[scaling],
                        f"{scaling_label(scaling)}, α={alpha:g}",
                        size=2.5,
                        linestyle=style_of[alpha],
                    )
            log_axes(
                ax,
                "LoRA rank r",
                f"mean ‖∇{column[-1]}‖_F, epoch 1",
                f"{dataset} · gradient of {column[-1]}",
            )
    legend_outside(fig, axes)
    return fig
