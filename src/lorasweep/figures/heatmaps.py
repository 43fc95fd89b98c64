"""Heatmaps of the final loss over two hyperparameters."""

from __future__ import annotations

import matplotlib.pyplot as plt

from lorasweep.analysis import statistics
from lorasweep.figures.chosen import chosen_settings
from lorasweep.figures.registry import SELECTED_TABLES, Tables, figure, varies
from lorasweep.figures.style import (
    dataset_scaling_panels,
    heatmap,
    method_parts,
    no_data,
    panel_grid,
    scaling_label,
)


@figure(tables=SELECTED_TABLES, when=varies("rank", "alpha"))
def rank_alpha_heatmap(t: Tables) -> plt.Figure:
    """Mean final validation loss for each rank × α (best init and lr), one panel per dataset
    and scaling rule (and adapter method, where several ran); colour on a log scale."""
    if statistics.completed_lora(t.runs).empty:
        return no_data("no completed LoRA runs")
    best = chosen_settings(t, "scaling_rank_alpha")
    panels = [(prefix, part, panel) for prefix, _, part in method_parts(best)
              for panel in dataset_scaling_panels(part)]  # fmt: skip
    fig, axes = panel_grid(len(panels))
    for ax, (prefix, part, (dataset, scaling)) in zip(axes, panels, strict=True):
        grid = part[(part["dataset"] == dataset) & (part["scaling"] == scaling)].pivot(
            index="rank", columns="alpha", values="mean"
        )
        heatmap(ax, grid, cbar_kws={"label": "log₁₀ final val MSE"})
        ax.set_xlabel("α")
        ax.set_ylabel("rank r")
        ax.set_title(f"{dataset} · {prefix}{scaling_label(scaling)}")
    return fig


@figure(when=varies("alpha", "lr"))
def alpha_lr_heatmap(t: Tables) -> plt.Figure:
    """Mean final validation loss for each α × learning rate at one rank, per dataset and
    scaling rule. Under Adam, the adapter's step is about s·lr, so equal-loss cells should lie
    along diagonals if tuning α is like tuning the learning rate."""
    lora = statistics.completed_lora(t.runs)
    lora = statistics.reference_slice(lora, vary=["alpha", "lr", "scaling"])
    lora = statistics.where_varies(lora, ["dataset", "scaling"], "alpha")
    lora = statistics.where_varies(lora, ["dataset", "scaling"], "lr")
    if lora.empty:
        return no_data("no α × lr grid")
    stats = statistics.seed_stats(lora, ["dataset", "scaling", "rank", "alpha", "lr"])
    panels = dataset_scaling_panels(stats)
    fig, axes = panel_grid(len(panels))
    for ax, (dataset, scaling) in zip(axes, panels, strict=True):
        cell = stats[(stats["dataset"] == dataset) & (stats["scaling"] == scaling)]
        grid = cell.pivot(index="alpha", columns="lr", values="mean").sort_index(ascending=False)
        heatmap(ax, grid, cbar_kws={"label": "log₁₀ final val MSE"})
        ax.set_xlabel("learning rate")
        ax.set_ylabel("α")
        ax.set_title(f"{dataset} · {scaling_label(scaling)} · r={int(cell['rank'].iloc[0])}")
    return fig
