"""Every run at once: hyperparameters against final loss (parallel coordinates), and final loss
against trainable parameters with the Pareto front of LoRA and full fine-tuning."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from lorasweep.analysis import statistics
from lorasweep.figures.registry import Tables, figure
from lorasweep.figures.style import (
    COLUMN_WIDTH,
    FULL_COLOR,
    PANEL_HEIGHT,
    SCALING_COLORS,
    THEORY_COLOR,
    no_data,
    ordered_scalings,
    scaling_label,
    subplot_grid,
)

HYPERPARAMETERS = ["rank", "alpha", "scaling", "init", "lr", "lr_ratio", "bias"]
AXIS_NAMES = {"rank": "rank r", "alpha": "α", "lr_ratio": "λ"}
LABEL_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}
LOSS_CMAP = "viridis_r"


def _value_text(axis: str, value) -> str:
    if axis == "scaling":
        return scaling_label(value)
    return f"{value:g}" if isinstance(value, int | float | np.number) else str(value)


def _ordinal(values: pd.Series) -> dict:
    """Evenly spaced positions in [0, 1] for the sorted distinct values (0.5 for one value)."""
    distinct = sorted(values.unique())
    if len(distinct) == 1:
        return {distinct[0]: 0.5}
    return {v: k / (len(distinct) - 1) for k, v in enumerate(distinct)}


@figure()
def parallel_coordinates(t: Tables) -> plt.Figure:
    """Each LoRA setting (mean over seeds) as a line through its hyperparameters to its final
    validation loss, coloured by that loss; axes with a single value are left out, and full
    fine-tuning's best loss is marked on the loss axis."""
    lora = statistics.completed(t.runs[t.runs["method"] == "lora"])
    if lora.empty:
        return no_data("no completed LoRA runs")
    datasets = sorted(lora["dataset"].unique())
    fig, axes = plt.subplots(
        len(datasets),
        1,
        figsize=(2 * COLUMN_WIDTH, 1.2 * PANEL_HEIGHT * len(datasets)),
        squeeze=False,
    )
    full = statistics.best_full(t.runs).set_index("dataset")
    for ax, dataset in zip(axes[:, 0], datasets, strict=True):
        stats = statistics.seed_stats(lora[lora["dataset"] == dataset], HYPERPARAMETERS)
        full_mean = full.loc[dataset, "mean"] if dataset in full.index else None
        _parallel_panel(fig, ax, stats, full_mean)
        ax.set_title(f"{dataset} · {len(stats)} LoRA settings")
    handles = [Line2D([], [], marker="*", color=FULL_COLOR, linestyle="none", markersize=8,
                      label="best full fine-tuning")]  # fmt: skip
    fig.tight_layout()
    if not full.empty:
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False)
    return fig


def _parallel_panel(fig, ax, stats: pd.DataFrame, full_mean: float | None) -> None:
    """One dataset's parallel coordinates: a line per setting, the hyperparameter axes that
    vary, and the loss axis on a log scale with full fine-tuning's best loss as a star."""
    shown = ["rank"] + [a for a in HYPERPARAMETERS[1:] if stats[a].nunique() > 1]
    positions = {axis: _ordinal(stats[axis]) for axis in shown}
    losses = stats["mean"].to_numpy()
    low, high = float(losses.min()), float(losses.max())
    if full_mean is not None:
        low, high = min(low, full_mean), max(high, full_mean)
    high = high if high > low else low * 1.01
    norm = LogNorm(vmin=low, vmax=high)

    def loss_position(value):
        return float(norm(value))

    order = np.argsort(-losses)  # the best settings are drawn last, on top
    for index in order:
        row = stats.iloc[index]
        ys = [positions[axis][row[axis]] for axis in shown] + [loss_position(row["mean"])]
        ax.plot(
            range(len(shown) + 1),
            ys,
            color=plt.get_cmap(LOSS_CMAP)(norm(row["mean"])),
            linewidth=0.8,
            alpha=0.7,
        )
    for k, axis in enumerate(shown):
        ax.axvline(k, color="0.3", linewidth=0.8, zorder=0)
        for value, y in positions[axis].items():
            ax.text(k - 0.04, y, _value_text(axis, value), ha="right", va="center",
                    fontsize=5.5, bbox=LABEL_BOX, zorder=4)  # fmt: skip
    last = len(shown)
    ax.axvline(last, color="0.3", linewidth=0.8, zorder=0)
    for value in np.geomspace(low, high, 4):
        ax.text(last + 0.1, loss_position(value), f"{value:.3g}", ha="left", va="center",
                fontsize=5.5)  # fmt: skip
    if full_mean is not None:
        ax.plot([last], [loss_position(full_mean)], marker="*",
                markersize=11, color=FULL_COLOR, markeredgecolor="white", markeredgewidth=0.5,
                linestyle="none", clip_on=False, zorder=5)  # fmt: skip
    ax.set_xticks(range(last + 1))
    ax.set_xticklabels([AXIS_NAMES.get(a, a) for a in shown] + ["final val MSE"], fontsize=7)
    ax.set_xlim(-0.5, last + 0.5)
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([])
    ax.grid(False)
    fig.colorbar(ScalarMappable(norm, LOSS_CMAP), ax=ax, label="final validation MSE", pad=0.06)


