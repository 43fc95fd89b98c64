"""The deep models' figures: which modules to adapt, a fixed parameter budget (LoRA Table 5),
learning curves per target set, and the geometry of each adapted layer."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

from lorasweep.analysis import statistics
from lorasweep.analysis.deep_findings import budget_comparisons, deep_lora
from lorasweep.figures.chosen import chosen_runs, chosen_settings, full_level
from lorasweep.figures.registry import GEOMETRY_TABLES, SELECTED_TABLES, Tables, figure
from lorasweep.figures.style import (
    FULL_COLOR,
    THEORY_COLOR,
    band,
    categorical_colors,
    dataset_panels,
    datasets_of,
    epoch_axis,
    errorbar,
    errorbar_by,
    legend_outside,
    line_styles,
    log_axes,
    mean_sd,
    method_parts,
    no_data,
    panel_grid,
    rank_colors,
    subplot_grid,
)
from lorasweep.figures.targets import target_colors, target_order
from lorasweep.models.names import matrix_type
from lorasweep.options import DEEP_KINDS


def has_deep(config: dict) -> bool:
    return any(d["kind"] in DEEP_KINDS for d in config["datasets"])


def has_budget(config: dict) -> bool:
    return any("rank_budget" in block for block in config.get("extra_grids", []))


def _reference_lines(ax, t: Tables, dataset: str) -> None:
    """σ² (dotted) and the best full fine-tuning, mean ± sd (dashed line and band)."""
    floor = statistics.noise_floor(t.runs, dataset)
    if floor:
        ax.axhline(floor, color=THEORY_COLOR, linestyle=":", linewidth=1, label="σ²")
    full = full_level(t, dataset)
    if full:
        mean, sd = full
        ax.axhline(mean, color=FULL_COLOR, linestyle="--", linewidth=1, label="full FT")
        ax.axhspan(mean - sd, mean + sd, color=FULL_COLOR, alpha=0.12, linewidth=0)


@figure(tables=SELECTED_TABLES, when=has_deep)
def deep_targets(t: Tables) -> plt.Figure:
    """Final validation loss against rank for each target set (best other settings; each
    adapter method in its own line style where several ran), one panel per deep dataset, with
    full fine-tuning of the whole network and σ²."""
    lora = deep_lora(t.runs)
    if lora.empty:
        return no_data("no completed LoRA runs of a deep model")
    best = chosen_settings(t, "targets_rank", lora)
    datasets, fig, axes = dataset_panels(best)
    colors = target_colors(best["targets"])
    for ax, dataset in zip(axes, datasets, strict=True):
        for prefix, style, panel in method_parts(best[best["dataset"] == dataset]):
            for targets in target_order(panel["targets"]):
                group = panel[panel["targets"] == targets]
                marker = style if len(group) > 1 else {"linestyle": "none"}
                errorbar(ax, group["rank"], group["mean"], group["std"], colors[targets],
                         f"{prefix}{targets}", **marker)  # fmt: skip
        _reference_lines(ax, t, dataset)
        shifted = lora.loc[lora["dataset"] == dataset, "shifted"].iloc[0]
        log_axes(ax, "LoRA rank r", "final validation MSE", f"{dataset} · shift in {shifted}")
    legend_outside(fig, axes)
    return fig


@figure(when=has_budget)
def deep_budget(t: Tables) -> plt.Figure:
    """Final validation loss of each target set at one parameter budget (rank × matrix types
    fixed), one panel per comparison, with σ²: LoRA paper Table 5 as a figure."""
    table = budget_comparisons(t.runs)
    if table.empty:
        return no_data("no fixed-budget comparison")
    comparisons = sorted(table["comparison"].unique())
    fig, axes = panel_grid(len(comparisons))
    colors = categorical_colors(sorted(table["types"].unique()))
    for ax, comparison in zip(axes, comparisons, strict=True):
        group = table[table["comparison"] == comparison]
        labels = [f"{r['adapted_types']}\nr={r['rank']}" for _, r in group.iterrows()]
        ax.bar(
            labels,
            group["mean"],
            yerr=group["std"],
            capsize=2,
            color=[colors[n] for n in group["types"]],
        )
        first = group.iloc[0]
        floor = statistics.noise_floor(t.runs, first["dataset"])
        if floor:
            ax.axhline(floor, color=THEORY_COLOR, linestyle=":", linewidth=1, label="σ²")
        ax.set_yscale("log")
        ax.set_ylabel("final validation MSE")
        ax.set_title(
            f"{first['dataset']} · rank × types = {first['budget']}, "
            f"{first['trainable_params']:,} params"
        )
    legend_outside(fig, axes)
    return fig


@figure(tables=SELECTED_TABLES, when=has_deep)
def deep_learning_curves(t: Tables) -> plt.Figure:
    """Validation loss per epoch at the best other settings: one panel per deep dataset and
    target set run at several ranks (a line per rank), one per dataset for the target sets run
    at one rank (a line per target set), with full fine-tuning of the whole network (dashed)
    and σ² (dotted)."""
    lora = deep_lora(t.runs)
    if lora.empty:
        return no_data("no completed LoRA runs of a deep model")
    best = chosen_settings(t, "targets_rank", lora)
    chosen = chosen_runs(t, "targets_rank", lora)
    curves = t.epochs.merge(chosen[["run_id", "dataset", "method", "targets", "rank"]], on="run_id")
    full_runs = chosen_runs(t, "full")
    full_curves = t.epochs.merge(full_runs[["run_id", "dataset"]], on="run_id")
    panels = _curve_panels(best)
    fig, axes = panel_grid(len(panels))
    ranks = rank_colors(best["rank"].unique())
    targets = target_colors(best["targets"])
    for ax, (dataset, sets) in zip(axes, panels, strict=True):
        selected = curves[(curves["dataset"] == dataset) & curves["targets"].isin(sets)]
        for prefix, style, panel in method_parts(selected):
            if len(sets) == 1:
                for rank, group in panel.groupby("rank", sort=True):
                    stats = mean_sd(group, "epoch", "val_loss")
                    band(ax, stats.index, stats["mean"], stats["std"], ranks[int(rank)],
                         f"{prefix}r={rank}", **style)  # fmt: skip
                continue
            for name in sets:
                group = panel[panel["targets"] == name]
                if group.empty:
                    continue
                stats = mean_sd(group, "epoch", "val_loss")
                label = f"{prefix}{name} (r={group['rank'].iloc[0]})"
                band(ax, stats.index, stats["mean"], stats["std"], targets[name], label, **style)
        if len(sets) == 1:
            ax.set_title(f"{dataset} · targets {sets[0]}")
        else:
            ax.set_title(f"{dataset} · target sets at one rank")
        full = full_curves[full_curves["dataset"] == dataset]
        if not full.empty:
            stats = mean_sd(full, "epoch", "val_loss")
            band(
                ax, stats.index, stats["mean"], stats["std"], FULL_COLOR, "full FT", linestyle="--"
            )
        floor = statistics.noise_floor(t.runs, dataset)
        if floor:
            ax.axhline(floor, color=THEORY_COLOR, linestyle=":", linewidth=1, label="σ²")
        ax.set_yscale("log")
        epoch_axis(ax)
        ax.set_ylabel("validation MSE")
    legend_outside(fig, axes)
    return fig


def _curve_panels(best) -> list[tuple[str, list[str]]]:
    """(dataset, target sets) per panel: each target set run at several ranks alone, then
    those run at one rank together."""
    panels = []
    for dataset in datasets_of(best):
        rows = best[best["dataset"] == dataset]
        ranks = rows.groupby("targets")["rank"].nunique()
        order = target_order(rows["targets"])
        panels += [(dataset, [name]) for name in order if ranks[name] > 1]
        single = [name for name in order if ranks[name] == 1]
        if single:
            panels.append((dataset, single))
    return panels


def _block(name: str) -> str:
    """The transformer block a module belongs to (``blocks.1``), or "" in the MLP."""
    return ".".join(name.split(".")[:2]) if name.startswith("blocks.") else ""


def geometry_target_set(lora) -> str:
    """The target set whose layers the geometry figure shows: ``all`` where it ran, else the
    one with the most runs."""
    counts = lora["targets"].value_counts()
    return "all" if "all" in counts else str(counts.sort_index().idxmax())


@figure(when=has_deep, tables=(*GEOMETRY_TABLES, "selections"))
def deep_layer_geometry(t: Tables) -> plt.Figure:
    """Per adapted layer of one target set: φ between the learned update's top directions and
    the layer's true shift ΔW* against rank (shifted layers only), and the amplification factor
    against rank; mean ± sd over seeds at the best other settings, one row per deep dataset (and
    adapter method, where several ran)."""
    lora = deep_lora(t.runs)
    if lora.empty or t.geometry is None or t.geometry["layer"].isna().all():
        return no_data("no adapted layers of a deep model")
    rows_of = [(dataset, prefix, part) for dataset in datasets_of(lora)
               for prefix, _, part in method_parts(lora[lora["dataset"] == dataset])]  # fmt: skip
    fig, axes = subplot_grid(len(rows_of), 2)
    names = list(dict.fromkeys(t.geometry["layer"].dropna()))
    colors = categorical_colors(dict.fromkeys(matrix_type(name) for name in names))
    styles = line_styles({_block(name) for name in names})
    for i, (dataset, prefix, runs) in enumerate(rows_of):
        targets = geometry_target_set(runs)
        chosen = chosen_runs(t, "targets_rank", runs[runs["targets"] == targets])
        layers = t.geometry.merge(chosen[["run_id", "rank"]], on="run_id")
        for name in dict.fromkeys(layers["layer"].dropna()):
            rows = layers[layers["layer"] == name]
            look = {"size": 2.5, "linestyle": styles[_block(name)]}
            color = colors[matrix_type(name)]
            if rows["phi_true_right"].notna().any():
                errorbar_by(axes[i, 0], rows, "rank", "phi_true_right", color, name, **look)
            errorbar_by(axes[i, 1], rows, "rank", "amplification", color, name, **look)
        axes[i, 0].set_xscale("log", base=2)
        axes[i, 0].set_ylim(-0.02, 1.05)
        axes[i, 0].set_xlabel("LoRA rank r")
        axes[i, 0].set_ylabel("φ to the true ΔW* (input side)")
        axes[i, 0].set_title(f"{dataset} · {prefix}targets {targets} · shifted layers")
        log_axes(
            axes[i, 1],
            "LoRA rank r",
            "amplification ‖ΔW‖ / ‖UᵀW₀V‖",
            f"{dataset} · {prefix}targets {targets} · every adapted layer",
        )
    handles = [Line2D([], [], color=c, marker="o", markersize=2.5, label=kind)
               for kind, c in colors.items()]  # fmt: skip
    if len(styles) > 1:
        handles += [Line2D([], [], color="0.3", linestyle=style, label=block or "other layers")
                    for block, style in styles.items()]  # fmt: skip
    legend_outside(fig, handles=handles)
    return fig
