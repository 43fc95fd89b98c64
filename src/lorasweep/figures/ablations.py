"""Ablations: initialisation, LoRA+'s learning-rate ratio, and the task-rank knee."""

from __future__ import annotations

import matplotlib.pyplot as plt

from lorasweep.analysis import statistics
from lorasweep.figures.chosen import chosen_settings
from lorasweep.figures.registry import SELECTED_TABLES, Tables, figure, task_ranks_vary, varies
from lorasweep.figures.style import (
    INIT_COLORS,
    THEORY_COLOR,
    band_by,
    categorical_colors,
    dataset_panels,
    datasets_of,
    epoch_axis,
    errorbar,
    legend_outside,
    log_axes,
    method_parts,
    natural_key,
    no_data,
    rank_colors,
    subplot_grid,
)


@figure(when=varies("init"))
def init_comparison(t: Tables) -> plt.Figure:
    """Validation loss per epoch for each initialisation (best other settings, at the rank
    where most inits were run), and the loss at epoch 0, before any step."""
    lora = statistics.completed_lora(t.runs)
    lora = statistics.where_varies(
        statistics.reference_slice(lora, vary=["init"]), ["dataset"], "init"
    )
    if lora.empty:
        return no_data("fewer than two inits")
    chosen = lora
    curves = t.epochs.merge(chosen[["run_id", "dataset", "init"]], on="run_id")
    datasets = datasets_of(chosen)
    fig, axes = subplot_grid(len(datasets), 2)
    for i, dataset in enumerate(datasets):
        ax, bar_ax = axes[i, 0], axes[i, 1]
        panel = curves[curves["dataset"] == dataset]
        starts = []
        for init in [x for x in INIT_COLORS if x in set(panel["init"])]:
            group = panel[panel["init"] == init]
            band_by(ax, group, "epoch", "val_loss", INIT_COLORS[init], init)
            start = group[group["epoch"] == 0]["val_loss"]
            starts.append((init, start.mean(), start.std(ddof=1) if len(start) > 1 else 0.0))
        floor = statistics.noise_floor(t.runs, dataset)
        for axis in (ax, bar_ax):
            if floor:
                axis.axhline(floor, color=THEORY_COLOR, linestyle=":", linewidth=1, label="σ²")
            axis.set_yscale("log")
        rank = int(chosen.loc[chosen["dataset"] == dataset, "rank"].iloc[0])
        ax.set_title(f"{dataset} · r={rank}")
        epoch_axis(ax)
        ax.set_ylabel("validation MSE")
        _starting_losses(bar_ax, dataset, starts)
    legend_outside(fig, axes)
    return fig


def _starting_losses(ax, dataset: str, starts: list[tuple[str, float, float]]) -> None:
    """Bars of the mean ± sd loss at epoch 0, one per init."""
    names = [s[0] for s in starts]
    ax.bar(
        names,
        [s[1] for s in starts],
        yerr=[s[2] for s in starts],
        color=[INIT_COLORS[n] for n in names],
        capsize=2,
    )
    ax.set_title(f"{dataset} · loss before training (epoch 0)")
    ax.set_ylabel("validation MSE at epoch 0")


@figure(when=varies("lr_ratio"))
def lora_plus(t: Tables) -> plt.Figure:
    """Final validation loss against LoRA+'s ratio λ = lr_B / lr_A (log x), one line per rank."""
    lora = statistics.completed_lora(t.runs)
    lora = statistics.reference_slice(lora, vary=["lr_ratio", "rank"])
    lora = statistics.where_varies(lora, ["dataset", "rank"], "lr_ratio")
    if lora.empty:
        return no_data("fewer than two λ")
    stats = statistics.seed_stats(lora, ["dataset", "rank", "lr_ratio"])
    datasets, fig, axes = dataset_panels(stats)
    colors = rank_colors(stats["rank"].unique())
    for ax, dataset in zip(axes, datasets, strict=True):
        for rank, group in stats[stats["dataset"] == dataset].groupby("rank"):
            errorbar(
                ax, group["lr_ratio"], group["mean"], group["std"], colors[int(rank)], f"r={rank}"
            )
        log_axes(ax, "λ = lr(B) / lr(A)", "final validation MSE", dataset)
    legend_outside(fig, axes)
    return fig


@figure(tables=SELECTED_TABLES, when=task_ranks_vary)
def task_rank_knee(t: Tables) -> plt.Figure:
    """Final validation loss over the noise floor against rank, one colour per dataset's task
    rank k, with the rank-r optimum (dashed) and the expected knee at r = k (dotted)."""
    lora = statistics.completed_lora(t.runs)
    lora = lora[(lora["dataset_kind"] == "lowrank") & (lora["noise_floor"] > 0)]
    if lora.empty:
        return no_data("no lowrank dataset with noise σ > 0 (the loss is shown relative to σ²)")
    meta = lora.groupby("dataset")[["task_rank", "noise_floor"]].first()
    best = chosen_settings(t, "rank", lora).join(meta, on="dataset")
    fig, axes = subplot_grid(1, 1)
    ax = axes[0, 0]
    datasets = sorted(meta.index, key=lambda d: (meta.loc[d, "task_rank"], natural_key(d)))
    for dataset, color in categorical_colors(datasets).items():
        k, floor = int(meta.loc[dataset, "task_rank"]), float(meta.loc[dataset, "noise_floor"])
        for prefix, style, group in method_parts(best[best["dataset"] == dataset]):
            errorbar(
                ax,
                group["rank"],
                group["mean"] / floor,
                group["std"] / floor,
                color,
                f"{prefix}k={k} ({dataset})",
                **style,
            )
        optimum = lora[lora["dataset"] == dataset].groupby("rank")["optimal_val_loss"].first()
        ax.plot(optimum.index, optimum.values / floor, color=color, linestyle="--", linewidth=0.8)
        ax.axvline(k, color=color, linestyle=":", linewidth=1)
    log_axes(ax, "LoRA rank r", "final validation MSE / σ²", "knee at r = task rank k")
    legend_outside(fig, axes)
    return fig
