"""The seed tutorial's training beside the corrected method's, on the tutorial's data and on a
task that can be learned (configs with a ``compat: tutorial`` dataset, such as the seed demo)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from lorasweep.analysis import statistics
from lorasweep.figures.registry import Tables, figure
from lorasweep.figures.style import (
    THEORY_COLOR,
    epoch_axis,
    legend_outside,
    mean_sd,
    natural_key,
    no_data,
    panel_grid,
    scaling_label,
)
from lorasweep.models import registry
from lorasweep.models.scaling import scaling_factor

TUTORIAL_COLOR = sns.color_palette("colorblind")[3]
OTHER_COLORS = [c for i, c in enumerate(sns.color_palette("colorblind")) if i != 3]


def has_tutorial_dataset(config: dict) -> bool:
    """A dataset drawn as the seed tutorial draws its data (``compat: tutorial``)."""
    return any(d.get("compat", "none") == "tutorial" for d in config["datasets"])


def setting_label(row: pd.Series) -> str:
    """``randn`` runs are the tutorial's method; the others are named by what they change."""
    who = "tutorial" if registry.init(row["init"]).tutorial_draws else "corrected"
    bias = "bias trains" if row["bias"] == "lora_only" else "bias frozen"
    return (
        f"{who}: {registry.init(row['init']).start}, "
        f"s = {scaling_label(row['scaling'])} = "
        f"{scaling_factor(row['scaling'], float(row['alpha']), int(row['rank'])):g}, {bias}"
    )


def _dataset_title(runs: pd.DataFrame, dataset: str) -> str:
    first = runs[runs["dataset"] == dataset].iloc[0]
    if first["dataset_kind"] == "noise":
        return f"{dataset}: noise targets (nothing to learn)"
    return f"{dataset}: rank-{int(first['task_rank'])} task"


@figure(when=has_tutorial_dataset)
def tutorial_vs_corrected(t: Tables) -> plt.Figure:
    """Training (solid) and validation (dashed) loss per epoch of the tutorial's method and of
    the corrected one, one panel per dataset (noise targets first), log y, with σ²."""
    lora = statistics.completed(t.runs[registry.factor_rows(t.runs["method"])])
    if lora.empty:
        return no_data("no completed LoRA runs")
    kinds = lora.groupby("dataset")["dataset_kind"].first()
    datasets = sorted(kinds.index, key=lambda d: (kinds[d] != "noise", natural_key(d)))
    lora = lora.assign(label=[setting_label(row) for _, row in lora.iterrows()])
    labels = sorted(
        lora["label"].unique(), key=lambda label: (label.startswith("corrected"), label)
    )
    others = iter(OTHER_COLORS)
    colors = {
        label: TUTORIAL_COLOR if label.startswith("tutorial") else next(others, "0.4")
        for label in labels
    }
    curves = t.epochs.merge(lora[["run_id", "dataset", "label"]], on="run_id")
    fig, axes = panel_grid(len(datasets))
    for ax, dataset in zip(axes, datasets, strict=True):
        panel = curves[curves["dataset"] == dataset]
        for label in labels:
            group = panel[panel["label"] == label]
            for column, style in (("train_loss", "-"), ("val_loss", "--")):
                stats = mean_sd(group, "epoch", column)
                ax.plot(stats.index, stats["mean"], color=colors[label], linestyle=style)
        floor = statistics.noise_floor(t.runs, dataset)
        if floor:
            ax.axhline(floor, color=THEORY_COLOR, linestyle=":", linewidth=1)
        ax.set_yscale("log")
        epoch_axis(ax, "epoch (0 = before training)")
        ax.set_ylabel("MSE")
        ax.set_title(_dataset_title(lora, dataset))
    handles = [Line2D([], [], color=c, label=label) for label, c in colors.items()]
    handles += [
        Line2D([], [], color="0.3", linestyle="-", label="training loss (the tutorial's print)"),
        Line2D([], [], color="0.3", linestyle="--", label="validation loss"),
        Line2D([], [], color=THEORY_COLOR, linestyle=":", label="noise floor σ²"),
    ]
    legend_outside(fig, handles=handles, columns=2)
    return fig
