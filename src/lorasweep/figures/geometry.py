"""Geometry of the learned updates: subspace similarity and amplification (LoRA §7)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lorasweep.analysis import statistics
from lorasweep.figures.registry import (
    GEOMETRY_TABLES,
    Tables,
    all_of,
    figure,
    has_single_layer,
    varies,
)
from lorasweep.figures.style import (
    FULL_COLOR,
    SCALING_COLORS,
    categorical_colors,
    dataset_panels,
    datasets_of,
    errorbar_by,
    heatmap,
    legend_outside,
    line_styles,
    log_axes,
    no_data,
    ordered_scalings,
    scaling_label,
    subplot_grid,
)
from lorasweep.models import registry


def single_layer_rows(geometry: pd.DataFrame) -> pd.DataFrame:
    """The rows of single-layer runs (the deep models' layers have their own figure)."""
    return geometry[geometry["layer"].isna()]


@figure(when=all_of(varies("rank"), has_single_layer), tables=GEOMETRY_TABLES)
def subspace_similarity(t: Tables) -> plt.Figure:
    """φ(A_low, A_high, i, j) (LoRA Fig. 3), φ between two seeds at one rank (Fig. 4), and the
    similarity of the learned update's top directions to the true ΔW*'s against rank."""
    pairs = t.subspace_pairs if t.subspace_pairs is not None else pd.DataFrame()
    panels = []
    for kind in ("rank", "seed"):
        part = pairs[pairs["comparison"] == kind] if not pairs.empty else pairs
        if not part.empty:
            panels.append((kind, part))
    truth = (
        single_layer_rows(t.geometry).merge(statistics.completed(t.runs), on="run_id")
        if t.geometry is not None
        else None
    )
    has_truth = (
        truth is not None
        and truth.loc[registry.factor_rows(truth["method"]), "phi_true_right"].notna().any()
    )
    n = len(panels) + int(has_truth)
    if n == 0:
        return no_data("no adapters to compare")
    fig, axes = subplot_grid(1, n)
    for j, (kind, part) in enumerate(panels):
        _pair_heatmap(axes[0, j], kind, part)
    if has_truth:
        _similarity_to_truth(axes[0, -1], truth[registry.factor_rows(truth["method"])])
        legend_outside(fig, axes[0, -1:])
    return fig


def _pair_heatmap(ax, kind: str, part: pd.DataFrame) -> None:
    """φ(A₁, A₂, i, j) of the first dataset, averaged over seeds: two ranks or two seeds."""
    dataset = datasets_of(part)[0]
    part = part[part["dataset"] == dataset]
    grid = part.groupby(["i", "j"])["phi"].mean().unstack()
    heatmap(ax, grid, fmt=lambda v: "", log=False, vmin=0, vmax=1, cbar_kws={"label": "φ"})
    ax.invert_yaxis()
    first = part.iloc[0]
    if kind == "rank":
        seeds = part["seed_a"].nunique()
        title = f"φ(A_r={first['rank_a']}, A_r={first['rank_b']}), mean of {seeds} seed(s)"
        ax.set_xlabel(f"j (top-j directions of A_r={first['rank_b']})")
        ax.set_ylabel(f"i (top-i directions of A_r={first['rank_a']})")
    else:
        title = f"φ across seeds {first['seed_a']} and {first['seed_b']}, r={first['rank_a']}"
        ax.set_xlabel(f"j (seed {first['seed_b']})")
        ax.set_ylabel(f"i (seed {first['seed_a']})")
    ax.set_title(f"{dataset} · {title}")
    step = max(1, grid.shape[1] // 8)
    ax.set_xticks(np.arange(0, grid.shape[1], step) + 0.5, [str(v) for v in grid.columns[::step]])


SUBSPACES = {"phi_true_right": "input (right) subspace", "phi_true_left": "output (left) subspace"}


def _similarity_to_truth(ax, lora: pd.DataFrame) -> None:
    """φ between the learned and the true update's top directions against rank: colour for the
    input or output side, line style for the dataset."""
    datasets = datasets_of(lora)
    dataset_styles = line_styles(datasets)
    colors = categorical_colors(SUBSPACES)
    for column, label in SUBSPACES.items():
        for dataset in datasets:
            errorbar_by(
                ax,
                lora[lora["dataset"] == dataset],
                "rank",
                column,
                colors[column],
                f"{label}, {dataset}",
                size=2.5,
                linestyle=dataset_styles[dataset],
            )
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel("φ(learned top-min(r,k), true ΔW*)")
    ax.set_title("similarity to the true subspace")


@figure(when=has_single_layer, tables=GEOMETRY_TABLES)
def amplification(t: Tables) -> plt.Figure:
    """Amplification factor ‖ΔW‖_F / ‖UᵀW₀V‖_F of the learned update against rank, per scaling
    rule (other settings fixed, mean ± sd over seeds), with full fine-tuning's at r = rank(ΔW*)."""
    if t.geometry is None or t.geometry.empty:
        return no_data("no adapters")
    data = single_layer_rows(t.geometry).merge(statistics.completed(t.runs), on="run_id")
    lora = statistics.reference_slice(
        data[registry.factor_rows(data["method"])], vary=["rank", "scaling"]
    )
    if lora.empty:
        return no_data("no completed LoRA runs")
    datasets, fig, axes = dataset_panels(lora)
    for ax, dataset in zip(axes, datasets, strict=True):
        panel = lora[lora["dataset"] == dataset]
        for scaling in ordered_scalings(panel["scaling"]):
            errorbar_by(
                ax,
                panel[panel["scaling"] == scaling],
                "rank",
                "amplification",
                SCALING_COLORS[scaling],
                scaling_label(scaling),
            )
        full = data[(registry.full_rows(data["method"])) & (data["dataset"] == dataset)][
            "amplification"
        ]
        if not full.empty:
            ax.axhline(
                full.mean(),
                color=FULL_COLOR,
                linestyle="--",
                linewidth=1,
                label="full FT (r = rank ΔW*)",
            )
        log_axes(ax, "LoRA rank r", "amplification ‖ΔW‖ / ‖UᵀW₀V‖", dataset)
    legend_outside(fig, axes)
    return fig
