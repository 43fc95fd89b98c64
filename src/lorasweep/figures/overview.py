"""Every run at once: hyperparameters against final loss (parallel coordinates), and final loss
against trainable parameters with the Pareto front of LoRA and full fine-tuning."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D

from lorasweep.analysis import statistics
from lorasweep.figures.chosen import chosen_settings
from lorasweep.figures.registry import SELECTED_TABLES, Tables, figure
from lorasweep.figures.style import (
    DOUBLE_WIDTH,
    FULL_COLOR,
    NORMAL,
    SCALING_COLORS,
    SMALL,
    THEORY_COLOR,
    datasets_of,
    legend_outside,
    method_parts,
    natural_key,
    no_data,
    ordered_scalings,
    panel_grid,
    pareto_mask,
    scaling_label,
)
from lorasweep.figures.targets import target_colors, target_order
from lorasweep.models import registry

AXIS_NAMES = {"rank": "rank r", "alpha": "α", "lr_ratio": "λ"}
NONE_TEXT = "—"
"""How an empty setting is shown (for example a single-layer run's target set)."""
LABEL_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}
LOSS_CMAP = "viridis_r"
PARALLEL_HEIGHT = 2.4
"""Height in inches of one dataset's parallel-coordinates panel."""


def hyperparameters(lora: pd.DataFrame) -> list[str]:
    """What tells one LoRA setting from another: rank and every LoRA setting in the table
    (the target set of a deep model included)."""
    return ["rank", *statistics.settings_in(lora)]


def _value_text(axis: str, value) -> str:
    if pd.isna(value):
        return NONE_TEXT
    if axis == "scaling":
        return scaling_label(value)
    return f"{value:g}" if isinstance(value, int | float | np.number) else str(value)


def _order_key(value) -> tuple:
    """Numbers by value, names in natural order, an empty setting last."""
    if pd.isna(value):
        return (2, 0.0, ())
    if isinstance(value, int | float | np.number):
        return (0, float(value), ())
    return (1, 0.0, natural_key(value))


def _ordinal(values: pd.Series) -> dict:
    """Evenly spaced positions in [0, 1] for the ordered distinct values' texts (0.5 for one
    value), keyed by :func:`_value_text` so that an empty setting has a position too."""
    if values.name == "targets":
        distinct = target_order(values) + ([np.nan] if values.isna().any() else [])
    else:
        distinct = sorted(values.unique(), key=_order_key)
    texts = list(dict.fromkeys(_value_text(values.name, v) for v in distinct))
    if len(texts) == 1:
        return {texts[0]: 0.5}
    return {v: k / (len(texts) - 1) for k, v in enumerate(texts)}


@figure(tables=SELECTED_TABLES)
def parallel_coordinates(t: Tables) -> plt.Figure:
    """Each LoRA setting (mean over seeds) as a line through its hyperparameters to its final
    validation loss, coloured by that loss; axes with a single value are left out, and full
    fine-tuning's best loss is marked on the loss axis."""
    lora = statistics.completed(t.runs[registry.factor_rows(t.runs["method"])])
    if lora.empty:
        return no_data("no completed LoRA runs")
    datasets = datasets_of(lora)
    size = (DOUBLE_WIDTH, PARALLEL_HEIGHT * len(datasets) + 0.4)
    fig, axes = plt.subplots(len(datasets), 1, squeeze=False, figsize=size)
    full = chosen_settings(t, "full").set_index("dataset")
    for ax, dataset in zip(axes[:, 0], datasets, strict=True):
        stats = statistics.seed_stats(lora[lora["dataset"] == dataset], hyperparameters(lora))
        full_mean = full.loc[dataset, "mean"] if dataset in full.index else None
        _parallel_panel(fig, ax, stats, full_mean)
        ax.set_title(f"{dataset} · {len(stats)} LoRA settings")
    if not full.empty:
        handles = [Line2D([], [], marker="*", color=FULL_COLOR, linestyle="none", markersize=8,
                          label="best full fine-tuning")]  # fmt: skip
        legend_outside(fig, handles=handles)
    return fig


def _parallel_panel(fig, ax, stats: pd.DataFrame, full_mean: float | None) -> None:
    """One dataset's parallel coordinates: a line per setting, the hyperparameter axes that
    vary, and the loss axis on a log scale with full fine-tuning's best loss as a star."""
    settings = [c for c in stats.columns if c not in ("mean", "std", "count", "dataset")]
    shown = ["rank"] + [a for a in settings[1:] if stats[a].nunique(dropna=False) > 1]
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
        ys = [positions[axis][_value_text(axis, row[axis])] for axis in shown]
        ys.append(loss_position(row["mean"]))
        ax.plot(
            range(len(shown) + 1),
            ys,
            color=plt.get_cmap(LOSS_CMAP)(norm(row["mean"])),
            linewidth=0.8,
            alpha=0.7,
        )
    for k, axis in enumerate(shown):
        ax.axvline(k, color="0.3", linewidth=0.8, zorder=0)
        for text, y in positions[axis].items():
            ax.text(k - 0.04, y, text, ha="right", va="center", fontsize=SMALL, bbox=LABEL_BOX,
                    zorder=4)  # fmt: skip
    last = len(shown)
    ax.axvline(last, color="0.3", linewidth=0.8, zorder=0)
    for value in np.geomspace(low, high, 4):
        ax.text(last + 0.1, loss_position(value), f"{value:.3g}", ha="left", va="center",
                fontsize=SMALL)  # fmt: skip
    if full_mean is not None:
        ax.plot([last], [loss_position(full_mean)], marker="*",
                markersize=11, color=FULL_COLOR, markeredgecolor="white", markeredgewidth=0.5,
                linestyle="none", clip_on=False, zorder=5)  # fmt: skip
    ax.set_xticks(range(last + 1))
    ax.set_xticklabels([AXIS_NAMES.get(a, a) for a in shown] + ["final val MSE"], fontsize=NORMAL)
    ax.set_xlim(-0.5, last + 0.5)
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([])
    ax.grid(False)
    fig.colorbar(ScalarMappable(norm, LOSS_CMAP), ax=ax, label="final validation MSE", pad=0.06)