def pareto_points(runs: pd.DataFrame) -> pd.DataFrame:
    """One point per dataset and setting (mean over seeds): trainable parameters, final
    validation loss, method, rank and scaling; ``front`` marks the Pareto-optimal ones (no other
    point has at most as many parameters and a lower loss)."""
    done = statistics.completed(runs)
    lora = statistics.seed_stats(
        done[done["method"] == "lora"], ["dataset", "trainable_params", *HYPERPARAMETERS]
    ).assign(method="lora")
    full = statistics.seed_stats(
        done[done["method"] == "full"], ["dataset", "trainable_params", "lr"]
    ).assign(method="full")
    points = pd.concat([lora, full], ignore_index=True)
    points["front"] = False
    for _, group in points.groupby("dataset"):
        best = np.inf
        for index, row in group.sort_values(["trainable_params", "mean"]).iterrows():
            if row["mean"] < best:
                best = row["mean"]
                points.loc[index, "front"] = True
    return points


def _whole_decades(ax, values: pd.Series) -> None:
    """Label only powers of ten on a log x axis, and span at least one of them, so that a
    narrow range does not crowd the axis with minor-tick labels."""
    low, high = np.log10(values.min()), np.log10(values.max())
    if np.floor(low) == np.floor(high):
        ax.set_xlim(10 ** np.floor(low), 10 ** (np.floor(low) + 1))
    ax.xaxis.set_minor_formatter(NullFormatter())


@figure()
def pareto_front(t: Tables) -> plt.Figure:
    """Final validation loss against trainable parameters (log-log) for every LoRA setting
    (colour: scaling rule) and full fine-tuning learning rate (star), mean over seeds, with the
    Pareto front: the settings no cheaper one beats."""
    points = pareto_points(t.runs)
    if points.empty:
        return no_data("no completed runs")
    datasets = sorted(points["dataset"].unique())
    fig, axes = subplot_grid(1, len(datasets))
    for ax, dataset in zip(axes[0], datasets, strict=True):
        panel = points[points["dataset"] == dataset]
        lora = panel[panel["method"] == "lora"]
        for scaling in ordered_scalings(lora["scaling"]):
            group = lora[lora["scaling"] == scaling]
            ax.scatter(group["trainable_params"], group["mean"], s=9, alpha=0.6,
                       color=SCALING_COLORS[scaling], linewidths=0)  # fmt: skip
        full = panel[panel["method"] == "full"]
        ax.scatter(full["trainable_params"], full["mean"], marker="*", s=60, color=FULL_COLOR)
        front = panel[panel["front"]].sort_values("trainable_params")
        ax.plot(front["trainable_params"], front["mean"], drawstyle="steps-post",
                color=THEORY_COLOR, linewidth=1, zorder=0)  # fmt: skip
        for _, row in front.iterrows():
            text = f"r={row['rank']:g}" if row["method"] == "lora" else "full"
            ax.annotate(text, (row["trainable_params"], row["mean"]), fontsize=5.5,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.set_xscale("log")
        _whole_decades(ax, panel["trainable_params"])
        ax.set_yscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("final validation MSE")
        ax.set_title(dataset)
    scalings = ordered_scalings(points.loc[points["method"] == "lora", "scaling"])
    handles = [
        Line2D([], [], marker="o", linestyle="none", color=SCALING_COLORS[s], markersize=4,
               label=f"LoRA, s = {scaling_label(s)}")
        for s in scalings
    ]  # fmt: skip
    if (points["method"] == "full").any():
        handles.append(Line2D([], [], marker="*", linestyle="none", color=FULL_COLOR,
                              markersize=8, label="full fine-tuning"))  # fmt: skip
    handles.append(Line2D([], [], color=THEORY_COLOR, label="Pareto front"))
    fig.tight_layout()
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(len(handles), 4), frameon=False)  # fmt: skip
    return fig