def pareto_points(runs: pd.DataFrame) -> pd.DataFrame:
    """One point per dataset and setting (mean over seeds): trainable parameters, final
    validation loss, method (each adapter method's own), rank and scaling; ``front`` marks the
    Pareto-optimal ones (no other point has at most as many parameters and a lower loss). A
    deep model's target sets are settings of their own, never averaged together."""
    done = statistics.completed(runs)
    lora_runs = done[registry.factor_rows(done["method"])]
    lora = statistics.seed_stats(
        lora_runs, ["dataset", "trainable_params", *hyperparameters(lora_runs)]
    )
    full = statistics.seed_stats(
        done[registry.full_rows(done["method"])], ["dataset", "trainable_params", "lr"]
    ).assign(method="full")
    points = pd.concat([lora, full], ignore_index=True)
    points["front"] = pareto_mask(points, "trainable_params", "mean")
    return points


@figure()
def pareto_front(t: Tables) -> plt.Figure:
    """Final validation loss against trainable parameters (log-log) for every LoRA setting
    (colour: scaling rule) and full fine-tuning learning rate (star), mean over seeds, with the
    Pareto front: the settings no cheaper one beats."""
    points = pareto_points(t.runs)
    if points.empty:
        return no_data("no completed runs")
    if "targets" not in points:
        points = points.assign(targets=np.nan)
    fig, axes = panel_grid(len(datasets_of(points)))
    colors = target_colors(points["targets"])
    for ax, dataset in zip(axes, datasets_of(points), strict=True):
        panel = points[points["dataset"] == dataset]
        lora = panel[registry.factor_rows(panel["method"])]
        for _, look, part in _method_markers(lora):
            for color, group in _point_groups(part, colors):
                ax.scatter(group["trainable_params"], group["mean"], s=9, alpha=0.6, color=color,
                           linewidths=0, **look)  # fmt: skip
        full = panel[registry.full_rows(panel["method"])]
        ax.scatter(full["trainable_params"], full["mean"], marker="*", s=60, color=FULL_COLOR)
        front = panel[panel["front"]].sort_values("trainable_params")
        ax.plot(front["trainable_params"], front["mean"], drawstyle="steps-post",
                color=THEORY_COLOR, linewidth=1, zorder=0)  # fmt: skip
        for _, row in front.iterrows():
            ax.annotate(_front_label(row), (row["trainable_params"], row["mean"]),
                        fontsize=SMALL, xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("final validation MSE")
        ax.set_title(dataset)
    handles = []
    for name, look, part in _method_markers(points[registry.factor_rows(points["method"])]):
        marker = look.get("marker", "o")
        single = part[part["targets"].isna()]
        handles += [Line2D([], [], marker=marker, linestyle="none", color=SCALING_COLORS[s],
                           markersize=4, label=f"{name}, s = {scaling_label(s)}")
                    for s in ordered_scalings(single["scaling"])]  # fmt: skip
        sets = set(part["targets"].dropna())
        handles += [Line2D([], [], marker=marker, linestyle="none", color=c, markersize=4,
                           label=f"{name}, targets {target}")
                    for target, c in colors.items() if target in sets]  # fmt: skip
    if (registry.full_rows(points["method"])).any():
        handles.append(Line2D([], [], marker="*", linestyle="none", color=FULL_COLOR,
                              markersize=8, label="full fine-tuning"))  # fmt: skip
    handles.append(Line2D([], [], color=THEORY_COLOR, label="Pareto front"))
    legend_outside(fig, handles=handles)
    return fig


POINT_MARKERS = ("o", "s", "^")
"""The adapter methods' markers, in the registry's order, where several ran."""


def _method_markers(points: pd.DataFrame) -> list[tuple[str, dict, pd.DataFrame]]:
    """(label, scatter keywords, points) per adapter method: the method's label, and its own
    marker where several methods ran (none otherwise, so the figure is as it was)."""
    parts = method_parts(points)
    if len(parts) == 1:
        methods = points["method"].dropna().unique() if "method" in points else []
        name = registry.method(methods[0]).label if len(methods) == 1 else registry.LORA.label
        return [(name, {}, points)]
    return [(prefix.strip(), {"marker": POINT_MARKERS[k % len(POINT_MARKERS)]}, part)
            for k, (prefix, _, part) in enumerate(parts)]  # fmt: skip


def _point_groups(lora: pd.DataFrame, target_colors_: dict):
    """(colour, points): a deep model's settings by target set, the others by scaling rule."""
    deep, single = lora[lora["targets"].notna()], lora[lora["targets"].isna()]
    for scaling in ordered_scalings(single["scaling"]):
        yield SCALING_COLORS[scaling], single[single["scaling"] == scaling]
    for name in target_order(deep["targets"]):
        yield target_colors_[name], deep[deep["targets"] == name]


def _front_label(row: pd.Series) -> str:
    if registry.is_full(row["method"]):
        return "full"
    targets = row.get("targets")
    return f"r={row['rank']:g}" if pd.isna(targets) else f"{targets} r={row['rank']:g}"
